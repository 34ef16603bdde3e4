"""How much an attack's recovery rate on one patch depends on the attack's own seed (its restarts).

robust_toyworld runs each attack once (seed 0) on a patch: Concept Inversion learns one embedding from
the base model's images of the target prompts, so its rate on a patch is close to one draw of "did this
optimisation find a way back". Here the same patches (each method's robust toy settings, the circle and
the stripes, anchors by the fixed rule of common.concept_cases) are attacked by each --attack with
--attack-seeds restarts at one budget, on the evaluation seeds' target prompts (the suite's first 8, as
robust_toyworld), and each run (one patch, one attack) records every restart's rate, their mean, the
lowest and the highest: the rate an attacker who keeps the best of K restarts reaches is the highest.
Nothing here is chosen; the patches are the table's own (same config). Resumes by row. Writes
benchmarks/results/restarts_toyworld.json (format: ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import common
from calibrate_toyworld import method_id
from robust_toyworld import TUNED, row_request

from erasekit import api
from erasekit.eval.attack_names import ATTACKS, parse_attacks
from erasekit.eval.results import write_result

CASES = ("circle", "striped")


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--methods", default="abo,ca")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--attack", default="concept-inversion", metavar="NAME[,NAME...]",
                        help=f"the attacks restarted, each on its own row ({', '.join(sorted(ATTACKS))})")
    parser.add_argument("--budget", type=int, default=500, help="the attack's budget (robust_toyworld's largest)")
    parser.add_argument("--attack-seeds", default="0-3", help="the attack's restarts (seed 0 is robust_toyworld's)")
    parser.add_argument("--robust", default="on", choices=("off", "on"))
    parser.add_argument("--name", default="restarts_toyworld")
    args = parser.parse_args()
    seed_sets, model = common.setup(args)
    seeds = seed_sets[0]
    attack_seeds = api.parse_seeds(args.attack_seeds)
    attacks = parse_attacks(args.attack)
    path = Path(args.out) / f"{args.name}.json"
    runs: list[dict] = json.loads(path.read_text())["runs"] if path.exists() else []
    robust = args.robust == "on"
    for label in args.methods.split(","):
        for name in args.cases.split(","):
            case, request, values = row_request(label, name, robust)
            patch, seconds, resolved = common.erase_timed(model, method_id(label), request, values)
            for attack in attacks:
                restart(model, patch, case, resolved, runs, label, robust, seeds, attack, attack_seeds, args)


def restart(model, patch, case: dict, resolved, runs: list[dict], label: str, robust: bool, seeds: list[int],
            attack: str, attack_seeds: list[int], args) -> None:
    """Attack one patch once per attack seed (the seeds its row lacks), writing the result after each."""
    metric, name = ATTACKS[attack].metric, case["case"]
    row = next((r for r in runs if (r["label"], r["case"], r["robust"], r["attack"], r["budget"])
                == (label, name, robust, attack, args.budget) and common.same_config(r["config"], resolved.config)),
               None)
    if row is None:
        row = {"label": label, "case": name, "kind": case["kind"], "robust": robust, "seeds": seeds,
               "attack": attack, "budget": args.budget, "config": common.config_key(resolved.config),
               "per_seed": {}}
        runs.append(row)
    patches = patch if isinstance(patch, list) else [patch]
    for attack_seed in attack_seeds:
        if str(attack_seed) in row["per_seed"]:
            continue
        result = api.evaluate(model, patches, case["suite"], seeds=seeds, steps=args.steps, progress=False,
                              groups=["target"], attack=attack, attack_steps=args.budget,
                              attack_settings={attack: {"seed": attack_seed}})
        row["per_seed"][str(attack_seed)] = result["metrics"][metric]
        rates = list(row["per_seed"].values())
        row["metrics"] = {f"{metric}_mean": sum(rates) / len(rates), f"{metric}_min": min(rates),
                          f"{metric}_max": max(rates), "restarts": len(rates),
                          "target_rate": result["metrics"]["target_rate"]}
        print(label, name, attack, "attack seed", attack_seed, round(row["per_seed"][str(attack_seed)], 3), flush=True)
        write_result(args.name, runs, out_dir=args.out,
                     extra={**common.protocol(TUNED), "evaluation_seeds": [seeds], "attack_prompts": 8,
                            "tables": tables(runs, [seeds])})


def tables(runs: list[dict], seed_sets: list[list[int]]) -> list[dict]:
    """The view merge_results.py recomputes when it joins parts of this benchmark: a row per patch and attack."""
    def rates(r: dict) -> list:
        metric = ATTACKS[r["attack"]].metric
        return [r["metrics"][f"{metric}_mean"], r["metrics"][f"{metric}_max"]]

    rows = [[r["label"] + (" +robust" if r["robust"] else ""), r["case"], r["attack"], r["budget"],
             " / ".join(f"{v:.2f}" for v in r["per_seed"].values()), *rates(r)] for r in runs if r.get("metrics")]
    return [{"title": "one patch, the attack restarted with other seeds (evaluation seeds' target prompts)",
             "columns": ["method", "case", "attack", "budget", "rate per attack seed", "mean", "max"], "rows": rows}]


if __name__ == "__main__":
    main()
