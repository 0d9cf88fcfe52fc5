"""``segssl segment --method s3net``: label-free segmentation of the structure under the seed click(s).

An S3-Net is trained on the input itself (no labels, no checkpoint), every pixel gets a cluster, and
the structure is chosen from the clusters by the seeds (see ``selection``). ``--clusters-output``
keeps the whole cluster map (ids 1..n by increasing intensity) so a user can pick clusters later.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from SegSSLLib.errors import SegSSLError

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


def config_from_args(args, click: bool = False):
    """The ``S3NetConfig`` the command-line options ask for, with one-line errors for bad values.

    ``click``: the click route runs, whose default is fewer feature channels (``ClickSettings``).
    """
    from dataclasses import replace

    config = _default_config()
    changes = {field: getattr(args, f"s3net_{field}") for _, field, _, _, _ in _CONFIG_OPTIONS}
    if changes["features"] is None:
        from SegSSLLib.s3net.click_segment import ClickSettings

        changes["features"] = ClickSettings().config.features if click else config.features
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


def settings_from_args(args, device, seeds=(), dimension: int = 3):
    """The ``S3NetSettings`` the command-line options ask for (``seeds``: to know which route runs)."""
    from SegSSLLib.cli.common import parse_index
    from SegSSLLib.s3net.segment import S3NetSettings

    negatives = tuple(parse_index(text, dimension, "--s3net-negative") for text in args.s3net_negative)
    return S3NetSettings(
        config=config_from_args(args, click=bool(seeds) and args.s3net_route != "whole"),
        slice_axis=args.s3net_slice_axis, max_size=args.s3net_max_size,
        window=window_from_args(args.s3net_window), fill_holes=args.s3net_fill_holes,
        bridge_radius=args.s3net_bridge_radius, label=args.s3net_label, random_seed=args.random_seed, device=device,
        log_dir=args.s3net_log_dir, route=args.s3net_route, negatives=negatives, max_radius_mm=args.s3net_max_radius,
    )


def segment(image, seeds, args, progress, device):
    import SimpleITK as sitk

    from SegSSLLib.s3net.segment import segment_s3net
    from SegSSLLib.volumes import check_output_path

    if getattr(args, "checkpoint", None):
        raise SegSSLError(
            "--checkpoint is a PolyCL model and --method s3net uses none (it learns from the image itself) — "
            "leave --checkpoint out, or use --method polycl"
        )
    if args.clusters_output:
        if os.path.realpath(args.clusters_output) == os.path.realpath(args.output):
            raise SegSSLError("--clusters-output and --output are the same file; give two different names")
        check_output_path(args.clusters_output, (args.input,), "--clusters-output", dimension=image.GetDimension())
    settings = settings_from_args(args, device, seeds, image.GetDimension())
    settings.check()
    result = segment_s3net(image, seeds, settings, progress)
    extra_outputs = {args.clusters_output: result.clusters} if args.clusters_output else {}
    return sitk.GetArrayFromImage(result.label_map), extra_outputs


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
