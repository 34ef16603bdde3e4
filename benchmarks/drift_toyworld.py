"""Which other prompts a robust erase moves, and whether the retain set holds them.

Robust abo (circle) and robust ca (stripes), the two robust cases whose other images moved most on the
calibration seeds, each erased twice with the toy world's robust settings: once with its retain set as it
is ("words": "a <colour> <shape>", "a <shape> on <background>", "a <pattern> <shape>") and once with the
narrower set of before ("colour-shape": "a <colour> <shape>" alone). Per other prompt and seed, SSIM of the
edited image against the base image of the same seed; each run records the mean, the worst prompts, and
the mean per background and per colour of the other prompts, on the calibration seeds (10–13; a diagnosis
of a setting, not a reported result). Writes benchmarks/results/drift_toyworld.json
(format: ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import common

from erasekit import api
from erasekit.core import patch as patching
from erasekit.core.data import SamplingSettings
from erasekit.eval.evaluate import sample_suite
from erasekit.eval.metrics import ssim_per_image
from erasekit.eval.results import write_result
from erasekit.eval.suites import resolve_suite
from erasekit.toyworld import defaults

CASES = {"abo": "circle", "ca": "striped"}
RETAIN_SETS = ("words", "colour-shape")
WORST = 8


def drift(model, patch, suite_name: str, seeds: list[int], steps: int) -> dict:
    """Per other prompt, the SSIM of edited against base images of the same seeds, and its summaries."""
    suite = resolve_suite(suite_name)
    suite.groups = {"other": suite.groups["other"]}
    settings = SamplingSettings(seeds=seeds, steps=steps)
    base = sample_suite(model, suite, settings, progress=False)["other"]
    with patching.applied_temporarily(model, [patch]):
        edited = sample_suite(model, suite, settings, progress=False)["other"]
    prompts = suite.groups["other"]
    ssim = ssim_per_image(base, edited).view(len(prompts), len(seeds))
    per_prompt = {p.prompt: [round(v, 4) for v in row.tolist()] for p, row in zip(prompts, ssim, strict=True)}

    def by(label: str) -> dict[str, float]:
        values = sorted({p.labels[label] for p in prompts})
        return {v: round(float(ssim[[i for i, p in enumerate(prompts) if p.labels[label] == v]].mean()), 4)
                for v in values}

    worst = [prompts[i].prompt for i in ssim.mean(1).argsort()[:WORST].tolist()]
    return {"ssim_other": float(ssim.mean()), "ssim_other_worst_seed": float(ssim.mean(0).min()),
            "by_background": by("background"), "by_color": by("color"),
            "worst_prompts": {p: per_prompt[p] for p in worst}, "per_prompt": per_prompt}


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--methods", default=",".join(CASES))
    parser.add_argument("--name", default="drift_toyworld")
    args = parser.parse_args()
    _, model = common.setup(args)
    seeds = api.parse_seeds(common.CALIBRATION_SEEDS)
    runs = []
    for method in args.methods.split(","):
        case = next(c for c in common.concept_cases("next") if c["case"] == CASES[method])
        request = common.case_request(case)
        for retain in RETAIN_SETS:
            values: dict = {"robust": True}
            if retain == "colour-shape":
                values["robust_retain_prompts"] = defaults.retain_prompts(request.concepts)
            patch, seconds, resolved = common.erase_timed(model, method, request, values)
            found = drift(model, patch, case["suite"], seeds, args.steps)
            runs.append({"method": method, "case": case["case"], "retain_set": retain, "seeds": seeds,
                         "retain_prompts": len(resolved.config.robust_retain_prompts),
                         "config": common.config_key(resolved.config), "seconds": round(seconds, 1),
                         "metrics": {k: found[k] for k in ("ssim_other", "ssim_other_worst_seed")},
                         "details": {k: v for k, v in found.items() if k not in ("ssim_other",)}})
            print(method, case["case"], retain, round(found["ssim_other"], 3), found["by_background"], flush=True)
            rows = [[r["method"], r["case"], r["retain_set"], r["retain_prompts"], r["metrics"]["ssim_other"],
                     r["metrics"]["ssim_other_worst_seed"],
                     *[r["details"]["by_background"].get(bg) for bg in ("snow", "slate", "sand")],
                     "; ".join(list(r["details"]["worst_prompts"])[:3])] for r in runs]
            write_result(args.name, runs, out_dir=args.out,
                         extra={"diagnosis_seeds": seeds, "steps": args.steps,
                                "tables": [{"title": "other prompts' SSIM under robust erasure, by retain set "
                                                     "(calibration seeds)",
                                            "columns": ["method", "case", "retain_set", "retain_prompts",
                                                        "ssim_other", "ssim_other_worst_seed", "snow", "slate",
                                                        "sand", "worst prompts"],
                                            "rows": rows}]})


if __name__ == "__main__":
    main()
