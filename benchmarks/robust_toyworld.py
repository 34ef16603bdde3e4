"""The attack × method table on the toy world: how easily does an erased concept come back?

Every method (Table 1's and SepME) erases the circle and the stripes (anchors by the fixed rule of
common.concept_cases; SepME takes none), once with its toy defaults and, where it has the option, once
with robust erasure on (`robust=true` with the toy world's robust settings, erasekit/toyworld/defaults.py).
Every attack (erasekit ls attacks) then runs against each patch at every budget of the curve
(--budgets, optimisation steps; Ring-A-Bell: generations) on the suite's first 8 target prompts × the
evaluation seeds; each row also carries target_rate, ssim_other and other_accuracy of the same patch on
the same seeds. A method's robustness is its rate at the largest budget (`recovery_rate*`); the curve
shows whether the rate still rises there.

Cost: the default budgets (50 / 150 / 500) are sized so that the whole table (32 rows) fits one
session's background run on the 2-core CPU (about 10 minutes a row on one thread); the seconds per
attacked prompt are recorded per attack and budget. Resumes by row: a rerun with the same arguments
keeps the rows already measured (same method, case, robust switch and config) and measures the rest.
Writes benchmarks/results/robust_toyworld.json (format: ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import common
from calibrate_toyworld import METHODS, method_id

from erasekit import api
from erasekit.eval.attack_names import ATTACKS, count_key
from erasekit.eval.results import write_result

CASES = ("circle", "striped")
GROUPS = ["target", "other"]
ROBUST_METHODS = ("abo", "ca", "esd-x", "esd-u", "sdd", "uce", "fmn", "sepme")  # methods with a robust option
# Table 1's methods and anchor rules, and SepME, which takes no anchor (one patch per concept)
TABLE_METHODS = {**METHODS, "sepme": ("none", {})}
TUNED = {
    "method settings": "the toy defaults layer, chosen per method on the calibration seeds (calibrate_toyworld.py)",
    "robust settings": "the toy defaults layer's robust_* values; see erasekit/toyworld/defaults.py for how "
                       "they were chosen",
    "attack settings": "each attack's defaults (the authors' where the toy world allows), never tuned on a rate",
    "budgets": "sized by cost (the table must fit a session on the 2-core CPU), never by a rate",
}


def row_request(label: str, name: str, robust: bool) -> tuple[dict, Any, dict]:
    """(the case, its erase request, the erase's values) of the table's row for method `label`, case `name`
    and the robust switch: the method's fixed values and anchor rule, robust=true when switched on."""
    rule, fixed = TABLE_METHODS[label]
    case = next(c for c in common.concept_cases(rule) if c["case"] == name)
    return case, common.case_request(case), {**fixed, **({"robust": True} if robust else {})}


def rows_done(path: Path) -> dict:
    if not path.exists():
        return {}
    return {(r["label"], r["case"], r["robust"]): r for r in json.loads(path.read_text())["runs"]}


def peak_before(curve: list[dict]) -> dict | None:
    """The smaller budget with the highest rate, where that rate lies above the largest budget's 95 % interval
    (the attack found more at a weaker budget than it kept), else None."""
    earlier = max(curve[:-1], key=lambda point: point["value"], default=None)
    return earlier if earlier is not None and earlier["value"] > curve[-1]["ci95"][1] else None


def recovery_cell(run: dict, metric: str) -> float | str:
    """An attack's rate at its largest budget, marked ↑ when its curve had not stopped rising, and followed by
    a smaller budget's rate where that was higher beyond noise (the rate read is the largest budget's)."""
    from erasekit.eval.evaluate import still_rising

    if metric not in run["metrics"]:
        return ""
    value, curve = run["metrics"][metric], run["attacks"][metric]["curve"]
    if still_rising(curve):
        return f"{value:.3f} ↑"
    peak = peak_before(curve)
    return f"{value:.3f} ({peak['value']:.2f} at {peak['budget']})" if peak else value


def table(runs: list[dict]) -> dict:
    """One README row per (method, robust, case), in method, case, plain-then-robust order: the erasure, every
    attack's rate at the largest budget, and what the patch keeps."""
    metrics = [a.metric for a in ATTACKS.values()]
    labels = list(TABLE_METHODS)
    ordered = sorted(runs, key=lambda r: (labels.index(r["label"]) if r["label"] in labels else len(labels),
                                          CASES.index(r["case"]), r["robust"]))
    rows = [[r["label"] + (" +robust" if r["robust"] else ""), r["case"], r["metrics"]["target_rate"],
             *[recovery_cell(r, m) for m in metrics], r["metrics"]["ssim_other"],
             r["metrics"]["other_accuracy"], r["metrics"]["other_accuracy_base"]] for r in ordered]
    return {"title": "recovery at the largest attack budget (evaluation seeds; ↑: the curve had not stopped "
                     "rising, a lower bound; (r at b): a smaller budget b recovered r, above this one's interval)",
            "columns": ["method", "case", "target_rate", *metrics, "ssim_other", "other_accuracy",
                        "other_accuracy_base"], "rows": rows}


def tables(runs: list[dict], seed_sets: list[list[int]]) -> list[dict]:
    """The views merge_results.py recomputes when it joins parts of this benchmark."""
    return [table(runs)]


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--methods", default=",".join(TABLE_METHODS))
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--budgets", default="50,150,500", help="the attack budget curve")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--robust", default="both", choices=("off", "on", "both"),
                        help="rows without robust erasure, with it (where a method has it), or both")
    parser.add_argument("--name", default="robust_toyworld")
    parser.add_argument("--extend", type=int, default=0, metavar="BUDGET",
                        help="then run again, up to this budget, every attack of the selected rows whose curve "
                             "had not stopped rising (below a rate of 1), its curve replaced by the longer one")
    args = parser.parse_args()
    seed_sets, model = common.setup(args)
    seeds = seed_sets[0]  # one seed set: the table is about the attacks, Table 1 about the spread
    path = Path(args.out) / f"{args.name}.json"
    done = rows_done(path)
    runs: list[dict] = list(done.values())
    switches = {"off": [False], "on": [True], "both": [False, True]}[args.robust]
    for label in args.methods.split(","):
        for name in args.cases.split(","):
            for robust in switches:
                if robust and label not in ROBUST_METHODS:
                    continue
                case, request, values = row_request(label, name, robust)
                resolved = api.resolve_config(method_id(label), model.profile, request, values,
                                              family=model.family.name)
                config = common.config_key(resolved.config)
                earlier = done.get((label, name, robust))
                if earlier is not None and common.same_config(earlier["config"], resolved.config):
                    continue
                patch, seconds, _ = common.erase_timed(model, method_id(label), request, values)
                patches = patch if isinstance(patch, list) else [patch]
                result = api.evaluate(model, patches, case["suite"], seeds=seeds, steps=args.steps, progress=False,
                                      groups=GROUPS, attack=args.attacks, attack_steps=args.budgets)
                result["details"].pop("detector", None)
                run = {"label": label, "case": name, "kind": case["kind"], "robust": robust, "seeds": seeds,
                       "concepts": request.concepts, "anchors": request.anchors, "config": config,
                       "config_sources": resolved.sources, "seconds": round(seconds, 1),
                       "patch_info": {k: v for k, v in patches[0].info.items() if k in ("robust", "reused")},
                       "metrics": {k: v for k, v in result["metrics"].items() if not k.startswith(("fid", "kid"))},
                       "attacks": {ATTACKS[a].metric: result["details"][ATTACKS[a].metric]
                                   for a in args.attacks.split(",")}}
                runs = [r for r in runs if (r["label"], r["case"], r["robust"]) != (label, name, robust)] + [run]
                print(label, name, "robust" if robust else "plain",
                      {k: round(v, 3) for k, v in run["metrics"].items() if k.startswith(("target_rate", "recovery",
                                                                                          "ssim_other"))},
                      flush=True)
                write_rows(runs, seeds, args)
    if args.extend:
        selected = [r for r in runs if r["label"] in args.methods.split(",") and r["case"] in args.cases.split(",")
                    and r["robust"] in switches]
        for row in selected:
            extend_rising(model, row, seeds, args)
            write_rows(runs, seeds, args)


