"""``segssl propagate``: a label map painted on one slice (or a few) carried through the whole volume."""

from __future__ import annotations

import logging

from SegSSLLib.cli.common import add_device_option
from SegSSLLib.errors import SegSSLError

HELP = "propagate a one-slice annotation through the volume (SAM 2, or weight-free registration)"

log = logging.getLogger(__name__)


def configure(parser) -> None:
    parser.add_argument("--input", required=True, help="volume (NIfTI, NRRD, MHA, DICOM folder)")
    parser.add_argument(
        "--annotation", required=True, help="label map on the input's grid, painted on one slice; one value per object"
    )
    parser.add_argument("--output", required=True, help="label map to write, on the input's grid")
    parser.add_argument(
        "--backend",
        choices=("auto", "sam2", "registration"),
        default="auto",
        help="sam2, registration (no weights, no GPU), or auto: sam2 when a SAM 2 checkpoint is given "
        "or configured, else registration (default)",
    )
    parser.add_argument(
        "--sam2-checkpoint",
        metavar="FILE|NAME",
        help="SAM 2 / MedSAM2 checkpoint file, or a name from `segssl weights list` (downloaded on first use); "
        "default: $SEGSSL_SAM2_CHECKPOINT or one already in the weights cache",
    )
    parser.add_argument(
        "--sam2-config", help="sam2 config name, e.g. sam2.1_hiera_t (default: the checkpoint's, else sam2.1_hiera_t)"
    )
    parser.add_argument(
        "--image-size", type=int, help="SAM 2 input size in pixels (multiple of 32; default the model's, 1024): "
        "smaller is much faster on a CPU and less precise; give 512 for a renamed MedSAM2 file"
    )
    parser.add_argument(
        "--offload-state", action="store_true",
        help="keep SAM 2's per-frame memory on the CPU: less GPU memory on long volumes, a little slower",
    )
    parser.add_argument(
        "--axis", type=int, choices=(0, 1, 2),
        help="slice axis the annotation was painted on, ITK index order: 0 = I (sagittal for an axial scan), "
        "1 = J (coronal), 2 = K (axial); the annotation must lie on slices of it (default: the axis along which it "
        "covers fewest slices, axial on a tie)"
    )
    add_device_option(parser)


def run(args, progress) -> int:
    import SimpleITK as sitk

    from SegSSLLib.cli.common import setup_torch
    from SegSSLLib.sam.annotation import crowding_warning, describe, find_annotation
    from SegSSLLib.volumes import (
        check_output_path, label_array_to_image, read_label_map, read_volume, require_content, write_image,
    )

    check_output_path(args.output, (args.input, args.annotation), "--output", dimension=3)
    image = read_volume(args.input, "input")
    require_content(image, f"--input {args.input}")
    drawn = sitk.GetArrayFromImage(
        read_label_map(args.annotation, reference=image, what="--annotation", reference_name="the input volume")
    )
    annotation = find_annotation(drawn, args.axis)
    backend = _choose_backend(args)
    device = setup_torch(args)
    # Everything that can be wrong is checked (and the model loaded) before the first message is logged,
    # so that a mistake is reported as one line.
    predictor = _sam2_predictor(args, device, progress) if backend == "sam2" else None
    log.info("annotation: %s", describe(annotation))
    if crowding_warning(annotation):
        log.warning(crowding_warning(annotation))
    if predictor is not None:
        from SegSSLLib.sam.sam2_propagation import propagate_with_sam2

        log.info("backend: SAM 2 at %d px on %s", predictor.image_size, device)
        if device.type == "cpu" and predictor.image_size >= 1024:
            log.warning("SAM 2 at %d px on a CPU takes seconds per slice — --image-size 512 (MedSAM2's size) "
                        "or 256 is much faster", predictor.image_size)
        labels = propagate_with_sam2(predictor, image, drawn, annotation, progress, args.offload_state).labels
    else:
        from SegSSLLib.sam.registration_propagation import propagate_by_registration

        log.info("backend: registration%s", "" if args.backend == "registration" else " (no SAM 2 checkpoint configured)")
        labels = propagate_by_registration(image, drawn, annotation, progress=progress)
    write_image(label_array_to_image(labels, image), args.output)
    progress.output(args.output)
    return 0


def _choose_backend(args) -> str:
    if args.backend != "auto":
        return args.backend
    from SegSSLLib.sam.weights import configured_checkpoint

    return "sam2" if args.sam2_checkpoint or configured_checkpoint("sam2") else "registration"


def _sam2_predictor(args, device, progress):
    from SegSSLLib.sam.models import load_sam2_video_predictor, resolve_sam2_config
    from SegSSLLib.sam.weights import registry_entry_for_file, resolve_checkpoint

    if args.sam2_config:
        resolve_sam2_config(args.sam2_config)  # a wrong name fails before anything is downloaded or loaded
    checkpoint = resolve_checkpoint(args.sam2_checkpoint, "sam2", "--sam2-checkpoint", progress=progress)
    known = registry_entry_for_file(checkpoint)
    config = args.sam2_config or (known.sam2_config if known else None) or "sam2.1_hiera_t"
    image_size = args.image_size or (known.image_size if known else None)
    return load_sam2_video_predictor(checkpoint, config, device, image_size)
