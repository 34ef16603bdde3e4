"""Evaluation speed on the toy world: one patch, ≥ 256 images per side, base images cached.

The patch is a UCE erasure of "circle" (closed form: seconds, so the timing is the evaluation's).
The first evaluation fills a fresh base-image cache (timed as `seconds_cold`); the second one
samples only the edited model (`seconds_cached_base`, the number the evaluation issue bounds
by 3 minutes). Writes benchmarks/results/eval_speed.json (format: ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import tempfile
import time

import common

from erasekit import api
from erasekit.eval.results import write_result
from erasekit.request import EraseRequest

SUITE = "toyworld:shape=circle:anchor=shape=square"


def main() -> None:
    args = common.parser(__doc__).parse_args()
    seed_sets, model = common.setup(args)
    seeds = seed_sets[0]
    patch = api.erase(model, "uce", EraseRequest(concepts=["circle"], anchors=["square"]), {}, progress=False)
    timings = {}
    with tempfile.TemporaryDirectory() as cache:
        for key in ("seconds_cold", "seconds_cached_base"):
            start = time.perf_counter()
            result = api.evaluate(model, [patch], SUITE, seeds=seeds, steps=args.steps, cache_dir=cache,
                                  progress=False)
            timings[key] = round(time.perf_counter() - start, 1)
    per_side = sum(v for k, v in result["metrics"].items() if k.startswith("n_"))
    metrics = {"images_per_side": per_side, **timings,
               "images_per_second_cached_base": round(per_side / timings["seconds_cached_base"], 2)}
    run = {"method": "uce", "concepts": ["circle"], "anchors": ["square"], "model": model.source, "suite": SUITE,
           "seeds": seeds, "sampler": f"DDIM {args.steps} steps, CFG 7.5", "metrics": metrics}
    print(metrics, flush=True)
    write_result("eval_speed", [run], out_dir=args.out)


if __name__ == "__main__":
    main()
