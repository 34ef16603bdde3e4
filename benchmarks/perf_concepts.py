"""What erasing N concepts in one run costs: seconds and peak memory for N = 1, 10, 100, per method.

The concepts are words of the toy world's tokenizer (the first N whole words in vocabulary order that
are none of the anchors; past its 92 whole words, two-word phrases of them in order): the cost curve
needs many distinct concepts, not meaningful ones. Methods
that take an anchor map every concept onto 'thing'. Each (method, N) runs in its own process with the
method's toy defaults (erasekit/toyworld/defaults.py) at one concept's steps (the defaults give a joint
erase N ** exponent times as many: erasekit.defaults.joint_steps) and a fresh image cache, so its seconds include
drawing the images it trains on and its peak resident memory is its own. A method that cannot serve N
concepts records its one-line refusal as the measurement. A run whose linear extrapolation from the
method's previous N exceeds --budget-s is not started; the record says so and what it would take.
Writes benchmarks/results/perf_concepts.json (format: ../shared/BENCHMARKS.md) after every (method, N); a
rerun keeps the runs a stopped one measured (each with the commit it was measured at).

--quality: what erasing many concepts at once does to each of them. Each method erases the eight toy
concepts QUALITY_CONCEPTS (four shapes and four colours) in one run, and each of them alone, with the
same anchors (the method's Table-1 rule, pointed at the concept of the same kind that no run erases:
'next' → diamond / purple, 'superset' → thing / purple) and its toy defaults; each concept's target
rate (its suite's target prompts) is measured for the joint patch and for its own patch on the
evaluation seeds, and the two kept concepts (diamond, purple) for the joint patch: how much of what
was not erased survives eight erasures. Nothing is tuned here. Writes perf_concepts_quality.json (parts
run apart, e.g. --methods ca, join with merge_results.py); a stopped run resumes by case.

--quality --steps-scales 2,4,8 --seeds 10-13: the calibration of how a joint erase's steps grow with the
number of concepts N (erasekit/toyworld/defaults.py JOINT_STEPS_EXPONENT). Only the joint runs, on the
calibration seeds, each with s times the steps the method's defaults give one concept. Rule, fixed before
any run: among the scales whose joint patch meets the every-concept bars over the eight concepts (mean
target_rate ≤ 0.15, worst ≤ 0.30) and leaves each kept concept's rate within 0.10 of its base rate, the
smallest (the cheapest); with none, the largest tried. Its exponent log(s) / log(8) makes steps × N^exponent
give the chosen steps at N = 8. Writes calibration_joint_toyworld.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from calibrate_toyworld import METHODS as CALIBRATED
from calibrate_toyworld import method_id

from erasekit.eval.results import write_result

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = {"abo": "thing", "ca": "thing", "esd": None, "uce": "thing", "sepme": None}  # method -> anchor
ANCHORS = ("thing",)
# --quality: eight concepts of two kinds, the concept of each kind that stays, and each method's anchor rule
QUALITY_CONCEPTS = ("circle", "square", "triangle", "cross", "red", "green", "blue", "yellow")
KEPT = {"shape": "diamond", "color": "purple"}
# Table 1's anchor rules (calibrate_toyworld.METHODS) for the methods it has; SepME takes no anchor.
QUALITY_METHODS = {**{m: CALIBRATED[m] for m in ("abo", "ca", "esd-x", "uce")}, "sepme": ("none", {})}


def quality_anchor(rule: str, concept: str) -> str | None:
    from erasekit.toyworld import domain

    kind = domain.concept_kind(concept)
    if rule == "none":
        return None
    return "thing" if rule == "superset" and kind == "shape" else KEPT[kind]


def quality_request(rule: str, concepts):
    from erasekit.request import EraseRequest

    anchors = [quality_anchor(rule, c) for c in concepts]
    return EraseRequest(concepts=list(concepts), anchors=anchors if all(anchors) else [])


def _mean(values: list[float]) -> float | str:
    return sum(values) / len(values) if values else ""


def quality(args) -> None:
    """The --quality runs, or with --steps-scales the joint-steps calibration (module docstring), written
    after every case."""
    from erasekit.toyworld.defaults import check_suite

    seed_sets, model = common.setup(args)
    seed_sets = seed_sets[:1]
    scales = [float(s) for s in args.steps_scales.split(",")] if args.steps_scales else [None]
    name = "calibration_joint_toyworld" if args.steps_scales else "perf_concepts_quality"
    earlier = common.earlier_runs(name, args.out)
    runs: list[dict] = []
    for label in ("esd-x" if m == "esd" else m for m in args.methods.split(",")):  # ESD erases by its x variant
        rule, fixed = QUALITY_METHODS[label]
        method = method_id(label)
        joint = quality_request(rule, QUALITY_CONCEPTS)
        one = one_concept_steps(model, method, quality_request(rule, QUALITY_CONCEPTS[:1]), fixed)
        for scale in scales:
            config, extra = dict(fixed), {}
            if scale is not None:
                config["steps"] = round(one * scale)
                extra = {"steps_scale": scale}
            tuned = ({"steps": "the joint steps scale, by the rule above"} if scale is not None
                     else {"nothing": "the toy defaults; anchors by the fixed rule above"})
            plan = [("joint", joint, c) for c in QUALITY_CONCEPTS] + [("kept", joint, c) for c in KEPT.values()]
            if scale is None:
                plan += [("alone", quality_request(rule, [c]), c) for c in QUALITY_CONCEPTS]
            for mode, req, concept in plan:
                entries = common.run_case(model, method, req, config, check_suite(concept), seed_sets, args.steps,
                                          label={"label": label, "mode": mode, "case": concept, **extra},
                                          groups=["target"], earlier=earlier)
                runs.extend(entries)
                print(label, scale, mode, concept,
                      {k: round(entries[0]["metrics"][k], 3) for k in ("target_rate", "seconds")}, flush=True)
                write_result(name, runs, out_dir=args.out,
                             extra={**common.protocol(tuned), "evaluation_seeds": seed_sets, "tables": tables(runs),
                                    **({"chosen": chosen_scales(runs)} if args.steps_scales else {})})


def one_concept_steps(model, method: str, single, config: dict) -> int:
    """The steps `method`'s defaults give the one-concept request `single` on `model` (with `config` on top)."""
    from erasekit import api

    return api.resolve_config(method, model.profile, single, config, family=model.family.name).config.steps


