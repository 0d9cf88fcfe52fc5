"""``segssl demo``: everything SegSSL does, on generated phantoms, with a report."""

from __future__ import annotations

from pathlib import Path

from SegSSLLib.cli.common import add_device_option
from SegSSLLib.errors import SegSSLError

HELP = "run every capability on generated phantom data and write a report with pictures"


def configure(parser) -> None:
    parser.add_argument("--out", default="segssl-demo", help="output folder (default: ./segssl-demo)")
    parser.add_argument("--quick", action="store_true", help="smaller data and shorter training (for tests)")
    add_device_option(parser)


def run(args, progress) -> int:
    from SegSSLLib.cli.common import setup_torch
    from SegSSLLib.demo import run_demo

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SegSSLError(f"--out {out} is a file; give a folder for the demo outputs")
    if not out.parent.exists():
        raise SegSSLError(f"cannot create {out}: folder {out.parent} does not exist — create it first")
    device = setup_torch(args)
    report = run_demo(out, progress, device=str(device), quick=args.quick)
    progress.output(report)
    print(f"demo report: {report}")
    return 0
