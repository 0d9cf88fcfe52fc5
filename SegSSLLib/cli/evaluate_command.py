"""``segssl evaluate``: Dice and 95% Hausdorff distance per label."""

from __future__ import annotations

from SegSSLLib.cli.common import positive_label
from SegSSLLib.volumes import check_output_path

HELP = "Dice and 95% Hausdorff distance (mm) of a predicted label map against a reference"


def configure(parser) -> None:
    parser.add_argument(
        "--pred", required=True,
        help="predicted label map; or a folder of them, paired with --truth's cases by name",
    )
    parser.add_argument(
        "--truth", required=True,
        help="reference label map on the same grid; or a folder of them (or an MSD data set) when --pred is a folder",
    )
    parser.add_argument(
        "--label",
        type=positive_label,
        action="append",
        metavar="N",
        help="label value to score, N >= 1 (repeatable; default: every non-zero value in --pred or --truth, "
        "so a label found only in one map scores Dice 0)",
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--csv", help="folders only: also write one row per case and label (case,label,dice,hd95_mm) to this CSV file"
    )
    parser.add_argument(
        "--worst", type=int, default=5, metavar="N", help="folders only: list the N cases of lowest mean Dice (default 5)"
    )


def run(args, progress) -> int:
    from SegSSLLib import strict_json
    from SegSSLLib.atomic import write_text_atomically
    from SegSSLLib.dataset_runs import is_dataset_folder
    from SegSSLLib.errors import SegSSLError
    from SegSSLLib.evaluation import evaluate, format_report
    from SegSSLLib.volumes import read_label_map

    if is_dataset_folder(args.pred) or is_dataset_folder(args.truth):
        return _run_folders(args, progress)
    if args.csv:
        raise SegSSLError("--csv is for folders of predictions; for one pair use --json FILE")
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


def _run_folders(args, progress) -> int:
    """Every case of ``--pred DIR`` against the case of the same name in ``--truth DIR``."""
    import csv
    import io
    import logging

    from SegSSLLib import strict_json
    from SegSSLLib.atomic import write_text_atomically
    from SegSSLLib.cli.dataset_mode import finish, rank_progress
    from SegSSLLib.dataset_runs import case_processes, is_dataset_folder, is_main_process
    from SegSSLLib.datasets import load_dataset
    from SegSSLLib.errors import SegSSLError
    from SegSSLLib.evaluation import CSV_COLUMNS, case_rows, evaluate_folders, format_dataset_report

    for flag, path in (("--pred", args.pred), ("--truth", args.truth)):
        if not is_dataset_folder(path):
            raise SegSSLError(
                f"{flag} {path} is not a folder of label maps, but the other one is — give two folders "
                "(cases are paired by file name) or two label map files"
            )
    if args.worst < 0:
        raise SegSSLError(f"--worst must be 0 or more, got {args.worst}")
    folders = (args.pred, args.truth)
    if args.json:
        check_output_path(args.json, folders, "JSON output", suffixes=(".json",))
    if args.csv:
        check_output_path(args.csv, folders, "CSV output", suffixes=(".csv",))
    with case_processes():
        progress = rank_progress(progress)
        evaluation = evaluate_folders(args.pred, args.truth, args.label, args.worst, progress, ("--pred", "--truth"))
    report = evaluation.report
    if is_main_process():
        if args.json:
            write_text_atomically(args.json, strict_json.dumps(report, indent=2) + "\n", "JSON output")
        if args.csv:
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(case_rows(report["cases"]))
            write_text_atomically(args.csv, text.getvalue(), "CSV output")
        if progress.mode != "json":
            print(format_dataset_report(report, load_dataset(args.truth).label_names))
        else:
            progress.emit("metrics", **report)
        if report["missing"] or report["extra"]:
            logging.getLogger("segssl").warning(
                "%d reference(s) without prediction, %d prediction(s) without reference (listed above)",
                len(report["missing"]), len(report["extra"]),
            )
        for path in (args.json, args.csv):
            if path:
                progress.output(path)
    return finish(evaluation.run, progress, "scored")
