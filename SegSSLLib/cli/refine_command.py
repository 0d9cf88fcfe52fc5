"""``segssl refine``: sharpen a coarse label map with SAM box prompts (also ``segment --refine-sam``)."""

from __future__ import annotations

from SegSSLLib.cli.common import add_device_option
from SegSSLLib.errors import SegSSLError

HELP = "refine a coarse label map with SAM (a box per connected component, slice by slice)"


def add_refine_options(group, switch: bool = False) -> None:
    """SAM refinement options; ``switch`` adds ``--refine-sam`` (for ``segssl segment``)."""
    if switch:
        group.add_argument("--refine-sam", action="store_true", help="refine the result with SAM box prompts")
    group.add_argument(
        "--sam-checkpoint",
        metavar="FILE|NAME",
        help="SAM or MedSAM checkpoint file, or a name from `segssl weights list` (downloaded on first use); "
        "default: $SEGSSL_SAM_CHECKPOINT or a SAM checkpoint already in the weights cache",
    )
    group.add_argument("--box-margin", type=int, default=5, help="pixels added around each box (default 5)")
    group.add_argument("--sam-mask-prompt", action="store_true", help="also give SAM the coarse mask as a mask prompt")
    group.add_argument(
        "--sam-preprocess", choices=("auto", "sam", "medsam"), default="auto",
        help="image preparation: SAM's (aspect kept, padded, ImageNet mean/std) or MedSAM's (stretched to the "
        "square, min-max [0, 1]); auto: MedSAM's for medsam_vit_b.pth, else SAM's (default)",
    )
    group.add_argument(
        "--refine-axis", type=int, choices=(0, 1, 2), default=2, help="slice axis, ITK order (2 = K, axial; default)"
    )


def configure(parser) -> None:
    parser.add_argument("--input", required=True, help="volume (or 2D image) the mask belongs to")
    parser.add_argument("--mask", required=True, help="coarse label map on the input's grid")
    parser.add_argument("--output", required=True, help="refined label map to write")
    add_refine_options(parser)
    add_device_option(parser)


def _settings(args):
    from SegSSLLib.refinement.sam_refine import RefineSettings

    return RefineSettings(
        margin=args.box_margin, mask_prompt=args.sam_mask_prompt, axis=args.refine_axis,
        sam_checkpoint=args.sam_checkpoint, sam_preprocess=args.sam_preprocess,
    )


def prepare_refinement(args, progress):
    """Check the options and find the checkpoint before any long work starts."""
    from SegSSLLib.weights.resolve import resolve_checkpoint

    _settings(args).check()
    return resolve_checkpoint(args.sam_checkpoint, "sam", progress=progress)


_LOADED: dict = {}  # the last SAM predictor loaded in this process


def refine_with_sam(image, labels, args, progress, device, checkpoint):
    """The label map ``labels`` ((k, j, i) or 2D array) refined by the SAM model in ``checkpoint``."""
    from dataclasses import replace

    from SegSSLLib.refinement.sam_refine import load_refinement_predictor, refine

    settings = replace(_settings(args), sam_checkpoint=checkpoint, device=device)
    key = (str(checkpoint), str(device), args.sam_preprocess)
    if key not in _LOADED:  # a data-set run refines every case with one loaded model
        _LOADED.clear()
        _LOADED[key] = load_refinement_predictor(settings, progress)
    return refine(image, labels, settings, progress, predictor=_LOADED[key]).label_map


def run(args, progress) -> int:
    from SegSSLLib.cli.common import setup_torch
    from SegSSLLib.volumes import (
        check_output_format, check_output_path, read_image, read_label_map, require_content, write_image,
    )

    check_output_path(args.output, (args.input, args.mask), "--output")
    image = read_image(args.input, "input")
    if image.GetDimension() not in (2, 3):
        raise SegSSLError(f"--input {args.input} is {image.GetDimension()}D; give a 2D image or a 3D volume")
    check_output_format(args.output, image.GetDimension(), "--output")
    require_content(image, f"--input {args.input}")
    mask = read_label_map(args.mask, reference=image, what="--mask", reference_name="the input")
    if not mask_has_labels(mask):
        raise SegSSLError(f"--mask {args.mask} is empty (all zero): there is nothing to refine")
    checkpoint = prepare_refinement(args, progress)
    device = setup_torch(args)
    write_image(refine_with_sam(image, mask, args, progress, device, checkpoint), args.output)
    progress.output(args.output)
    return 0


def mask_has_labels(mask) -> bool:
    import SimpleITK as sitk

    return bool(sitk.GetArrayViewFromImage(mask).any())