def tables(runs: list[dict], seed_sets=None) -> list[dict]:
    """The views of any of the three result files (merge_results.py recomputes them for merged parts)."""
    if any("steps_scale" in r for r in runs):
        return scale_tables(runs)
    return quality_tables(runs) if any("mode" in r for r in runs) else cost_tables(runs)


def scale_summary(runs: list[dict]) -> dict[tuple[str, float], dict]:
    """Per (method, steps scale) of the calibration: the joint runs' mean and worst target rate, the kept
    concepts' largest drop from base, the erase seconds, and whether the rule's bars hold."""
    out = {}
    for key in dict.fromkeys((r["label"], r["steps_scale"]) for r in runs):
        mine = [r for r in runs if (r["label"], r["steps_scale"]) == key]
        rates = [r["metrics"]["target_rate"] for r in mine if r["mode"] == "joint"]
        drops = [r["metrics"]["target_rate_base"] - r["metrics"]["target_rate"] for r in mine if r["mode"] == "kept"]
        complete = len(rates) == len(QUALITY_CONCEPTS) and len(drops) == len(KEPT)
        mean, worst, drop = _mean(rates), max(rates, default=""), max(drops, default="")
        out[key] = {"mean": mean, "worst": worst, "kept_drop": drop, "complete": complete,
                    "seconds": next((r["metrics"]["seconds"] for r in mine), ""), "steps": mine[0]["config"]["steps"],
                    "meets": complete and mean <= 0.15 and worst <= 0.30 and drop <= 0.10}
    return out


