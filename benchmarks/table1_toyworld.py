"""Table 1 on the toy world: every method erases every concept in turn — each shape (anchored by the
method's fixed rule, common.concept_cases), the implicit stripes and one colour — with one setting per
method (the toy world's defaults layer, chosen on the calibration seeds by calibrate_toyworld.py), and
is measured on two disjoint evaluation seed sets that took no part in any choice.

Reports per concept, plus per method and seed set the mean and the worst concept over the shapes.
Writes benchmarks/results/table1_toyworld.json (format: ../shared/BENCHMARKS.md) after every case; a rerun
with the same --name keeps the cases a stopped run measured with the same config and measures the rest.
"""

from __future__ import annotations

from pathlib import Path

import common
from calibrate_toyworld import METHODS, method_id
from common import run_case

from erasekit.eval.results import write_result
from erasekit.eval.suites import resolve_suite

TUNED = {
    "lr, steps": "per method, one setting for every concept: calibrate_toyworld.py on the calibration seeds "
                 "(benchmarks/results/calibration_<method>_<model>.json where present; otherwise the toy "
                 "defaults carried over from earlier sessions, which were chosen on seeds 0-3: marked "
                 "'calibrated': false in the run)",
    "anchors": "a fixed rule per method in common.concept_cases (next shape / solid / next colour); ca's "
               "next-shape rule was chosen over 'thing' on the calibration seeds "
               "(benchmarks/results/calibration_ca_toyworld_anchor.json)",
}
SUMMARY_KEYS = ("target_rate", "ssim_other", "other_accuracy")
SUMMARY_GROUPS = ("target", "implicit", "other")  # the prompt groups those read (implicit: the stripes')


def calibrated(method: str, model: str) -> bool:
    """Whether `method` has a calibration on this toy world's own calibration seeds (its result file)."""
    return (Path(__file__).parent / "results" / f"{common.result_name(f'calibration_{method}', model)}.json").exists()


def tables(runs: list[dict], seed_sets: list[list[int]]) -> list[dict]:
    """The README's views of the runs: mean and worst over the shapes per method and seed set, and each
    concept's target rate (first seed set)."""
    labels = list(dict.fromkeys(r["label"] for r in runs))
    order = [c["case"] for c in common.concept_cases("none")]
    cases = sorted(dict.fromkeys(r["case"] for r in runs), key=order.index)
    summary_rows, concept_rows = [], []
    for label in labels:
        for i, seeds in enumerate(seed_sets):
            shapes = [r for r in runs if r["label"] == label and r["seed_set"] == i and r["kind"] == "shape"]
            if not shapes:
                continue
            s = common.summarize(shapes, SUMMARY_KEYS)
            base = sum(r["metrics"]["other_accuracy_base"] for r in shapes) / len(shapes)
            summary_rows.append([label, f"{seeds[0]}-{seeds[-1]}", len(shapes), s["target_rate_mean"],
                                 s["target_rate_worst"], s["ssim_other_mean"], s["other_accuracy_mean"], base])
        first = {r["case"]: r["metrics"]["target_rate"] for r in runs if r["label"] == label and r["seed_set"] == 0}
        concept_rows.append([label, *[first.get(c, "") for c in cases]])
    return [
        {"title": "shapes: mean and worst concept",
         "columns": ["method", "seeds", "shapes", "target_rate mean", "target_rate worst", "ssim_other mean",
                     "other_accuracy mean", "other_accuracy_base mean"], "rows": summary_rows},
        {"title": f"target_rate per concept (seeds {seed_sets[0][0]}-{seed_sets[0][-1]})",
         "columns": ["method", *cases], "rows": concept_rows},
    ]


def same_erasure(run: dict, other: dict) -> bool:
    """Whether two runs' recorded configs are the same erasure (common.same_config; a run that records no
    config, as in a hand-made view, is taken as it is)."""
    if "config" not in run or "config" not in other:
        return True
    from erasekit.registry import get_method
    from erasekit.request import build_config

    config = build_config(get_method(method_id(run["label"])).config_class, run["config"])
    return common.same_config(other["config"], config)