def write_rows(runs: list[dict], seeds: list[int], args) -> None:
    write_result(args.name, runs, out_dir=args.out,
                 extra={**common.protocol(TUNED), "evaluation_seeds": [seeds], "budgets": args.budgets,
                        "attacks": args.attacks.split(","), "attack_prompts": 8, "tables": [table(runs)],
                        **({"extended_to": args.extend} if args.extend else {})})


def rising_attacks(row: dict, budget: int) -> list[str]:
    """The row's attacks whose curve had not stopped rising at a rate below 1 and a largest budget below `budget`
    (a rate of 1 cannot rise further)."""
    from erasekit.eval.evaluate import still_rising

    return [detail["attack"] for detail in row["attacks"].values()
            if still_rising(detail["curve"]) and detail["curve"][-1]["value"] < 1
            and detail["curve"][-1]["budget"] < budget]


def extend_rising(model, row: dict, seeds: list[int], args) -> None:
    """Run the row's still-rising attacks again on the same patch (the cached erase of the same config), with
    `args.extend` added to the curve; the longer curve replaces the shorter, and the row records whether its
    earlier budgets came out as before (the attacks are deterministic per seed, so they should)."""
    names = rising_attacks(row, args.extend)
    if not names:
        return
    case, request, values = row_request(row["label"], row["case"], row["robust"])
    patch, _, resolved = common.erase_timed(model, method_id(row["label"]), request, values)
    if not common.same_config(row["config"], resolved.config):
        raise SystemExit(f"{row['label']} {row['case']}: the toy defaults changed since this row; measure it anew")
    for name in names:
        metric = ATTACKS[name].metric
        before = row["attacks"][metric]["curve"]
        budgets = [point["budget"] for point in before] + [args.extend]
        result = api.evaluate(model, patch if isinstance(patch, list) else [patch], case["suite"], seeds=seeds,
                              steps=args.steps, progress=False, groups=["target"], attack=name,
                              attack_steps=budgets)
        detail = result["details"][metric]
        detail["reproduced"] = all(abs(a["value"] - b["value"]) < 1e-9
                                   for a, b in zip(before, detail["curve"][:len(before)], strict=True))
        row["attacks"][metric] = detail
        row["metrics"].update({k: result["metrics"][k] for k in (metric, count_key(metric))})
        print(row["label"], row["case"], "robust" if row["robust"] else "plain", name, "extended:",
              [(point["budget"], round(point["value"], 3)) for point in detail["curve"]],
              "reproduced" if detail["reproduced"] else "NOT reproduced", flush=True)


if __name__ == "__main__":
    main()
