"""``segssl propagate``: a label map painted on one slice (or a few) carried through the whole volume."""

from __future__ import annotations

from SegSSLLib.cli.common import add_device_option
from SegSSLLib.propagation.propagate import BACKENDS

HELP = "propagate a one-slice annotation through the volume (SAM 2, or weight-free registration)"


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
        "--overwrite", action="store_true",
        help="folder --input only: do every case again, replacing outputs that are already complete (default: skip them)",
    )
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
    from SegSSLLib.dataset_runs import is_dataset_folder
    from SegSSLLib.propagation.propagate import propagate
    from SegSSLLib.volumes import check_output_path, read_label_map, read_volume, require_content, write_image

    if is_dataset_folder(args.input):
        return _run_dataset(args, progress)
    check_output_path(args.output, (args.input, args.annotation), "--output", dimension=3)
    image = read_volume(args.input, "input")
    require_content(image, f"--input {args.input}")
    annotation = read_label_map(args.annotation, reference=image, what="--annotation", reference_name="the input volume")
    result = propagate(image, annotation, _settings(args), progress)
    write_image(result.label_map, args.output)
    progress.output(args.output)
    return 0


def _settings(args):
    from SegSSLLib.propagation.propagate import PropagateSettings, choose_backend

    settings = PropagateSettings(
        backend=args.backend, sam2_checkpoint=args.sam2_checkpoint, sam2_config=args.sam2_config,
        image_size=args.image_size, offload_state=args.offload_state, axis=args.axis,
    )
    if choose_backend(settings) == "sam2":  # the registration backend needs no torch: do not import it
        from dataclasses import replace

        from SegSSLLib.cli.common import setup_torch

        settings = replace(settings, backend="sam2" if args.backend == "sam2" else "auto", device=setup_torch(args))
    return settings


def _run_dataset(args, progress) -> int:
    """``--input`` is a folder or an MSD data set and ``--annotation`` a folder of label maps named like its cases."""
    import logging

    from SegSSLLib.cli.dataset_mode import CaseFiles, finish, rank_progress, resume_rule
    from SegSSLLib.dataset_runs import (
        case_processes, dataset_images, dataset_label_maps, is_dataset_folder, needs_work,
        output_suffix, pair_by_name, prepare_output_folder, run_cases,
    )
    from SegSSLLib.errors import SegSSLError
    from SegSSLLib.propagation.propagate import make_propagator, propagate
    from SegSSLLib.volumes import read_label_map, read_volume, write_image

    log = logging.getLogger("segssl")
    images = dataset_images(args.input, "--input")
    if not is_dataset_folder(args.annotation):
        raise SegSSLError(
            f"--input {args.input} is a folder of volumes, so --annotation must be a folder of label maps named like "
            f"its cases (e.g. {next(iter(images))}.nii.gz); {args.annotation} is not one"
        )
    pairing = pair_by_name(images, dataset_label_maps(args.annotation, "--annotation"))
    if not pairing.pairs:
        raise SegSSLError(
            f"no annotation in {args.annotation} has the name of a case of {args.input} (cases: "
            f"{', '.join(list(images)[:3])}, ...) — name each annotation after its volume"
        )
    for names, text in ((pairing.only_first, "case(s) have no annotation and are left out"),
                        (pairing.only_second, "annotation(s) match no case of --input and are ignored")):
        if names:
            log.warning("%d %s: %s", len(names), text, ", ".join(names[:10]) + (", ..." if len(names) > 10 else ""))
    output_folder = prepare_output_folder(args.output, [p for pair in pairing.pairs.values() for p in pair], "--output")
    cases = [
        CaseFiles(name, (image, drawn), output_folder / f"{name}{output_suffix(image)}")
        for name, (image, drawn) in pairing.pairs.items()
    ]
    settings = _settings(args)
    is_complete = resume_rule(args)
    with case_processes():
        progress = rank_progress(progress)
        # SAM 2 is loaded once, here, and not at all when every case of this process is complete
        propagator = make_propagator(settings, progress) if needs_work(cases, is_complete) else None

        def propagate_case(case: CaseFiles) -> None:
            image = read_volume(case.inputs[0], "input")
            annotation = read_label_map(
                case.inputs[1], reference=image, what="annotation", reference_name="its input volume"
            )
            result = propagate(image, annotation, settings, progress, propagator=propagator)
            write_image(result.label_map, case.output)
            progress.output(case.output)

        output_folder.mkdir(exist_ok=True)  # now that the model is loaded: an error before leaves nothing
        summary = run_cases(
            cases, propagate_case, progress, stage="propagate cases", is_complete=is_complete,
        )
    return finish(summary, progress)
