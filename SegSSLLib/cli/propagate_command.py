"""``segssl propagate``: a label map painted on one slice (or a few) carried through the whole volume."""

from __future__ import annotations

import logging

from SegSSLLib.cli.common import add_device_option
from SegSSLLib.errors import SegSSLError

HELP = "propagate a one-slice annotation through the volume (SAM 2, or weight-free registration)"

log = logging.getLogger(__name__)


def configure(parser) -> None:
    parser.add_argument(
        "--input", required=True,
        help="volume (NIfTI, NRRD, MHA, DICOM folder); or a folder of volumes or an MSD data set, done case by case",
    )
    parser.add_argument(
        "--annotation", required=True,
        help="label map on the input's grid, painted on one slice; one value per object (a folder of them, "
        "named like the cases, when --input is a folder)",
    )
    parser.add_argument(
        "--output", required=True,
        help="label map to write, on the input's grid; a folder when --input is one (cases with a complete output "
        "there are skipped)",
    )
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
    from SegSSLLib.cli.common import setup_torch
    from SegSSLLib.dataset_runs import is_dataset_folder
    from SegSSLLib.volumes import check_output_path

    if is_dataset_folder(args.input):
        return _run_dataset(args, progress)
    check_output_path(args.output, (args.input, args.annotation), "--output")
    image, drawn, annotation = _read_case(args.input, args.annotation, args.axis)
    backend = _choose_backend(args)
    device = setup_torch(args)
    # Everything that can be wrong is checked (and the model loaded) before the first message is logged,
    # so that a mistake is reported as one line.
    predictor = _sam2_predictor(args, device, progress) if backend == "sam2" else None
    _log_backend(args, predictor, device)
    _propagate_case(image, drawn, annotation, args, predictor, progress, args.output)
    return 0


def _read_case(input_path, annotation_path, axis):
    import SimpleITK as sitk

    from SegSSLLib.propagation.annotation import find_annotation
    from SegSSLLib.volumes import read_label_map, read_volume

    image = read_volume(input_path, "input")
    drawn = sitk.GetArrayFromImage(
        read_label_map(annotation_path, reference=image, what="--annotation", reference_name="the input volume")
    )
    return image, drawn, find_annotation(drawn, axis)


def _log_backend(args, predictor, device) -> None:
    if predictor is not None:
        log.info("backend: SAM 2 at %d px on %s", predictor.image_size, device)
        if device.type == "cpu" and predictor.image_size >= 1024:
            log.warning("SAM 2 at %d px on a CPU takes seconds per slice — --image-size 512 (MedSAM2's size) "
                        "or 256 is much faster", predictor.image_size)
    else:
        log.info("backend: registration%s", "" if args.backend == "registration" else " (no SAM 2 checkpoint configured)")


def _propagate_case(image, drawn, annotation, args, predictor, progress, output, case: str = "") -> None:
    from SegSSLLib.propagation.annotation import crowding_warning, describe
    from SegSSLLib.volumes import label_array_to_image, write_image

    prefix = f"{case}: " if case else ""
    log.log(logging.DEBUG if case else logging.INFO, "%sannotation: %s", prefix, describe(annotation))
    if crowding_warning(annotation):
        log.warning("%s%s", prefix, crowding_warning(annotation))
    if predictor is not None:
        from SegSSLLib.propagation.sam2 import propagate_with_sam2

        labels = propagate_with_sam2(predictor, image, drawn, annotation, progress, args.offload_state).labels
    else:
        from SegSSLLib.propagation.registration import propagate_by_registration

        labels = propagate_by_registration(image, drawn, annotation, progress=progress)
    write_image(label_array_to_image(labels, image), output)
    progress.output(output)


def _run_dataset(args, progress) -> int:
    """``--input`` is a folder or an MSD data set and ``--annotation`` a folder of label maps named like its cases."""
    from pathlib import Path

    from SegSSLLib.cli.common import setup_torch
    from SegSSLLib.cli.dataset_mode import CaseFiles, finish, rank_progress
    from SegSSLLib.dataset_runs import (
        case_processes, dataset_images, dataset_label_maps, image_size, is_dataset_folder, output_complete,
        output_suffix, pair_by_name, prepare_output_folder, run_cases,
    )

    if not is_dataset_folder(args.annotation):
        raise SegSSLError(
            f"--input {args.input} is a folder of volumes, so --annotation must be a folder of label maps named like "
            f"its cases (e.g. {next(iter(dataset_images(args.input)))}.nii.gz); {args.annotation} is not one"
        )
    images = dataset_images(args.input)
    pairing = pair_by_name(images, dataset_label_maps(args.annotation, "--annotation"))
    if not pairing.pairs:
        raise SegSSLError(
            f"no annotation in {args.annotation} has the name of a case of {args.input} (cases: "
            f"{', '.join(list(images)[:3])}, ...) — name each annotation after its volume"
        )
    if pairing.only_first:
        log.warning("%d case(s) have no annotation and are left out: %s", len(pairing.only_first),
                    ", ".join(pairing.only_first[:10]) + (", ..." if len(pairing.only_first) > 10 else ""))
    if pairing.only_second:
        log.warning("%d annotation(s) match no case of --input and are ignored: %s", len(pairing.only_second),
                    ", ".join(pairing.only_second[:10]) + (", ..." if len(pairing.only_second) > 10 else ""))
    output_folder = prepare_output_folder(args.output, [p for pair in pairing.pairs.values() for p in pair])
    cases = [
        CaseFiles(name, (image, drawn), output_folder / f"{name}{output_suffix(image)}")
        for name, (image, drawn) in pairing.pairs.items()
    ]
    backend = _choose_backend(args)
    device = setup_torch(args)
    with case_processes():
        progress = rank_progress(progress)
        predictor = _sam2_predictor(args, device, progress) if backend == "sam2" else None  # loaded once
        _log_backend(args, predictor, device)

        def propagate_case(case: CaseFiles) -> None:
            image, drawn, annotation = _read_case(*case.inputs, args.axis)
            _propagate_case(image, drawn, annotation, args, predictor, progress, case.output, case.name)

        summary = run_cases(
            cases, propagate_case, progress, stage="propagate cases",
            is_complete=lambda case: output_complete(case.output, image_size(case.inputs[0])),
        )
    return finish(summary, progress)


def _choose_backend(args) -> str:
    if args.backend != "auto":
        return args.backend
    from SegSSLLib.weights.registry import configured_checkpoint

    return "sam2" if args.sam2_checkpoint or configured_checkpoint("sam2") else "registration"


def _sam2_predictor(args, device, progress):
    from SegSSLLib.weights.models import load_sam2_video_predictor, resolve_sam2_config
    from SegSSLLib.weights.registry import registry_entry_for_file, resolve_checkpoint

    if args.sam2_config:
        resolve_sam2_config(args.sam2_config)  # a wrong name fails before anything is downloaded or loaded
    checkpoint = resolve_checkpoint(args.sam2_checkpoint, "sam2", "--sam2-checkpoint", progress=progress)
    known = registry_entry_for_file(checkpoint)
    config = args.sam2_config or (known.sam2_config if known else None) or "sam2.1_hiera_t"
    image_size = args.image_size or (known.image_size if known else None)
    return load_sam2_video_predictor(checkpoint, config, device, image_size)
