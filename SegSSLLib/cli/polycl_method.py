"""``segssl segment --method polycl --checkpoint MODEL``: a fine-tuned PolyCL model on a volume."""

from __future__ import annotations

import logging

from SegSSLLib.errors import SegSSLError

log = logging.getLogger(__name__)

ACCEPTS_2D = False
SEGMENTS_DATASETS = True

# The model of the last --checkpoint loaded in this process: a data-set run loads it once.
_LOADED: dict = {}


def add_arguments(group) -> None:
    group.add_argument("--checkpoint", help="PolyCL model file made by `segssl finetune` (needed by --method polycl)")
    group.add_argument(
        "--polycl-batch-size", type=int, default=None, metavar="N",
        help="slices per network pass (default: 4 on a CPU, 16 on a GPU)",
    )
    group.add_argument(
        "--polycl-all-components",
        action="store_true",
        help="keep every predicted region (default: only the largest connected component)",
    )


def prepare(args, device) -> None:
    """Check the options and load the model (kept for every later ``segment`` call of this process)."""
    if args.polycl_batch_size is not None and args.polycl_batch_size < 1:
        raise SegSSLError(f"--polycl-batch-size must be at least 1, got {args.polycl_batch_size}")
    _segmenter(args, device)


def _segmenter(args, device):
    from pathlib import Path

    from SegSSLLib.polycl.segment import load_polycl_segmenter

    if not args.checkpoint:
        raise SegSSLError("--method polycl needs --checkpoint MODEL (a model file made by `segssl finetune`)")
    path = Path(args.checkpoint)
    key = (str(path.resolve()), str(device), path.stat().st_mtime if path.exists() else 0.0)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load_polycl_segmenter(args.checkpoint, device)
    return _LOADED[key]


def segment(image, seeds, args, progress, device):
    import SimpleITK as sitk

    from SegSSLLib.polycl.segment import PolyCLSettings, segment_polycl

    segmenter = _segmenter(args, device)
    if seeds:
        log.warning("--seed points are not used by --method polycl; the model segments the whole volume")
    settings = PolyCLSettings(args.polycl_batch_size, not args.polycl_all_components, device)
    result = segment_polycl(image, args.checkpoint, settings, progress, segmenter=segmenter)
    return sitk.GetArrayFromImage(result.label_map)
