"""``segssl segment``: a label map from a volume (or a 2D image) with one of the methods.

A method is a module in ``METHODS`` that defines::

    ACCEPTS_2D: bool                               # may the input be a 2D (RGB or grey) image?
    def add_arguments(group) -> None               # its own options; keep imports light
    def segment(image, seeds, args, progress, device) -> numpy array of labels in (k, j, i) order,
        or (labels, {path: SimpleITK image}) for extra files, written only with the label map at the end

``seeds`` are zero-based index tuples (I,J,K or X,Y), already checked to be inside the image.
"""

from __future__ import annotations


from SegSSLLib.cli import polycl_method, s3net_method
from SegSSLLib.cli.common import add_device_option, add_random_seed_option
from SegSSLLib.cli.refine_command import add_refine_options, prepare_refinement, refine_with_sam

HELP = "segment a volume (or a 2D image) with PolyCL or S3-Net"

METHODS = {"polycl": polycl_method, "s3net": s3net_method}

def configure(parser) -> None:
    parser.add_argument("--input", required=True, help="volume (NIfTI, NRRD, MHA, DICOM folder) or 2D image")
    parser.add_argument("--output", required=True, help="label map to write, on the input's grid")
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
    from SegSSLLib.cli.common import check_index_inside, parse_index, set_random_seed, setup_torch
    from SegSSLLib.errors import SegSSLError
    from SegSSLLib.images import label_image
    from SegSSLLib.volumes import check_output_format, check_output_path, read_image, require_content, write_images

    method = METHODS[args.method]
    check_output_path(args.output, (args.input,), "--output")
    image = read_image(args.input, "input")
    if image.GetDimension() == 2 and not method.ACCEPTS_2D:
        raise SegSSLError(
            f"--input {args.input} is a 2D image but --method {args.method} segments 3D volumes — "
            "give a volume, or use --method s3net for 2D images"
        )
    if image.GetDimension() not in (2, 3):
        raise SegSSLError(f"--input {args.input} is {image.GetDimension()}D; give a 2D image or a 3D volume")
    check_output_format(args.output, image.GetDimension(), "--output")
    components = image.GetNumberOfComponentsPerPixel()
    if image.GetDimension() == 3 and components != 1:  # only 2D colour pictures (dermoscopy) are meant to have several
        raise SegSSLError(
            f"--input {args.input} is a volume with {components} components per voxel (e.g. RGB); "
            f"--method {args.method} needs a single-channel (grey-level) volume — convert it to one channel first"
        )
    require_content(image, f"--input {args.input}")
    seeds = [parse_index(text, image.GetDimension()) for text in args.seed_points]
    for seed in seeds:
        check_index_inside(seed, image.GetSize())
    checkpoint = prepare_refinement(args, progress) if args.refine_sam else None
    device = setup_torch(args)
    set_random_seed(args.random_seed)
    labels = method.segment(image, seeds, args, progress, device)
    labels, extra_outputs = labels if isinstance(labels, tuple) else (labels, {})
    label_map = label_image(labels, image)
    if args.refine_sam:
        label_map = refine_with_sam(image, label_map, args, progress, device, checkpoint)
    # Every file is written only now, after all the work, and renamed only when all are complete, so a
    # failure leaves none of them behind and replaces no earlier file.
    write_images({**extra_outputs, args.output: label_map})
    for path in [*extra_outputs, args.output]:
        progress.output(path)
    return 0
