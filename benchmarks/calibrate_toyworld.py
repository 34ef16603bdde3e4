"""Choose one toy-world setting per method on the calibration seeds, over every concept.

For each grid point (e.g. --grid lr=5e-4,1e-3 --grid steps=200), erase every toy concept in turn
(each shape, anchored by the method's fixed rule, the stripes and the colour case of
common.concept_cases), evaluate the target and other prompts on the calibration seeds only (10–13),
and pick the setting by the rule below, fixed before any run. The evaluation seeds (0–3, 20–23) are
never touched here. The chosen values go into erasekit/toyworld/defaults.py by hand, citing the file.
The anchor rule is searched like a config value (--grid anchor_rule=superset,next); the chosen rule goes
into METHODS below, which the table scripts read.

Rule: among grid points whose mean ssim_other ≥ 0.85 and whose mean other_accuracy is within 0.03 of
the base's, the lowest mean target_rate, then the lowest worst-concept target_rate, then the first
in grid order. With no point admissible, the one with the highest mean ssim_other.

Robust rule (with --attack, for robust erasure's settings): among grid points whose mean ssim_other
≥ 0.90 and whose mean other_accuracy is within 0.03 of the base's (the robustness issue's preservation
bars), the lowest mean recovery rate of the attack at its budget, then the lowest mean target_rate,
then the first in grid order. With no point admissible, the one with the highest mean ssim_other.
With several attacks (--attack concept-inversion,p4d), restarts (--attack-seeds 0-3) or a budget curve
(--attack-steps 50,150,500), the rate read is the attacker's best per case, `best_recovery_rate`: the
highest over every attack, restart and budget (an attacker keeps whichever brought the concept back).

Cost rule (with --rule cost, for settings that change what an erase costs, not what it optimises: the
trajectory pool's size and refresh, the batch): among admissible points (as above) that meet the
every-concept bars (mean target_rate ≤ 0.15, worst ≤ 0.30), the lowest mean erase seconds, then the
lowest mean target_rate, then the first in grid order. With none meeting them, the first rule.

Per kind (with --per-kind): the same rule applied to each kind of concept's cases alone (shape, pattern,
colour), for settings the toy world's defaults layer keys by kind; `chosen` then names a point per kind.

Preservation rule (with --rule preservation, for terms that trade erasure for preservation, such as a prior
or retain weight): among admissible points that meet the every-concept bars, the highest mean ssim_other,
then the lowest mean target_rate, then the first in grid order. With none meeting them, the first rule.

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
from erasekit.errors import ErasekitError
from erasekit.eval.attack_names import ATTACKS, parse_attacks, parse_budgets
from erasekit.eval.results import write_result

# Where results go, wherever the script is started from (the repo root or benchmarks/).
RESULTS = Path(__file__).resolve().parent / "results"

# Each method's anchor rule (common.concept_cases) and the values every grid point shares.
METHODS = {
    "abo": ("next", {}),
    "ca": ("next", {}),  # calibration_ca_toyworld_anchor.json: "thing" is itself drawn as a triangle
    "esd-x": ("none", {"variant": "x"}),
    "esd-u": ("none", {"variant": "u"}),
    "sdd": ("none", {}),
    "uce": ("next", {}),
    "fmn": ("none", {}),
}
# A --grid key that is not a config field: the anchor rule of common.concept_cases ('next', 'superset', 'none')
ANCHOR_RULE = "anchor_rule"
GROUPS = ("target", "other")  # what the choice reads; the other groups are left to the evaluation
SSIM_MIN, ACCURACY_DROP_MAX = 0.85, 0.03
ROBUST_SSIM_MIN = 0.90
MEAN_MAX, WORST_MAX = 0.15, 0.30  # the every-concept bars the cost rule asks of a cheaper setting


def method_id(label: str) -> str:
    return label.split("-")[0]


def parse_grid(items: list[str]) -> list[dict]:
    """['lr=5e-4,1e-3', 'steps=200'] → every combination, as text the config types itself ('a+b=1+2,3+4':
    a joint axis whose values go together)."""
    axes = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep:
            raise SystemExit(f"bad --grid {item!r}: expected KEY=V1,V2")
        keys = key.split("+")  # a joint axis: pool_size+pool_refresh=64+200,32+300 (no cross product)
        parts = [v.split("+") for v in values.split(",")]
        if any(len(p) != len(keys) for p in parts):
            raise SystemExit(f"bad --grid {item!r}: each value needs {len(keys)} parts joined by '+'")
        axes.append([dict(zip(keys, p, strict=True)) for p in parts])
    return [{k: v for part in point for k, v in part.items()} for point in itertools.product(*axes)] or [{}]


BEST = "best_recovery_rate"  # the attacker's best over attacks, restarts and budgets (ends in _rate: worst = max)


def evaluate_case(model, patch, case, seeds, steps, attacks: list[str] = (), budgets: list[int] = (),
                  attack_seeds: list[int] = (0,)) -> tuple[dict, dict]:
    """(the case's metrics, each attack's rate per restart and budget: {metric: {seed: [rate per budget]}}).
    The first restart's evaluation gives every metric; later restarts draw the target prompts' attacks only."""
    metrics: dict = {}
    restarts: dict[str, dict[str, list[float]]] = {}
    for i, attack_seed in enumerate(attack_seeds if attacks else [0]):
        result = api.evaluate(model, [patch], case["suite"], seeds=seeds, steps=steps, progress=False,
                              groups=list(GROUPS) if i == 0 else ["target"],
                              attack=",".join(attacks) or "concept-inversion", attack_steps=budgets if attacks else 0,
                              attack_settings={a: {"seed": attack_seed} for a in attacks})
        if i == 0:
            metrics = {k: v for k, v in result["metrics"].items() if not k.startswith(("fid", "kid"))}
        for key, detail in result["details"].items():
            if isinstance(detail, dict) and "curve" in detail:
                restarts.setdefault(key, {})[str(attack_seed)] = [c["value"] for c in detail["curve"]]
    if restarts:
        metrics[BEST] = max(v for per in restarts.values() for curve in per.values() for v in curve)
    return metrics, restarts


def recovery_key(attacks: list[str], budgets: list[int], attack_seeds: list[int]) -> str | None:
    """The rate the robust rule reads: one attack's at its one budget, or the attacker's best (BEST)."""
    if not attacks:
        return None
    single = len(attacks) == 1 and len(attack_seeds) == 1 and len(budgets) == 1
    return ATTACKS[attacks[0]].metric if single else BEST


def measured_cases(paths: list[Path]) -> list[dict]:
    """The runs earlier calibrations of this method and model wrote, a stopped one or another tag's (a grid
    point spelled differently but giving the same config and anchors reuses its runs: common.same_config)."""
    return [run for path in paths for point in json.loads(path.read_text())["runs"] for run in point["per_concept"]]


def admissible(summary: dict, ssim_min: float = SSIM_MIN) -> bool:
    """The preservation bars every rule asks first."""
    return summary["ssim_other_mean"] >= ssim_min and summary["accuracy_drop_mean"] <= ACCURACY_DROP_MAX


def meets_bars(summary: dict, ssim_min: float = SSIM_MIN) -> bool:
    """Admissible and within the every-concept bars (mean and worst target rate)."""
    return (admissible(summary, ssim_min) and summary["target_rate_mean"] <= MEAN_MAX
            and summary["target_rate_worst"] <= WORST_MAX)


def choose(points: list[dict], recovery: str | None = None, rule: str = "erasure") -> int:
    """The index of the chosen grid point (the module docstring's rule; its robust rule when `recovery`
    names the attack's metric; its cost or preservation rule by `rule`)."""
    ssim_min = ROBUST_SSIM_MIN if recovery else SSIM_MIN
    good = [i for i, p in enumerate(points) if meets_bars(p["summary"], ssim_min)]
    first = {"cost": lambda s: s["seconds_mean"], "preservation": lambda s: -s["ssim_other_mean"]}.get(rule)
    if first and good:
        return min(good, key=lambda i: (first(points[i]["summary"]), points[i]["summary"]["target_rate_mean"], i))

    def order(i):
        s = points[i]["summary"]
        if recovery:
            return s[f"{recovery}_mean"], s["target_rate_mean"], i
        return s["target_rate_mean"], s["target_rate_worst"], i

    ok = [i for i, p in enumerate(points) if admissible(p["summary"], ssim_min)]
    if not ok:
        return max(range(len(points)), key=lambda i: points[i]["summary"]["ssim_other_mean"])
    return min(ok, key=order)


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
    parser.add_argument("--attack", default=None, metavar="NAME[,NAME...]",
                        help=f"also run these attacks ({', '.join(sorted(ATTACKS))}) on every patch and "
                             "choose by the robust rule")
    parser.add_argument("--attack-steps", default="500",
                        help="the attacks' budget, or a budget curve such as 50,150,500 (with --attack)")
    parser.add_argument("--attack-seeds", default="0",
                        help="the attacks' restarts, e.g. 0-3 (with --attack; several: the best one counts)")
    parser.add_argument("--rule", choices=("erasure", "cost", "preservation"), default="erasure",
                        help="cost: the cheapest point meeting the bars (for pool and batch settings); "
                             "preservation: the best-preserving point meeting them (for prior/retain weights)")
    parser.add_argument("--per-kind", action="store_true",
                        help="choose per kind of concept (shape, pattern, colour) by the same rule")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = api.parse_seeds(common.CALIBRATION_SEEDS)
    model = api.load_model(args.model, device="cpu")
    default_rule, fixed = METHODS[args.method]
    name = f"calibration_{args.method}_{common.result_name('x', args.model).split('_', 1)[1]}"
    if args.tag:
        name += f"_{args.tag}"
    grid = parse_grid(args.grid)
    try:
        attacks = parse_attacks(args.attack) if args.attack else []
        attack_seeds = api.parse_seeds(args.attack_seeds)
        budgets = parse_budgets(args.attack_steps)
    except ErasekitError as e:
        raise SystemExit(f"error: {e}") from None
    recovery = recovery_key(attacks, budgets, attack_seeds)
    # what a reused run's best_recovery_rate must have been measured over
    spec = {"attacks": attacks, "budgets": budgets, "seeds": attack_seeds} if recovery == BEST else None
    stem = name.removesuffix(f"_{args.tag}") if args.tag else name
    out = Path(args.out)
    earlier = measured_cases(sorted(out.glob(f"{stem}.json")) + sorted(out.glob(f"{stem}_*.json")))
    points: list[dict] = []
    for point in grid:
        runs: list[dict] = []
        points.append({"grid": point, "runs": runs})
        # The anchor rule is a setting like any other (chosen on these seeds), but it shapes the request
        values = {k: v for k, v in point.items() if k != ANCHOR_RULE}
        cases = [c for c in common.concept_cases(point.get(ANCHOR_RULE, default_rule))
                 if args.cases is None or c["case"] in args.cases.split(",")]
        for case in cases:
            request = common.case_request(case)
            resolved = api.resolve_config(method_id(args.method), model.profile, request, {**fixed, **values},
                                          family=model.family.name)
            config = common.config_key(resolved.config)
            run = next((r for r in earlier if r["case"] == case["case"] and r["anchors"] == request.anchors
                        and common.same_config(r["config"], resolved.config)), None)
            if run is None or (recovery and recovery not in run["metrics"]) or run.get("attack_spec") != spec:
                patch, seconds, _ = common.erase_timed(model, method_id(args.method), request, {**fixed, **values})
                metrics, restarts = evaluate_case(model, patch, case, seeds, args.steps, attacks, budgets,
                                                  attack_seeds)
                run = {"case": case["case"], "kind": case["kind"], "concepts": request.concepts,
                       "anchors": request.anchors, "config": config, "seconds": round(seconds, 1),
                       "metrics": metrics, **({"attack_spec": spec, "restarts": restarts} if spec else {})}
            runs.append(run)
            print(args.method, point, case["case"], {k: round(v, 3) for k, v in run["metrics"].items()
                                                      if k in ("target_rate", "ssim_other", "other_accuracy",
                                                               recovery)},
                  flush=True)
            whole = len(points) == len(grid) and len(runs) == len(cases)
            write_points(name, args.method, points, model, seeds, complete=whole, out_dir=args.out,
                         recovery=recovery, attack_steps=args.attack_steps, rule=args.rule,
                         per_kind=args.per_kind, spec=spec)


def summarized(points: list[dict], recovery: str | None) -> list[dict]:
    """The points with their summary over the cases each has."""
    keys = ("target_rate", "ssim_other", "other_accuracy") + ((recovery,) if recovery else ())
    for p in points:
        p["summary"] = common.summarize(p["runs"], keys)
        p["summary"]["accuracy_drop_mean"] = sum(r["metrics"]["other_accuracy_base"] - r["metrics"]["other_accuracy"]
                                                 for r in p["runs"]) / len(p["runs"])
        p["summary"]["seconds_mean"] = sum(r["seconds"] for r in p["runs"]) / len(p["runs"])
    return points


def chosen_point(points: list[dict], recovery: str | None, rule: str, per_kind: bool) -> dict:
    """The chosen grid point among the whole points, or one per kind of concept (`per_kind`)."""
    whole = [p for p in points if len(p["runs"]) == len(points[0]["runs"])] if len(points) > 1 else points
    if not per_kind:
        return whole[choose(summarized(whole, recovery), recovery, rule)]["grid"]
    kinds = sorted({r["kind"] for p in whole for r in p["runs"]})
    per = {k: summarized([{"grid": p["grid"], "runs": [r for r in p["runs"] if r["kind"] == k]} for p in whole],
                         recovery) for k in kinds}
    return {k: ps[choose(ps, recovery, rule)]["grid"] for k, ps in per.items()}


def write_points(name: str, method: str, points: list[dict], model, seeds: list[int], complete: bool,
                 out_dir: str, recovery: str | None = None, attack_steps: int | str = 0, rule: str = "erasure",
                 per_kind: bool = False, spec: dict | None = None) -> None:
    """Write every point measured so far (a point's summary over the cases it has); choose among the whole ones."""
    summarized(points, recovery)
    write_result(name, [{"method": method, "model": model.source, "grid": p["grid"], "seeds": seeds,
                         "cases": len(p["runs"]), "summary": p["summary"], "per_concept": p["runs"]} for p in points],
                 out_dir=out_dir,
                 extra={"calibration_seeds": seeds, "rule": rule_text(bool(recovery), rule),
                        "chosen": chosen_point(points, recovery, rule, per_kind), "complete": complete,
                        **({"attack": recovery, "attack_steps": attack_steps} if recovery else {}),
                        **({"attacks": spec["attacks"], "attack_seeds": spec["seeds"]} if spec else {})})


def rule_text(robust: bool, rule: str = "erasure") -> str:
    heads = {"cost": "Cost rule ", "preservation": "Preservation rule "}
    head = "Robust rule " if robust else heads.get(rule, "Rule: ")
    return __doc__.split(head)[1].split("\n\n")[0]


if __name__ == "__main__":
    main()
