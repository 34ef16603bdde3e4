"""What erasing N concepts in one run costs: seconds and peak memory for N = 1, 10, 100, per method.

The concepts are words of the toy world's tokenizer (the first N whole words in vocabulary order that
are none of the anchors): the cost curve needs many distinct concepts, not meaningful ones. Methods
that take an anchor map every concept onto 'thing'. Each (method, N) runs in its own process with the
method's toy defaults (erasekit/toyworld/defaults.py) and a fresh image cache, so its seconds include
drawing the images it trains on and its peak resident memory is its own. A method that cannot serve N
concepts records its one-line refusal as the measurement. A run whose linear extrapolation from the
method's previous N exceeds --budget-s is not started; the record says so and what it would take.
Writes benchmarks/results/perf_concepts.json (format: ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

from erasekit.eval.results import write_result

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = {"abo": "thing", "ca": "thing", "esd": None, "uce": "thing", "sepme": None}  # method -> anchor
ANCHORS = ("thing",)


def concept_words(model, n: int) -> list[str]:
    words = [w.removesuffix("</w>") for w in model.tokenizer.get_vocab() if w.endswith("</w>")]
    words = [w for w in words if w.isalpha() and w not in ANCHORS]
    if len(words) < n:
        raise SystemExit(f"the tokenizer has {len(words)} whole words, fewer than {n}")
    return words[:n]


def run_one(method: str, n: int, model_name: str) -> dict:
    import resource

    from erasekit import api
    from erasekit.errors import ErasekitError
    from erasekit.request import EraseRequest

    model = api.load_model(model_name, device="cpu")
    concepts = concept_words(model, n)
    anchor = METHODS[method]
    request = EraseRequest(concepts=concepts, anchors=[anchor] * n if anchor else [])
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        try:
            result = api.erase(model, method, request, {}, cache_dir=cache, progress=False)
            status = "ok"
        except (ErasekitError, ValueError) as exc:
            result, status = None, f"refused: {str(exc).splitlines()[0][:300]}"
        seconds = time.perf_counter() - start
    patches = result if isinstance(result, list) else [result] if result is not None else []
    return {"status": status, "seconds": round(seconds, 1), "concepts_first": concepts[:3],
            "patches": len(patches), "values": sum(p.num_values() for p in patches),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--n", default="1,10,100", help="concept counts, ascending")
    parser.add_argument("--budget-s", type=float, default=3600.0,
                        help="skip a run whose linear extrapolation from the previous N exceeds this")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one (method, N), prints JSON
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one:
        method, n = args.one.split(":")
        print(json.dumps(run_one(method, int(n), args.model)), flush=True)
        return
    runs = []
    todo = [(m, int(n)) for m in args.methods.split(",") for n in args.n.split(",")]
    last: dict[str, tuple[int, float]] = {}  # method -> (N, seconds) of its previous run
    for method, n in todo:
        if method in last and last[method][1] * n / last[method][0] > args.budget_s:
            predicted = last[method][1] * n / last[method][0]
            metrics = {"status": f"not run: N={last[method][0]} took {last[method][1]:.0f} s; N={n} would take "
                                 f"about {predicted:.0f} s (linear), over --budget-s {args.budget_s:.0f}"}
            runs.append({"method": method, "n_concepts": n, "model": args.model, "metrics": metrics})
            print(method, n, metrics, flush=True)
            continue
        child = subprocess.run([sys.executable, __file__, "--one", f"{method}:{n}", "--model", args.model,
                                "--threads", str(args.threads)], capture_output=True, text=True,
                               env={**os.environ, "TQDM_DISABLE": "1"})
        lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
        metrics = json.loads(lines[-1]) if child.returncode == 0 and lines else {
            "status": f"failed (exit {child.returncode}): {(child.stderr.strip().splitlines() or [''])[-1][:300]}"}
        runs.append({"method": method, "n_concepts": n, "model": args.model, "metrics": metrics})
        print(method, n, metrics, flush=True)
        if metrics.get("status") == "ok":
            last[method] = (n, metrics["seconds"])
        write_result("perf_concepts", runs, out_dir=args.out,
                     extra={**common.protocol({"config": "the toy defaults; nothing tuned here"}),
                            "complete": len(runs) == len(todo)})


if __name__ == "__main__":
    main()
