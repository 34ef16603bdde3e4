"""Concept Ablation on the toy world: "circle" → "thing" (the toy word for an unnamed shape).

Both variants against training steps, and spelling robustness of the xattn-kv vs embedding
scopes. Writes benchmarks/results/ca_toyworld.json (format: ../shared/BENCHMARKS.md) after every
run; a rerun keeps the runs a stopped one measured with the same final config and measures the rest.
"""

from __future__ import annotations

import common
from common import run_case

from erasekit.eval.results import write_result
from erasekit.request import EraseRequest

SUITE = "toyworld:shape=circle"
REQUEST = EraseRequest(concepts=["circle"], anchors=["thing"])
TUNED = {"lr, steps, n_images, prompt_templates": "the toy world's ca defaults (erasekit/toyworld/defaults.py), one "
         "setting for every concept, chosen by calibrate_toyworld.py on the calibration seeds",
         "anchor": "fixed: 'thing', the toy world's unnamed-shape word (a superset concept, as the paper maps onto)",
         "steps of the curve": "not tuned: the convergence curve"}


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--train-steps", default="25,50,100,200",
                        help="training steps of the convergence curve (below the calibrated default)")
    args = parser.parse_args()
    seed_sets, model = common.setup(args)
    curve = sorted({int(n) for n in args.train_steps.split(",")}, reverse=True)
    # The full-length runs (the toy world's calibrated steps) decide the bars and run on every evaluation
    # seed set; the shorter ones only draw the convergence curve, on the first set.
    plan = [({"variant": "model"}, seed_sets), ({"variant": "model", "scope": "embedding"}, seed_sets),
            ({"variant": "noise"}, seed_sets)]
    plan += [({"variant": v, "steps": n}, seed_sets[:1]) for v in ("model", "noise") for n in curve]
    runs = []
    earlier = common.earlier_runs("ca_toyworld", args.out)  # a stopped run resumes where it stopped
    for overrides, sets in plan:
        # The toy world's defaults layer gives the anchor prompts in its caption styles.
        for entry in run_case(model, "ca", REQUEST, overrides, SUITE, sets, args.steps, earlier=earlier):
            runs.append(entry)
            print(overrides, entry["seeds"], {k: round(v, 3) for k, v in entry["metrics"].items()
                                              if isinstance(v, float)}, flush=True)
        write_result("ca_toyworld", runs, out_dir=args.out,
                     extra={**common.protocol(TUNED), "evaluation_seeds": seed_sets,
                            "curve": "the shorter runs on the first evaluation seed set only"})

if __name__ == "__main__":
    main()
