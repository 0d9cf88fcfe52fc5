"""``segssl propagate``: a label map painted on one slice (or a few) carried through the whole volume."""

from __future__ import annotations

from SegSSLLib.cli.common import add_device_option
from SegSSLLib.propagation.propagate import BACKENDS

HELP = "propagate a one-slice annotation through the volume (SAM 2, or weight-free registration)"


def configure(parser) -> None:
    parser.add_argument("--input", required=True, help="volume (NIfTI, NRRD, MHA, DICOM folder)")
    parser.add_argument(
        "--annotation", required=True, help="label map on the input's grid, painted on one slice; one value per object"
    )
    parser.add_argument("--output", required=True, help="label map to write, on the input's grid")
    parser.add_argument(
        "--backend",
        choices=("auto", *BACKENDS),
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
    from SegSSLLib.propagation.propagate import PropagateSettings, choose_backend, propagate
    from SegSSLLib.volumes import check_output_path, read_label_map, read_volume, require_content, write_image

    check_output_path(args.output, (args.input, args.annotation), "--output", dimension=3)
    image = read_volume(args.input, "input")
    require_content(image, f"--input {args.input}")
    annotation = read_label_map(args.annotation, reference=image, what="--annotation", reference_name="the input volume")
    settings = PropagateSettings(
        backend=args.backend, sam2_checkpoint=args.sam2_checkpoint, sam2_config=args.sam2_config,
        image_size=args.image_size, offload_state=args.offload_state, axis=args.axis,
    )
    if choose_backend(settings) == "sam2":  # the registration backend needs no torch: do not import it
        from dataclasses import replace

        from SegSSLLib.cli.common import setup_torch

        settings = replace(settings, backend="sam2" if args.backend == "sam2" else "auto", device=setup_torch(args))
    result = propagate(image, annotation, settings, progress)
    write_image(result.label_map, args.output)
    progress.output(args.output)
    return 0
