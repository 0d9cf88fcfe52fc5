"""Known SAM / SAM 2 checkpoints, where they are cached, and how a checkpoint option is resolved.

Sizes and SHA-256 digests were taken from public download manifests that list the same official
file (several independent ones agree for each SAM and SAM 2.1 file). For MedSAM the official
record publishes no SHA-256: we check the MD5 that two independent public scripts agree on. For
MedSAM2 we found neither size nor digest nor a pinned revision (its address follows the moving
``main`` branch of the Hugging Face repository): a download is kept but reported as unverified. Never
fill these in from a file you downloaded yourself; take them from the publisher.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from SegSSLLib.errors import SegSSLError

log = logging.getLogger(__name__)

HOME_VARIABLE = "SEGSSL_HOME"
# A checkpoint file (or a registry name) to use when no --sam-checkpoint / --sam2-checkpoint is given.
CHECKPOINT_VARIABLES = {"sam": "SEGSSL_SAM_CHECKPOINT", "sam2": "SEGSSL_SAM2_CHECKPOINT"}


@dataclass(frozen=True)
class KnownWeights:
    name: str
    family: str  # "sam" (segment-anything predictor) or "sam2" (video predictor)
    description: str
    url: str
    file_name: str
    size: int | None  # bytes; None: not published where we could check
    sha256: str | None
    md5: str | None = None  # only where no SHA-256 is published
    sam2_config: str | None = None  # the config that builds this checkpoint
    image_size: int | None = None  # input size the model was trained at, if not the config's 1024
    sam_preprocess: str | None = None  # "medsam": MedSAM's own input preparation (refinement/medsam.py)

    @property
    def verification(self) -> str:
        if self.sha256:
            return "sha256"
        return "md5" if self.md5 else "unverified"


_SAM_BASE = "https://dl.fbaipublicfiles.com/segment_anything/"
_SAM21_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"

REGISTRY: dict[str, KnownWeights] = {
    w.name: w
    for w in (
        KnownWeights("sam_vit_b", "sam", "SAM ViT-B (Meta)", _SAM_BASE + "sam_vit_b_01ec64.pth",
                     "sam_vit_b_01ec64.pth", 375042383,
                     "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
        KnownWeights("sam_vit_l", "sam", "SAM ViT-L (Meta)", _SAM_BASE + "sam_vit_l_0b3195.pth",
                     "sam_vit_l_0b3195.pth", 1249524607,
                     "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
        KnownWeights("sam_vit_h", "sam", "SAM ViT-H (Meta)", _SAM_BASE + "sam_vit_h_4b8939.pth",
                     "sam_vit_h_4b8939.pth", 2564550879,
                     "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
        KnownWeights("medsam_vit_b", "sam", "MedSAM, ViT-B architecture (Ma et al. 2024, Zenodo record 10689643)",
                     "https://zenodo.org/records/10689643/files/medsam_vit_b.pth?download=1",
                     "medsam_vit_b.pth", None, None, md5="3bb6db55bd0c9ca30b61248bca72f8d6", sam_preprocess="medsam"),
        KnownWeights("sam2.1_hiera_t", "sam2", "SAM 2.1 Hiera tiny (Meta)", _SAM21_BASE + "sam2.1_hiera_tiny.pt",
                     "sam2.1_hiera_tiny.pt", 156008466,
                     "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", sam2_config="sam2.1_hiera_t"),
        KnownWeights("sam2.1_hiera_s", "sam2", "SAM 2.1 Hiera small (Meta)", _SAM21_BASE + "sam2.1_hiera_small.pt",
                     "sam2.1_hiera_small.pt", 184416285,
                     "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", sam2_config="sam2.1_hiera_s"),
        KnownWeights("sam2.1_hiera_b+", "sam2", "SAM 2.1 Hiera base+ (Meta)",
                     _SAM21_BASE + "sam2.1_hiera_base_plus.pt", "sam2.1_hiera_base_plus.pt", 323606802,
                     "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", sam2_config="sam2.1_hiera_b+"),
        KnownWeights("sam2.1_hiera_l", "sam2", "SAM 2.1 Hiera large (Meta)", _SAM21_BASE + "sam2.1_hiera_large.pt",
                     "sam2.1_hiera_large.pt", 898083611,
                     "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", sam2_config="sam2.1_hiera_l"),
        KnownWeights("medsam2", "sam2", "MedSAM2 latest (Ma et al. 2025; SAM 2.1 tiny, 512 px); UNVERIFIED: no published "
                     "checksum, address on a moving branch",
                     "https://huggingface.co/wanglab/MedSAM2/resolve/main/MedSAM2_latest.pt",
                     "MedSAM2_latest.pt", None, None, sam2_config="sam2.1_hiera_t", image_size=512),
    )
}


def segssl_home() -> Path:
    """``$SEGSSL_HOME``, or SegSSL's folder in the user's cache directory."""
    configured = os.environ.get(HOME_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("segssl", appauthor=False))


def weights_folder() -> Path:
    return segssl_home() / "weights"


def cached_path(weights: KnownWeights) -> Path:
    return weights_folder() / weights.file_name


def known_weights(name: str, family: str | None = None) -> KnownWeights:
    entry = REGISTRY.get(name)
    if entry is None or (family is not None and entry.family != family):
        names = ", ".join(n for n, w in REGISTRY.items() if family is None or w.family == family)
        raise SegSSLError(f"unknown weights {name!r} — use one of {names} (segssl weights list)")
    return entry


def registry_entry_for_file(path: Path) -> KnownWeights | None:
    """The registry entry whose official file name ``path`` carries, if any (to pick configs and sizes)."""
    return next((w for w in REGISTRY.values() if w.file_name == Path(path).name), None)


def resolve_checkpoint(value: str | None, family: str, option: str, download_missing: bool = True, progress=None) -> Path:
    """The checkpoint file for ``--sam-checkpoint`` / ``--sam2-checkpoint``.

    ``value``: a file, or a registry name (downloaded into the cache on first use). ``None``: the
    environment variable for the family, else a registry file already in the cache.
    """
    value = value or os.environ.get(CHECKPOINT_VARIABLES[family])
    if not value:
        found = configured_checkpoint(family)
        if found is None:
            example = "sam_vit_b" if family == "sam" else "sam2.1_hiera_t"
            raise SegSSLError(
                f"{option} is needed: give a checkpoint file or a name such as {example} "
                f"(segssl weights list; segssl weights download {example} fetches it)"
            )
        return found
    path = Path(value).expanduser()
    if path.is_file():
        known = registry_entry_for_file(path)
        in_cache = known is not None and path.resolve() == cached_path(known).resolve()
        return _checked(path, known) if in_cache else path  # a file of the user's own is theirs to vouch for
    if value in REGISTRY:
        entry = known_weights(value, family)
        target = cached_path(entry)
        if target.is_file():
            return _checked(target, entry)
        if not download_missing:
            raise SegSSLError(f"{value} is not downloaded yet — run segssl weights download {value}")
        from SegSSLLib.weights.download import download_weights

        return download_weights(entry, progress=progress)
    if path.exists():
        raise SegSSLError(f"{option} {value} is a folder; give the checkpoint file")
    raise SegSSLError(f"{option} {value}: no such file and no known weights of that name — check the path (segssl weights list)")


def configured_checkpoint(family: str) -> Path | None:
    """A checkpoint the user has set up for ``family``: the environment variable's, else the first cached one."""
    value = os.environ.get(CHECKPOINT_VARIABLES[family])
    if value:
        return resolve_checkpoint(value, family, CHECKPOINT_VARIABLES[family], download_missing=False)
    for entry in REGISTRY.values():
        if entry.family == family and cached_path(entry).is_file():
            return _checked(cached_path(entry), entry)
    return None


def _checked(path: Path, entry: KnownWeights) -> Path:
    """A file in the cache, checked against the registry on its first use (it may have been copied in by hand)."""
    from SegSSLLib.weights.download import check_cached

    return check_cached(path, entry)