def chosen_scales(runs: list[dict]) -> dict[str, dict]:
    """Per method whose scales were all measured: the rule's scale (module docstring) and its exponent."""
    summary = scale_summary(runs)
    chosen = {}
    for label in dict.fromkeys(k[0] for k in summary):
        mine = {s: v for (m, s), v in summary.items() if m == label}
        if not all(v["complete"] for v in mine.values()):
            continue
        meeting = [s for s, v in mine.items() if v["meets"]]
        scale = min(meeting) if meeting else max(mine)
        chosen[label] = {"steps_scale": scale, "meets_bars": bool(meeting),
                         "exponent": round(math.log(scale) / math.log(len(QUALITY_CONCEPTS)), 3)}
    return chosen


def chosen_of(runs: list[dict]) -> dict[str, dict] | None:
    """The joint-steps calibration's choice (merge_results.py recomputes it for merged parts); None for the
    other two result files."""
    return chosen_scales(runs) if any("steps_scale" in r for r in runs) else None


def scale_tables(runs: list[dict]) -> list[dict]:
    rows = [[label, scale, v["steps"], v["mean"], v["worst"], v["kept_drop"], v["seconds"], v["meets"]]
            for (label, scale), v in scale_summary(runs).items()]
    return [{"title": f"joint erase of {len(QUALITY_CONCEPTS)} concepts at s × one concept's steps "
                      "(calibration seeds)",
             "columns": ["method", "steps scale", "steps", "target_rate joint mean", "joint worst",
                         "largest kept drop", "seconds", "meets the bars"], "rows": rows}]


def quality_tables(runs: list[dict]) -> list[dict]:
    """Per method: each concept's target rate alone and in the joint run (mean, worst), the kept concepts'
    rates after the joint run, and the erase seconds (joint run vs the sum of the single runs)."""
    rows = []
    for label in dict.fromkeys(r["label"] for r in runs):
        mine = [r for r in runs if r["label"] == label]
        rates = {mode: [r["metrics"]["target_rate"] for r in mine if r["mode"] == mode] for mode in ("alone", "joint")}
        alone, joint = rates["alone"], rates["joint"]
        kept = {r["case"]: f"{r['metrics']['target_rate']:.3f} / {r['metrics']['target_rate_base']:.3f}"
                for r in mine if r["mode"] == "kept"}
        rows.append([label, len(joint), _mean(alone), _mean(joint), max(alone, default=""), max(joint, default=""),
                     *(kept.get(k, "") for k in KEPT.values()),
                     next((r["metrics"]["seconds"] for r in mine if r["mode"] == "joint"), ""),
                     sum(r["metrics"]["seconds"] for r in mine if r["mode"] == "alone")])
    return [{"title": f"{len(QUALITY_CONCEPTS)} concepts at once against each alone (target prompts)",
             "columns": ["method", "concepts measured", "target_rate alone mean", "target_rate joint mean",
                         "alone worst", "joint worst", *(f"{k} rate joint / base" for k in KEPT.values()),
                         "seconds joint", "seconds alone (sum)"], "rows": rows}]


def concept_words(model, n: int) -> list[str]:
    vocab = model.tokenizer.get_vocab()
    words = [w.removesuffix("</w>") for w in sorted(vocab, key=vocab.get) if w.endswith("</w>")]
    words = [w for w in words if w.isalpha() and w not in ANCHORS]
    phrases = (f"{a} {b}" for a in words for b in words if a != b)
    return (words + [p for _, p in zip(range(n - len(words)), phrases, strict=False)])[:n]


