"""``segssl segment``: a label map from a volume (or a 2D image) with one of the methods.

A method is a module listed in ``METHODS`` that defines::

    ACCEPTS_2D: bool                               # may the input be a 2D (RGB or grey) image?
    def add_arguments(group) -> None               # its own options; keep imports light
    def segment(image, seeds, args, progress, device) -> numpy array of labels in (k, j, i) order,
        or (labels, {path: SimpleITK image}) for extra files, written only with the label map at the end

``seeds`` are zero-based index tuples (I,J,K or X,Y), already checked to be inside the image.

A method that can segment a folder of volumes without per-volume seeds also defines::

    SEGMENTS_DATASETS = True
    def prepare(args, device) -> None             # check options and load the model once, before any case
"""

from __future__ import annotations


from SegSSLLib.cli import polycl_method, s3net_method
from SegSSLLib.cli.common import add_device_option, add_random_seed_option
from SegSSLLib.cli.refine_command import add_refine_options, prepare_refinement, refine_with_sam

HELP = "segment a volume (or a 2D image) with PolyCL or S3-Net"

METHODS = {"polycl": polycl_method, "s3net": s3net_method}


def configure(parser) -> None:
    parser.add_argument(
        "--input", required=True,
        help="volume (NIfTI, NRRD, MHA, DICOM folder) or 2D image; or a folder of volumes or an MSD data set, "
        "segmented case by case into the --output folder (cases with a complete output there are skipped)",
    )
    parser.add_argument(
        "--output", required=True,
        help="label map to write, on the input's grid; a folder when --input is one (each case keeps its input's name)",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="folder --input only: do every case again, replacing outputs that are already complete (default: skip them)",
    )
    parser.add_argument("--method", required=True, choices=sorted(METHODS))
    parser.add_argument(
        "--seed",
        action="extend",
        nargs="+",
        dest="seed_points",
        default=[],
        metavar="I,J,K",
        help="zero-based voxel index (ITK/Slicer IJK order) inside the structure; X,Y for 2D; several "
        "after one --seed or a repeated --seed",
    )
    add_device_option(parser)
    add_random_seed_option(parser, "--random-seed")
    for name in sorted(METHODS):
        METHODS[name].add_arguments(parser.add_argument_group(f"{name} options"))
    add_refine_options(parser.add_argument_group("SAM refinement"), switch=True)


def run(args, progress) -> int:
    from SegSSLLib.cli.common import parse_index, set_random_seed, setup_torch
    from SegSSLLib.dataset_runs import is_dataset_folder
    from SegSSLLib.volumes import check_output_format, check_output_path, read_image

    if is_dataset_folder(args.input):
        return _run_dataset(args, progress)
    method = METHODS[args.method]
    check_output_path(args.output, (args.input,), "--output")
    image = read_image(args.input, "input")
    _check_image(image, args, args.input)
    check_output_format(args.output, image.GetDimension(), "--output")
    seeds = [parse_index(text, image.GetDimension()) for text in args.seed_points]
    _check_seeds(seeds, image)
    checkpoint = prepare_refinement(args, progress) if args.refine_sam else None
    device = setup_torch(args)
    set_random_seed(args.random_seed)
    label_map, extra_outputs = _segment_image(image, seeds, args, progress, device, checkpoint, method)
    _write_outputs(label_map, extra_outputs, args.output, progress)
    return 0


def _check_image(image, args, path) -> None:
    from SegSSLLib.errors import SegSSLError
    from SegSSLLib.volumes import require_content

    method = METHODS[args.method]
    if image.GetDimension() == 2 and not method.ACCEPTS_2D:
        raise SegSSLError(
            f"--input {path} is a 2D image but --method {args.method} segments 3D volumes — "
            "give a volume, or use --method s3net for 2D images"
        )
    if image.GetDimension() not in (2, 3):
        raise SegSSLError(f"--input {path} is {image.GetDimension()}D; give a 2D image or a 3D volume")
    components = image.GetNumberOfComponentsPerPixel()
    if image.GetDimension() == 3 and components != 1:  # only 2D colour pictures (dermoscopy) are meant to have several
        raise SegSSLError(
            f"--input {path} is a volume with {components} components per voxel (e.g. RGB); "
            f"--method {args.method} needs a single-channel (grey-level) volume — convert it to one channel first"
        )
    require_content(image, f"--input {path}")


def _check_seeds(seeds, image) -> None:
    from SegSSLLib.cli.common import check_index_inside

    for seed in seeds:
        check_index_inside(seed, image.GetSize())


def _segment_image(image, seeds, args, progress, device, checkpoint, method):
    """(label map on the image's grid, {path: extra image}) of one image, refined by SAM when asked."""
    from SegSSLLib.images import label_image

    labels = method.segment(image, seeds, args, progress, device)
    labels, extra_outputs = labels if isinstance(labels, tuple) else (labels, {})
    label_map = label_image(labels, image)
    if args.refine_sam:
        label_map = refine_with_sam(image, label_map, args, progress, device, checkpoint)
    return label_map, extra_outputs


def _write_outputs(label_map, extra_outputs, output, progress) -> None:
    from SegSSLLib.volumes import write_images

    # Every file is written only now, after all the work, and renamed only when all are complete, so a
    # failure leaves none of them behind and replaces no earlier file.
    write_images({**extra_outputs, output: label_map})
    for path in [*extra_outputs, output]:
        progress.output(path)


def _run_dataset(args, progress) -> int:
    """``--input`` is a folder or an MSD data set: every case into ``--output DIR``, one model load."""
    from SegSSLLib.cli.common import set_random_seed, setup_torch
    from SegSSLLib.cli.dataset_mode import CaseFiles, finish, rank_progress, resume_rule
    from SegSSLLib.dataset_runs import (
        case_processes, dataset_images, needs_work, output_suffix, prepare_output_folder, run_cases,
    )
    from SegSSLLib.errors import SegSSLError
    from SegSSLLib.volumes import read_image

    method = METHODS[args.method]
    if not getattr(method, "SEGMENTS_DATASETS", False):
        raise SegSSLError(
            f"--input {args.input} is a folder of volumes, but --method {args.method} needs --seed points on each "
            "volume — segment the volumes one at a time, or use --method polycl for a whole folder"
        )
    if args.seed_points:
        raise SegSSLError("--seed points belong to one volume; leave them out when --input is a folder")
    images = dataset_images(args.input, "--input")
    output_folder = prepare_output_folder(args.output, list(images.values()), "--output")
    cases = [CaseFiles(name, (path,), output_folder / f"{name}{output_suffix(path)}") for name, path in images.items()]
    checkpoint = prepare_refinement(args, progress) if args.refine_sam else None
    device = setup_torch(args)
    is_complete = resume_rule(args)
    with case_processes():
        progress = rank_progress(progress)
        if needs_work(cases, is_complete):
            method.prepare(args, device)  # the model is loaded once here; a bad checkpoint fails before any case

        def segment_case(case: CaseFiles) -> None:
            image = read_image(case.inputs[0], "input")
            _check_image(image, args, case.inputs[0])
            set_random_seed(args.random_seed)  # each case as if segmented alone, whichever process takes it
            label_map, extra_outputs = _segment_image(image, [], args, progress, device, checkpoint, method)
            _write_outputs(label_map, extra_outputs, case.output, progress)

        output_folder.mkdir(exist_ok=True)  # now that the model is loaded: an error before leaves nothing
        summary = run_cases(
            cases, segment_case, progress, stage="segment cases", is_complete=is_complete,
        )
    return finish(summary, progress)
