"""`idgbr evaluate`: score predictions against ground truth (region, boundary and repair
metrics), print a table like the IDGBR paper's and optionally write the numbers as JSON."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score predicted class maps against ground truth",
        description="Each of --pred/--gt/--coarse is a folder of class-index PNG/GeoTIFF tiles "
                    "matched by file name, or a single GeoTIFF (scored in 512x512 windows).")
    p.add_argument("--pred", required=True, type=Path, help="predicted (refined) class maps")
    p.add_argument("--gt", required=True, type=Path, help="ground-truth class maps")
    p.add_argument("--coarse", type=Path, help="coarse maps before refinement: adds repair/preservation IoU")
    p.add_argument("--num-classes", type=int, metavar="K",
                   help="number of classes (default: largest class id found + 1)")
    p.add_argument("--ignore-index", type=int, metavar="I", help="ground-truth value to leave out")
    p.add_argument("--binary-255", choices=("auto", "on", "off"), default="auto",
                   help="read 0/255 masks as classes 0/1: auto (default) does it for each source "
                        "holding only 0 and 255, and says so")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the results to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..evaluate import evaluate_paths
    from ..io.outputs import write_json_report

    if args.num_classes is not None and args.num_classes < 1:
        raise InputError("--num-classes must be at least 1")
    result = evaluate_paths(args.pred, args.gt, args.coarse, num_classes=args.num_classes,
                            ignore_index=args.ignore_index, binary_255=args.binary_255)
    print(format_table(result))
    if args.json:
        print(f"results written to {write_json_report(args.json, result)}")
    return 0


def format_table(result: dict) -> str:
    """The paper's layout, in percent: per-class IoU/F1/boundary F@3, then the summary."""
    def pct(v: float | None) -> str:
        return "   n/a" if v is None else f"{100 * v:6.2f}"

    lines = [f"{result['num_tiles']} tiles, {result['num_classes']} classes"
             + ("" if result["ignore_index"] is None else f", ignore index {result['ignore_index']}"),
             "class     IoU     F1   BF@3"]
    lines += [f"{c['class_id']:5d}  {pct(c['iou'])} {pct(c['f1'])} {pct(c['boundary_f3'])}"
              for c in result["per_class"]]
    summary = [("mIoU", "miou"), ("mF1", "mf1"), ("OA", "oa"), ("kappa", "kappa"),
               ("WFm(3px B)", "wfm_band3"), ("WFm strict", "wfm_band3_strict")]
    if "repair_iou" in result:
        summary += [("repair IoU", "repair_iou"), ("preserve IoU", "preserve_iou")]
    lines.append("  ".join(f"{name} {pct(result[key]).strip()}" for name, key in summary))
    for name, key in (("boundary F  ", "boundary_f"), ("boundary IoU", "boundary_iou")):
        lines.append(name + "".join(f"  @{d}px {pct(v).strip()}" for d, v in result[key].items()))
    return "\n".join(lines)