def run_one(method: str, n: int, model_name: str) -> dict:
    import resource

    from erasekit import api
    from erasekit.errors import ErasekitError
    from erasekit.registry import get_method
    from erasekit.request import EraseRequest

    model = api.load_model(model_name, device="cpu")
    concepts = concept_words(model, n)
    anchor = METHODS[method]
    request = EraseRequest(concepts=concepts, anchors=[anchor] * n if anchor else [])
    # one concept's steps whatever N: what the machinery costs per step at N concepts (the defaults give a
    # joint erase N ** exponent times as many, erasekit.defaults.joint_steps: the cost scales by that factor)
    single = EraseRequest(concepts=concepts[:1], anchors=[anchor] if anchor else [])
    config = {"steps": one_concept_steps(model, method, single, {})} if get_method(method).shared_steps else {}
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        try:
            result = api.erase(model, method, request, config, cache_dir=cache, progress=False)
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
    parser.add_argument("--quality", action="store_true",
                        help="the eight-concept quality runs instead of the cost curve (module docstring)")
    parser.add_argument("--steps-scales", default=None, metavar="S1,S2",
                        help="with --quality: the joint-steps calibration at these scales (module docstring)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one (method, N), prints JSON
    args = parser.parse_args()
    if args.quality:
        quality(args)
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one:
        method, n = args.one.split(":")
        print(json.dumps(run_one(method, int(n), args.model)), flush=True)
        return
    runs = []
    todo = [(m, int(n)) for m in args.methods.split(",") for n in args.n.split(",")]
    # A stopped run resumes: the (method, N) runs it measured on this model are kept, with their commit.
    earlier = {(r["method"], r["n_concepts"]): r for r in common.earlier_runs("perf_concepts", args.out)
               if r["model"] == args.model and r["metrics"]["status"] == "ok"}
    last: dict[str, tuple[int, float]] = {}  # method -> (N, seconds) of its previous run
    for method, n in todo:
        if (method, n) in earlier:
            run = earlier[(method, n)]
        elif method in last and last[method][1] * n / last[method][0] > args.budget_s:
            predicted = last[method][1] * n / last[method][0]
            run = {"method": method, "n_concepts": n, "model": args.model, "metrics": {
                "status": f"not run: N={last[method][0]} took {last[method][1]:.0f} s; N={n} would take "
                          f"about {predicted:.0f} s (linear), over --budget-s {args.budget_s:.0f}"}}
        else:
            run = {"method": method, "n_concepts": n, "model": args.model, "metrics": measure(method, n, args)}
        runs.append(run)
        print(method, n, run["metrics"], flush=True)
        if run["metrics"].get("status") == "ok":
            last[method] = (n, run["metrics"]["seconds"])
        write_result("perf_concepts", runs, out_dir=args.out,
                     extra={**common.protocol({"config": "the toy defaults; nothing tuned here"}),
                            "complete": len(runs) == len(todo), "tables": cost_tables(runs)})


def cost_tables(runs: list[dict]) -> list[dict]:
    """Per method: the erase seconds at each N (or why it has none), and what the largest measured run wrote."""
    counts = sorted({r["n_concepts"] for r in runs})
    rows = []
    for method in dict.fromkeys(r["method"] for r in runs):
        mine = {r["n_concepts"]: r["metrics"] for r in runs if r["method"] == method}
        measured = [n for n in counts if mine.get(n, {}).get("status") == "ok"]
        top = mine[measured[-1]] if measured else {}
        rows.append([method, *(m["seconds"] if m.get("status") == "ok" else m.get("status", "")
                               for m in (mine.get(n, {}) for n in counts)),
                     top.get("patches", ""), top.get("values", ""), top.get("peak_rss_gb", "")])
    return [{"title": "seconds to erase N concepts in one run (the toy defaults at one concept's steps whatever N)",
             "columns": ["method", *(f"N={n} seconds" for n in counts), "patches (largest N)",
                         "values written (largest N)", "peak RSS GB (largest N)"], "rows": rows}]


def measure(method: str, n: int, args) -> dict:
    """One (method, N) erase in its own process (run_one), as its JSON line or the reason it failed."""
    child = subprocess.run([sys.executable, __file__, "--one", f"{method}:{n}", "--model", args.model,
                            "--threads", str(args.threads)], capture_output=True, text=True,
                           env={**os.environ, "TQDM_DISABLE": "1"})
    lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
    if child.returncode == 0 and lines:
        return json.loads(lines[-1])
    return {"status": f"failed (exit {child.returncode}): {(child.stderr.strip().splitlines() or [''])[-1][:300]}"}


if __name__ == "__main__":
    main()
