"""``segssl segment --method s3net``: label-free segmentation of the structure under the seed click(s).

An S3-Net is trained on the input itself (no labels, no checkpoint), every pixel gets a cluster, and
the structure is chosen from the clusters by the seeds (see ``selection``). ``--clusters-output``
keeps the whole cluster map (ids 1..n by increasing intensity) so a user can pick clusters later.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from SegSSLLib.errors import SegSSLError

log = logging.getLogger(__name__)

ACCEPTS_2D = True


# Options that set an S3NetConfig field: (option, field, type, metavar, help).
_CONFIG_OPTIONS = [
    ("--s3net-steps", "max_steps", int, "N", "most training steps"),
    ("--s3net-min-clusters", "min_clusters", int, "N", "stop training once a minibatch has no more than N clusters"),
    ("--s3net-min-steps", "min_steps", int, "N", "never stop training before N steps"),
    ("--s3net-min-cluster-share", "min_cluster_share", float, "F",
     "count only clusters holding at least this share of a minibatch's pixels"),
    ("--s3net-clusters", "clusters", int, "K", "response channels = the most clusters at the start"),
    ("--s3net-features", "features", int, "C", "feature channels (the paper uses 64)"),
    ("--s3net-lr", "learning_rate", float, "LR", "SGD learning rate"),
    ("--s3net-batch-size", "batch_size", int, "N", "training crops per step"),
    ("--s3net-crop-size", "crop_size", int, "PIXELS", "side of the square training crops"),
]


def add_arguments(group) -> None:
    defaults = _default_config()
    group.add_argument(
        "--clusters-output", metavar="FILE", default=None, help="also write the full cluster map (ids 1..n) here"
    )
    for option, field, kind, metavar, text in _CONFIG_OPTIONS:
        default = getattr(defaults, field)
        if field == "features":  # the click route has its own default (issue 14): None = the route's default
            group.add_argument(option, dest=f"s3net_{field}", type=kind, default=None, metavar=metavar,
                               help=f"{text} (default {default:g}; 16 from a click)")
            continue
        group.add_argument(
            option, dest=f"s3net_{field}", type=kind, default=default, metavar=metavar, help=f"{text} (default {default:g})"
        )
    _add_click_arguments(group)
    group.add_argument(
        "--s3net-weights", default=None, metavar="C,A,S",
        help="weights of the clustering, affine-consistency and spatial terms (default "
        f"{defaults.clustering_weight:g},{defaults.affine_weight:g},{defaults.spatial_weight:g})",
    )
    group.add_argument(
        "--s3net-max-size", type=int, default=256, metavar="PIXELS",
        help="slices larger than this are scaled down for the network (default 256)",
    )
    group.add_argument(
        "--s3net-slice-axis", type=int, default=2, choices=(0, 1, 2),
        help="ITK axis the training slices are perpendicular to: 2 = K (axial for an axial scan, default)",
    )
    group.add_argument(
        "--s3net-window", default="auto", metavar="LEVEL,WIDTH",
        help="intensity window: auto (CT soft tissue for data in HU, percentiles otherwise), "
        "LEVEL,WIDTH in HU, or percentile",
    )
    group.add_argument(
        "--s3net-no-fill-holes", dest="s3net_fill_holes", action="store_false",
        help="keep holes inside the selected structure",
    )
    group.add_argument(
        "--s3net-bridge-radius", type=int, default=1, metavar="PIXELS",
        help="cut in-plane connections thinner than 2·R+1 pixels between the seeded structure and its "
        "neighbours (default 1; 0 keeps them)",
    )
    group.add_argument("--s3net-label", type=int, default=1, metavar="VALUE", help="label value of the structure (default 1)")
    group.add_argument("--s3net-log-dir", default=None, metavar="DIR", help="write TensorBoard loss curves here")


def _default_config():
    from SegSSLLib.s3net.config import S3NetConfig

    return S3NetConfig()


def config_from_args(args):
    """The ``S3NetConfig`` the command-line options ask for, with one-line errors for bad values."""
    from dataclasses import replace

    config = _default_config()
    changes = {field: getattr(args, f"s3net_{field}") for _, field, _, _, _ in _CONFIG_OPTIONS}
    if changes["features"] is None:
        changes["features"] = config.features
    if args.s3net_weights:
        weights = _numbers(args.s3net_weights, 3, "--s3net-weights", "C,A,S, e.g. 1,1,5")
        changes.update(clustering_weight=weights[0], affine_weight=weights[1], spatial_weight=weights[2])
    if not args.s3net_learning_rate > 0:
        raise SegSSLError(f"--s3net-lr must be positive, got {args.s3net_learning_rate:g}")
    try:
        return replace(config, **changes)
    except ValueError as exc:
        # Name the options, not the config fields, in one pass ("min_clusters" is not "clusters").
        options = {field: option for option, field, *_ in _CONFIG_OPTIONS}
        pattern = r"(?<![\w-])(" + "|".join(options) + r")(?![\w-])"
        message = re.sub(pattern, lambda match: options[match.group(1)], str(exc))
        raise SegSSLError(f"bad S3-Net option: {message}") from None


def window_from_args(text: str):
    from SegSSLLib.intensity import IntensityWindow

    text = text.strip().lower()
    if text == "auto":
        return None
    if text == "percentile":
        return IntensityWindow(mode="percentile")
    level, width = _numbers(text, 2, "--s3net-window", "auto, percentile or LEVEL,WIDTH, e.g. 40,400")
    return IntensityWindow(mode="ct", level=level, width=width)


def _numbers(text: str, count: int, option: str, form: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise SegSSLError(f"{option} {text!r} is not {form}")
    return values


def segment(image, seeds, args, progress, device):
    import numpy as np

    from SegSSLLib.cli.segment_command import _grey_reference
    from SegSSLLib.s3net.clustering import cluster_image
    from SegSSLLib.s3net.selection import select_central_component, select_from_seeds
    from SegSSLLib.slicing import array_axis
    from SegSSLLib.volumes import check_output_path, label_array_to_image

    if args.clusters_output:
        if Path(args.clusters_output).resolve() == Path(args.output).resolve():
            raise SegSSLError("--clusters-output and --output are the same file; give two different names")
        check_output_path(args.clusters_output, (args.input,), "--clusters-output")
    if args.s3net_max_size < 16:
        raise SegSSLError(f"--s3net-max-size must be at least 16 pixels, got {args.s3net_max_size}")
    if args.s3net_bridge_radius < 0:
        raise SegSSLError(f"--s3net-bridge-radius must be 0 or more, got {args.s3net_bridge_radius}")
    if not 1 <= args.s3net_label <= 65535:
        raise SegSSLError(f"--s3net-label must be between 1 and 65535, got {args.s3net_label}")
    if image.GetDimension() == 3 and not seeds:
        raise SegSSLError("--method s3net on a volume needs at least one --seed I,J,K inside the structure")
    config = config_from_args(args)
    window = window_from_args(args.s3net_window)
    if seeds and args.s3net_route != "whole":
        return _segment_click(image, seeds, args, progress, device, config, window)
    if args.s3net_negative:
        raise SegSSLError("--s3net-negative needs the click route: drop --s3net-route whole")
    log.info("S3-Net on the whole image: about %.0f s on one CPU thread", _whole_image_estimate(image, args, config))
    writer = _tensorboard_writer(args.s3net_log_dir)
    try:
        result = cluster_image(
            image, config, device, progress, seed=args.random_seed, slice_axis=args.s3net_slice_axis,
            max_size=args.s3net_max_size, window=window, writer=writer,
        )
    finally:
        if writer is not None:
            writer.close()
    steps = len(result.training.history)
    log.info(
        "S3-Net: %d clusters after %d training steps%s",
        int(result.clusters.max()), steps, "" if result.training.stopped_early else " (step budget used up)",
    )
    if seeds:
        slice_axis = array_axis(args.s3net_slice_axis) if image.GetDimension() == 3 else 0
        selection = select_from_seeds(
            result.clusters, seeds, args.s3net_fill_holes, slice_axis, bridge_radius=args.s3net_bridge_radius
        )
    else:
        selection = select_central_component(result.clusters)
        log.info("no seed given: took the central component that does not touch the border (cluster %s)", selection.clusters)
    rejected = " ".join(",".join(map(str, seed)) for seed in selection.rejected_seeds)
    if seeds and not selection.mask.any():
        raise SegSSLError(
            f"every seed ({rejected}) lies on background (a region spanning most of the image, e.g. air or the "
            "skin around a lesion), so nothing was segmented — give a --seed inside the structure"
        )
    if not selection.mask.any():
        raise SegSSLError(
            "no central structure was found (every sizeable region touches the image border) — "
            "give a --seed X,Y inside the structure"
        )
    if rejected:
        log.warning(
            "seed(s) %s lie on background (a region spanning most of the image); they were left out — "
            "click inside the structure you want", rejected,
        )
    labels = selection.mask.astype(np.uint16 if args.s3net_label > 255 else np.uint8) * args.s3net_label
    extra_outputs = {}
    if args.clusters_output:
        reference = image if image.GetNumberOfComponentsPerPixel() == 1 else _grey_reference(image)
        extra_outputs[args.clusters_output] = label_array_to_image(result.clusters, reference)
    return labels, extra_outputs


def _tensorboard_writer(log_dir):
    if not log_dir:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=log_dir)


# ---- the click route (issue 14): S3-Net trained on a box around the click, see s3net.click_segment ----


def _add_click_arguments(group) -> None:
    group.add_argument(
        "--s3net-route", choices=("auto", "click", "whole"), default="auto",
        help="auto (default): with a --seed, S3-Net is trained on a box around the click(s) with region growing "
        "as a candidate; 'whole': one S3-Net over the whole image, the structure chosen from its clusters",
    )
    group.add_argument(
        "--s3net-negative", action="extend", nargs="+", default=[], metavar="I,J,K",
        help="click(s) on what must not be part of the structure (X,Y for 2D; click route)",
    )
    group.add_argument(
        "--s3net-max-radius", type=float, default=100.0, metavar="MM",
        help="click route: nothing farther than this from the clicks is part of the structure (default 100 mm)",
    )


def _segment_click(image, seeds, args, progress, device, config, window):
    from dataclasses import replace

    import numpy as np

    from SegSSLLib.cli.common import check_index_inside, parse_index
    from SegSSLLib.s3net.click_segment import ClickSettings, segment_click
    from SegSSLLib.s3net.selection import _is_background, fill_holes, spans_whole_image
    from SegSSLLib.slicing import array_axis
    from SegSSLLib.volumes import label_array_to_image

    negatives = [parse_index(text, image.GetDimension()) for text in args.s3net_negative]
    for negative in negatives:
        check_index_inside(negative, image.GetSize())
    if args.s3net_features is None:
        config = replace(config, features=ClickSettings().config.features)
    try:
        settings = ClickSettings(
            max_radius_mm=args.s3net_max_radius, min_radius_mm=min(ClickSettings().min_radius_mm, args.s3net_max_radius),
            max_size=min(args.s3net_max_size, ClickSettings().max_size),
            slice_axis=args.s3net_slice_axis, config=config,
        )
    except ValueError as exc:
        raise SegSSLError(f"bad S3-Net click option: {exc} (--s3net-max-radius must be positive)") from None
    settings = replace(settings, selection=replace(settings.selection, bridge_radius=args.s3net_bridge_radius))
    result = segment_click(image, seeds, negatives, settings, device, progress, seed=args.random_seed, window=window)
    log.info(
        "S3-Net from the click: %d training steps on a box of %s voxels, %.1f s; region growing %s",
        result.steps, "×".join(map(str, result.box.size)), result.seconds,
        "leaked past the size limit" if result.leaked else "ended on its own",
    )
    slice_axis = array_axis(args.s3net_slice_axis) if image.GetDimension() == 3 else 0
    mask = result.mask  # holes are always filled on the click route
    # Background: the click's region (before the size limit) reaches both ends of every axis, or
    # filling its holes more than doubles it (air around the body), or the answer spans the image.
    grown = result.grown
    if (
        not mask.any()
        or spans_whole_image(grown)
        or fill_holes(grown, slice_axis).sum() > 2 * grown.sum()
        or _is_background(mask, slice_axis, 0.75)
    ):
        rejected = " ".join(",".join(map(str, seed)) for seed in seeds)
        raise SegSSLError(
            f"every seed ({rejected}) lies on background (a region spanning most of the image, e.g. air or the "
            "skin around a lesion), so nothing was segmented — give a --seed inside the structure"
        )
    labels = mask.astype(np.uint16 if args.s3net_label > 255 else np.uint8) * args.s3net_label
    extra_outputs = {}
    if args.clusters_output:
        from SegSSLLib.cli.segment_command import _grey_reference

        clusters = np.zeros(mask.shape, np.uint16)  # 0 outside the box S3-Net was trained on
        clusters[result.box.array_slices] = result.clusters
        reference = image if image.GetNumberOfComponentsPerPixel() == 1 else _grey_reference(image)
        extra_outputs[args.clusters_output] = label_array_to_image(clusters, reference)
    return labels, extra_outputs


def _whole_image_estimate(image, args, config) -> float:
    from SegSSLLib.s3net.click_region import Box
    from SegSSLLib.s3net.click_segment import ClickSettings, estimate_seconds

    box = Box((0,) * image.GetDimension(), tuple(image.GetSize()))
    settings = ClickSettings(max_size=max(16, args.s3net_max_size), slice_axis=args.s3net_slice_axis, config=config)
    return estimate_seconds(box, settings)
