"""``segssl evaluate``: Dice and 95% Hausdorff distance per label."""

from __future__ import annotations

from SegSSLLib.cli.common import positive_label
from SegSSLLib.volumes import check_output_path

HELP = "Dice and 95% Hausdorff distance (mm) of a predicted label map against a reference"


def configure(parser) -> None:
    parser.add_argument("--pred", required=True, help="predicted label map")
    parser.add_argument("--truth", required=True, help="reference label map on the same grid")
    parser.add_argument(
        "--label",
        type=positive_label,
        action="append",
        metavar="N",
        help="label value to score, N >= 1 (repeatable; default: every non-zero value in --pred or --truth, "
        "so a label found only in one map scores Dice 0)",
    )
    parser.add_argument("--json", help="also write the results to this JSON file")


def run(args, progress) -> int:
    from SegSSLLib import strict_json
    from SegSSLLib.atomic import write_text_atomically
    from SegSSLLib.evaluation import evaluate, format_report
    from SegSSLLib.volumes import read_label_map

    if args.json:
        check_output_path(args.json, (args.pred, args.truth), "JSON output", suffixes=(".json",))
    truth = read_label_map(args.truth, what="reference label map")
    pred = read_label_map(
        args.pred, reference=truth, what="predicted label map", reference_name="the reference label map"
    )
    metrics = evaluate(pred, truth, args.label)
    if args.json:  # first, so the file is complete even if a reader of stdout stops early
        write_text_atomically(args.json, strict_json.dumps(metrics, indent=2) + "\n", "JSON output")
    if progress.mode != "json":
        print(format_report(metrics))
    else:
        progress.emit("metrics", **metrics)
    if args.json:
        progress.output(args.json)
    return 0
