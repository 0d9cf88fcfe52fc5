"""``segssl segment --method polycl --checkpoint MODEL``: a fine-tuned PolyCL model on a volume."""

from __future__ import annotations

import logging

from SegSSLLib.errors import SegSSLError

log = logging.getLogger(__name__)

ACCEPTS_2D = False


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


def segment(image, seeds, args, progress, device):
    import SimpleITK as sitk

    from SegSSLLib.polycl.segment import PolyCLSettings, segment_polycl

    if not args.checkpoint:
        raise SegSSLError("--method polycl needs --checkpoint MODEL (a model file made by `segssl finetune`)")
    if seeds:
        log.warning("--seed points are not used by --method polycl; the model segments the whole volume")
    settings = PolyCLSettings(args.polycl_batch_size, not args.polycl_all_components, device)
    return sitk.GetArrayFromImage(segment_polycl(image, args.checkpoint, settings, progress).label_map)
