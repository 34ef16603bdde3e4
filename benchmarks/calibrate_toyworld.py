"""Choose one toy-world setting per method on the calibration seeds, over every concept.

For each grid point (e.g. --grid lr=5e-4,1e-3 --grid steps=200), erase every toy concept in turn
(each shape, anchored by the method's fixed rule, the stripes and the colour case of
common.concept_cases), evaluate the target and other prompts on the calibration seeds only (10–13),
and pick the setting by the rule below, fixed before any run. The evaluation seeds (0–3, 20–23) are
never touched here. The chosen values go into erasekit/toyworld/defaults.py by hand, citing the file.

Rule: among grid points whose mean ssim_other ≥ 0.85 and whose mean other_accuracy is within 0.03 of
the base's, the lowest mean target_rate, then the lowest worst-concept target_rate, then the first
in grid order. With no point admissible, the one with the highest mean ssim_other.

Writes benchmarks/results/calibration_<method>_toyworld.json (format: ../shared/BENCHMARKS.md) after
every case, so a stopped calibration resumes: a rerun with the same arguments keeps the cases already
measured (same grid point, same case, same config) and measures only the rest.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import common

from erasekit import api
from erasekit.eval.results import write_result

# Where results go, wherever the script is started from (the repo root or benchmarks/).
RESULTS = Path(__file__).resolve().parent / "results"

# Each method's anchor rule (common.concept_cases) and the values every grid point shares.
METHODS = {
    "abo": ("next", {}),
    "ca": ("superset", {}),
    "esd-x": ("none", {"variant": "x"}),
    "esd-u": ("none", {"variant": "u"}),
    "sdd": ("none", {}),
    "uce": ("next", {}),
    "fmn": ("none", {}),
}
GROUPS = ("target", "other")  # what the choice reads; the other groups are left to the evaluation
SSIM_MIN, ACCURACY_DROP_MAX = 0.85, 0.03


def method_id(label: str) -> str:
    return label.split("-")[0]


def parse_grid(items: list[str]) -> list[dict]:
    """['lr=5e-4,1e-3', 'steps=200'] → every combination, as text the config types itself."""
    axes = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep:
            raise SystemExit(f"bad --grid {item!r}: expected KEY=V1,V2")
        axes.append([(key, v) for v in values.split(",")])
    return [dict(point) for point in itertools.product(*axes)] or [{}]


def evaluate_case(model, patch, case, seeds, steps) -> dict:
    result = api.evaluate(model, [patch], case["suite"], seeds=seeds, steps=steps, progress=False,
                          groups=list(GROUPS))
    return {k: v for k, v in result["metrics"].items() if not k.startswith(("fid", "kid"))}


def measured_cases(path: Path) -> dict:
    """(grid point as JSON, case) → the run already written by an earlier, stopped calibration."""
    if not path.exists():
        return {}
    done = {}
    for point in json.loads(path.read_text())["runs"]:
        for run in point["per_concept"]:
            done[(json.dumps(point["grid"], sort_keys=True), run["case"])] = run
    return done


def choose(points: list[dict]) -> int:
    """The index of the chosen grid point (the module docstring's rule)."""
    def admissible(p):
        s = p["summary"]
        return s["ssim_other_mean"] >= SSIM_MIN and s["accuracy_drop_mean"] <= ACCURACY_DROP_MAX

    ok = [i for i, p in enumerate(points) if admissible(p)]
    if not ok:
        return max(range(len(points)), key=lambda i: points[i]["summary"]["ssim_other_mean"])
    return min(ok, key=lambda i: (points[i]["summary"]["target_rate_mean"], points[i]["summary"]["target_rate_worst"],
                                  i))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True, choices=sorted(METHODS))
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a config axis to search (repeatable); none: the current toy defaults alone")
    parser.add_argument("--model", default="toyworld")
    parser.add_argument("--cases", default=None, help="comma-separated case names (default: every concept)")
    parser.add_argument("--steps", type=int, default=35, help="DDIM steps when evaluating")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--tag", default=None,
                        help="suffix of the result name (a probe of some cases, kept apart from the calibration)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = api.parse_seeds(common.CALIBRATION_SEEDS)
    model = api.load_model(args.model, device="cpu")
    rule, fixed = METHODS[args.method]
    cases = [c for c in common.concept_cases(rule) if args.cases is None or c["case"] in args.cases.split(",")]
    name = f"calibration_{args.method}_{common.result_name('x', args.model).split('_', 1)[1]}"
    if args.tag:
        name += f"_{args.tag}"
    grid = parse_grid(args.grid)
    earlier = measured_cases(Path(args.out) / f"{name}.json")
    points: list[dict] = []
    for values in grid:
        runs: list[dict] = []
        points.append({"grid": values, "runs": runs})
        for case in cases:
            request = common.case_request(case)
            resolved = api.resolve_config(method_id(args.method), model.profile, request, {**fixed, **values},
                                          family=model.family.name)
            config = common.config_key(resolved.config)
            run = earlier.get((json.dumps(values, sort_keys=True), case["case"]))
            if run is None or run["config"] != config:
                patch, seconds, _ = common.erase_timed(model, method_id(args.method), request, {**fixed, **values})
                metrics = evaluate_case(model, patch, case, seeds, args.steps)
                run = {"case": case["case"], "kind": case["kind"], "concepts": request.concepts,
                       "anchors": request.anchors, "config": config, "seconds": round(seconds, 1),
                       "metrics": metrics}
            runs.append(run)
            print(args.method, values, case["case"], {k: round(v, 3) for k, v in run["metrics"].items()
                                                      if k in ("target_rate", "ssim_other", "other_accuracy")},
                  flush=True)
            whole = len(points) == len(grid) and len(runs) == len(cases)
            write_points(name, args.method, points, model, seeds, complete=whole, out_dir=args.out)


def write_points(name: str, method: str, points: list[dict], model, seeds: list[int], complete: bool,
                 out_dir: str) -> None:
    """Write every point measured so far (a point's summary over the cases it has); choose among the whole ones."""
    for p in points:
        p["summary"] = common.summarize(p["runs"])
        p["summary"]["accuracy_drop_mean"] = sum(r["metrics"]["other_accuracy_base"] - r["metrics"]["other_accuracy"]
                                                 for r in p["runs"]) / len(p["runs"])
    whole = [p for p in points if len(p["runs"]) == len(points[0]["runs"])] if len(points) > 1 else points
    write_result(name, [{"method": method, "model": model.source, "grid": p["grid"], "seeds": seeds,
                         "cases": len(p["runs"]), "summary": p["summary"], "per_concept": p["runs"]} for p in points],
                 out_dir=out_dir,
                 extra={"calibration_seeds": seeds, "rule": __doc__.split("Rule: ")[1].split("\n\n")[0],
                        "chosen": whole[choose(whole)]["grid"], "complete": complete})


if __name__ == "__main__":
    main()
