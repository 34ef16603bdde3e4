"""SepME on the toy world: erase circle, cross and the implicit stripes at once, restore one,
compare interference with stacked single-concept abo / esd-x patches, and five erase → restore
cycles. Writes benchmarks/results/sepme_toyworld.json (format: ../shared/BENCHMARKS.md);
with --model toyworld-wide, sepme_toyworld-wide.json.
"""

from __future__ import annotations

import common
import torch
from common import erase_timed, evaluation_run

from erasekit.core.patch import stack
from erasekit.defaults import model_layer
from erasekit.eval.results import write_result
from erasekit.methods.sepme.config import SepmeConfig
from erasekit.methods.sepme.method import null_space_basis, relative_kv_change
from erasekit.request import EraseRequest
from erasekit.toyworld.domain import SHAPES

CONCEPTS = ["circle", "cross", "striped"]
ATTRIBUTE = {"circle": "shape", "cross": "shape", "striped": "pattern"}
# Each concept's suite leaves the other erased concepts out of its 'other' group.
SUITES = {c: f"toyworld:{ATTRIBUTE[c]}={c}" + "".join(f":also={ATTRIBUTE[o]}={o}" for o in CONCEPTS if o != c)
          for c in CONCEPTS}
# A pattern is always drawn on a shape: "striped" trains in the world's shape contexts, each against
# the shape alone (phrase_null), so the joint objective sees the prompts where its increment and the
# shapes' increments meet ("striped circle"). The shapes train on their bare prompts.
CAPTIONS = {"striped": [f"{{}} {shape}" for shape in SHAPES]}
# The stripes train after the shapes' increments are frozen, on the model that carries them: in the
# prompts where both act ("striped circle") the stripes' increment then learns against what the shapes'
# increments leave, instead of both chasing the same representation at once (docs/methods/sepme.md).
STAGES = [["circle", "cross"], ["striped"]]
# Single-concept settings of the stacked baselines: abo's toy-world case settings (abo_toyworld.py).
PARTS = ("joint", "stacked", "diagnosis", "cycles")
ABO_SINGLE = {"circle": "square", "cross": "square", "striped": "solid"}