def comparison(runs: list[dict], reference: dict) -> dict:
    """A view of these runs next to the same method, case, anchors and seeds in another Table-1 file (e.g.
    the v-prediction world against the ε one): target rates with 95 % Wilson intervals, whether they
    overlap, and the ssim_other difference. Runs with another anchor or another config (same_erasure)
    are not the same erasure: left out."""
    from erasekit.eval.metrics import wilson_interval

    def rate(m):
        lo, hi = wilson_interval(round(m["target_rate"] * m["n_target"]), m["n_target"])
        return m["target_rate"], lo, hi

    def key(r: dict) -> tuple:
        return r["label"], r["case"], tuple(r.get("anchors") or ()), tuple(r["seeds"])

    theirs = {key(r): r for r in reference["runs"] if "label" in r}
    rows = []
    for r in runs:
        found = theirs.get(key(r))
        if found is None or not same_erasure(r, found):
            continue
        other = found["metrics"]
        (a, alo, ahi), (b, blo, bhi) = rate(other), rate(r["metrics"])
        rows.append([r["label"], r["case"], f"{a:.3f} [{alo:.2f}, {ahi:.2f}]", f"{b:.3f} [{blo:.2f}, {bhi:.2f}]",
                     "yes" if alo <= bhi and blo <= ahi else "no", other["ssim_other"], r["metrics"]["ssim_other"]])
    return {"title": f"against {reference['benchmark']} (same method, case, anchors and seeds)",
            "columns": ["method", "case", f"target_rate {reference['benchmark']}", "target_rate here",
                        "CIs overlap", f"ssim_other {reference['benchmark']}", "ssim_other here"], "rows": rows}


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--cases", default=None,
                        help="comma-separated case names, run in that order (default: every concept)")
    parser.add_argument("--attack-steps", type=int, default=100, help="Concept Inversion steps (0: none)")
    parser.add_argument("--attack-cases", default="circle", help="cases that also run the attack (first seed set)")
    parser.add_argument("--every-set-cases", default=None,
                        help="cases measured on every --seeds set; the others on the first set only (default: all)")
    parser.add_argument("--every-group-cases", default=None,
                        help="cases measured on every prompt group; the others on the groups the summary reads "
                        f"({', '.join(SUMMARY_GROUPS)}) (default: all)")
    parser.add_argument("--patches", default=".cache/erasekit/table1-patches",
                        help="where each run's patch is kept (benchmarks/table1_grid.py draws from them)")
    parser.add_argument("--name", default="table1_toyworld", help="result file name (parts are merged later)")
    parser.add_argument("--compare-to", default=None,
                        help="another Table-1 result file name (e.g. table1_toyworld) to set these runs against")
    args = parser.parse_args()
    seed_sets, model = common.setup(args)
    Path(args.patches).mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    earlier = common.earlier_runs(args.name, args.out)  # a stopped run resumes where it stopped
    for label in args.methods.split(","):
        rule, fixed = METHODS[label]
        cases = common.concept_cases(rule)
        if args.cases:  # in the order given (two processes can walk the cases from opposite ends)
            by_name = {c["case"]: c for c in cases}
            cases = [by_name[name] for name in args.cases.split(",")]
        for case in cases:
            attack = args.attack_steps if case["case"] in args.attack_cases.split(",") else 0
            every = args.every_set_cases is None or case["case"] in args.every_set_cases.split(",")
            all_groups = args.every_group_cases is None or case["case"] in args.every_group_cases.split(",")
            groups = None if all_groups else [g for g in SUMMARY_GROUPS if g in resolve_suite(case["suite"]).groups]
            entries = run_case(model, method_id(label), common.case_request(case), fixed, case["suite"],
                               seed_sets if every else seed_sets[:1],
                               args.steps, label={"label": label, "case": case["case"], "kind": case["kind"],
                                                  "calibrated": calibrated(label, args.model)},
                               attack_steps=attack, save_to=f"{args.patches}/{label}-{case['case']}.safetensors",
                               groups=groups, earlier=earlier)
            runs.extend(entries)
            for entry in entries:
                print(label, case["case"], entry["seeds"][0], {k: round(v, 3) for k, v in entry["metrics"].items()
                                                               if k in (*SUMMARY_KEYS, "recovery_rate")}, flush=True)
            # The comparison is drawn when the README is rendered (make_tables.py), from both files as they are.
            write_result(args.name, runs, out_dir=args.out,
                         extra={**common.protocol(TUNED), "evaluation_seeds": seed_sets,
                                "tables": tables(runs, seed_sets),
                                **({"compare_to": args.compare_to} if args.compare_to else {})})


if __name__ == "__main__":
    main()
