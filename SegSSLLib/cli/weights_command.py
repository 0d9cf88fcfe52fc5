"""``segssl weights list|download|path``: the SAM and SAM 2 checkpoints SegSSL knows, and its cache."""

from __future__ import annotations

from SegSSLLib.errors import SegSSLError

HELP = "list, download (resumable, checksum-checked) or locate SAM / SAM 2 checkpoints"


def configure(parser) -> None:
    parser.add_argument("action", choices=("list", "download", "path"), help="what to do")
    parser.add_argument("name", nargs="?", help="weights name (see `segssl weights list`) for download and path")
    parser.add_argument("--url", help="download from this address instead (a mirror, or file:///path/to/file)")
    parser.add_argument("--verify", action="store_true", help="list: also check the checksums of cached files")


def run(args, progress) -> int:
    from SegSSLLib.weights.registry import REGISTRY, cached_path, known_weights, weights_folder

    if args.action == "list":
        _list(REGISTRY.values(), args.verify, weights_folder())
        return 0
    if not args.name:
        raise SegSSLError(f"segssl weights {args.action} needs a name, e.g. sam_vit_b (segssl weights list)")
    weights = known_weights(args.name)
    if args.action == "path":
        _report_path(cached_path(weights), progress)
        return 0
    from SegSSLLib.weights.download import download_weights

    _report_path(download_weights(weights, url=args.url, progress=progress), progress)
    return 0


def _report_path(path, progress) -> None:
    """An ``output`` event for programs (stdout stays pure JSON), the bare path for people and scripts."""
    progress.output(path)
    if progress.mode != "json":
        print(path)


def _list(entries, verify: bool, folder) -> None:
    from SegSSLLib.weights.download import verify_file
    from SegSSLLib.weights.registry import cached_path

    print(f"weights cache: {folder} (set SEGSSL_HOME to move it)")
    print(f"{'name':<16} {'family':<6} {'size':>9} {'check':<10} {'cached':<10} description")
    for weights in entries:
        size = f"{weights.size / 2**20:.0f} MiB" if weights.size else "?"
        path = cached_path(weights)
        cached = "yes" if path.is_file() else "no"
        if verify and path.is_file():
            cached = verify_file(path, weights)
        print(f"{weights.name:<16} {weights.family:<6} {size:>9} {weights.verification:<10} {cached:<10} {weights.description}")