def evaluate_all(model, patches, seeds, steps, label) -> list[dict]:
    return [evaluation_run(model, patches, SUITES[c], seeds, steps, {**label, "measured": c}) for c in CONCEPTS]


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--tau", type=float, default=None,
                        help="absolute early-stopping threshold shared by the concepts, as the paper's τ "
                        "(default: the toy world's tau_rel times each concept's loss scale)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="step cap of each SepME erasure (default: the toy world's)")
    parser.add_argument("--preserve", action="append", default=[], metavar="PROMPT",
                        help="a prompt whose keys/values every SepME increment must leave unchanged (repeatable)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run, of {', '.join(PARTS)} (the joint erasure always runs); "
                        "parts run in separate processes are joined by benchmarks/merge_results.py")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if not set(parts) <= set(PARTS):
        parser.error(f"unknown part in {args.parts!r}; parts: {', '.join(PARTS)}")
    seed_sets, model = common.setup(args)
    seeds = seed_sets[0]
    sepme = {k: v for k, v in (("tau", args.tau), ("max_steps", args.max_steps)) if v is not None}
    joint = {**sepme, "captions": CAPTIONS, "phrase_null": True, "stages": STAGES}
    runs: list[dict] = []

    def record(entries):
        runs.extend(entries)
        write_result(common.result_name("sepme", args.model), runs, out_dir=args.out)

    patches, seconds, _ = erase_timed(model, "sepme", EraseRequest(concepts=CONCEPTS, preserve=args.preserve), joint)
    by_concept = dict(zip(CONCEPTS, patches, strict=True))
    kept = [by_concept[c] for c in CONCEPTS if c != "circle"]
    if "joint" in parts:
        record(evaluate_all(model, patches, seeds, args.steps, {
            "method": "sepme", "case": "erase-all", "seconds": round(seconds, 1), "preserve": args.preserve,
            # Where each concept's momentum early stop froze it (None: it ran to max_steps).
            "stopped_at": {c: p.info["stopped_at"] for c, p in by_concept.items()},
            "tau": {c: p.info["tau"] for c, p in by_concept.items()},
            "loss_scale": {c: p.info["loss_scale"] for c, p in by_concept.items()}, "captions": CAPTIONS,
            "stages": STAGES}))
        # How far the kept increments move the restored concept's keys/values (0 by construction).
        record(evaluate_all(model, kept, seeds, args.steps, {
            "method": "sepme", "case": "restore-circle",
            "kv_change_restored": relative_kv_change(model, kept, "circle"),
            "kv_change_erased": relative_kv_change(model, [by_concept["circle"]], "circle")}))
    if "stacked" in parts:
        stacked_baselines(model, seeds, args.steps, record)
    if "diagnosis" in parts:
        striped_diagnosis(model, seeds, args.steps, record)
    if "cycles" in parts:
        cycles(model, kept, sepme, args.preserve, args.cycles, seeds, args.steps, record)


def stacked_baselines(model, seeds, steps, record) -> None:
    """The three concepts erased by stacking single-concept abo and esd-x patches."""
    singles = {
        "abo": [erase_timed(model, "abo", EraseRequest(concepts=[c], anchors=[ABO_SINGLE[c]]), {})[0]
                for c in CONCEPTS],
        "esd-x": [erase_timed(model, "esd", EraseRequest(concepts=[c]), {"variant": "x"})[0]
                  for c in CONCEPTS],
    }
    for label, patches_of_method in singles.items():
        record(evaluate_all(model, [stack(patches_of_method)], seeds, steps, {"method": label, "case": "stacked"}))


def striped_diagnosis(model, seeds, steps, record) -> None:
    """Why the stripes resist: the same SepME erasure of "striped" alone, run to its step cap (no early
    stop), once with only ∅ constraining its increment and once with circle and cross added, as in
    the joint run."""
    no_stop = {"warmup": model_layer(model.profile, "sepme", ["striped"], {})["max_steps"]}
    for case, protect in (("striped-alone-free", []), ("striped-alone-decoupled", ["circle", "cross"])):
        (alone,), seconds, _ = erase_timed(model, "sepme", EraseRequest(concepts=["striped"]),
                                           {**no_stop, "protect": protect})
        record([evaluation_run(model, [alone], "toyworld:pattern=striped", seeds, steps,
                               {"method": "sepme", "case": case, "measured": "striped", "protect": protect,
                                "seconds": round(seconds, 1), "null_space_dim": alone.info["null_space_dim"],
                                "striped_share_outside": share_outside(model, "striped", ["", *protect])})])


def share_outside(model, concept: str, constraints: list[str]) -> float:
    """‖(E(c) − E(∅)) S_kᵀ‖ / ‖E(c) − E(∅)‖ over the token positions: the share of what the concept's
    prompt adds to the empty prompt's embeddings that its null space (of `constraints`) can act on."""
    with torch.no_grad():
        added = (model.encode([concept]) - model.encode([""]))[0].double().cpu()
        basis = null_space_basis(model.encode(constraints).flatten(0, 1).cpu(), SepmeConfig.rank_tol).double()
    return round(float((added @ basis.T).norm() / added.norm()), 4)


def cycles(model, kept, sepme, preserve, n_cycles, seeds, steps, record) -> None:
    """Erase → restore cycles of "circle" on top of the two kept increments: each cycle trains a new
    circle increment (its own seed, the kept concepts protected), applies it, then removes it."""
    for cycle in range(n_cycles):
        config = {**sepme, "seed": cycle + 1, "protect": [c for c in CONCEPTS if c != "circle"]}
        (circle,), seconds, _ = erase_timed(model, "sepme", EraseRequest(concepts=["circle"], preserve=preserve),
                                            config)
        record([evaluation_run(model, kept + [circle], SUITES["circle"], seeds, steps,
                               {"method": "sepme", "case": f"cycle-{cycle}-erased", "measured": "circle",
                                "seconds": round(seconds, 1), "stopped_at": circle.info["stopped_at"],
                                "tau": circle.info["tau"]}),
                evaluation_run(model, kept, SUITES["circle"], seeds, steps,
                               {"method": "sepme", "case": f"cycle-{cycle}-restored", "measured": "circle"})])


if __name__ == "__main__":
    main()
