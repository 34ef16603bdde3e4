"""The side-by-side table: every method on the toy world's explicit shape case (circle → square)
and implicit pattern case (striped), same seeds, plus the base model.

Writes benchmarks/results/table1_toyworld.json (format: ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

from pathlib import Path

import common
from common import evaluation_run, run_case

from erasekit.eval.results import write_result
from erasekit.methods.abo.config import TOYWORLD_DEFAULTS as ABO_TOY
from erasekit.methods.ca.config import TOYWORLD_DEFAULTS as CA_TOY
from erasekit.methods.esd.config import TOYWORLD_DEFAULTS as ESD_TOY
from erasekit.methods.esd.config import TOYWORLD_U_LR as ESD_U_LR
from erasekit.methods.fmn.config import TOYWORLD_DEFAULTS as FMN_TOY
from erasekit.methods.sdd.config import TOYWORLD_DEFAULTS as SDD_TOY
from erasekit.request import EraseRequest
from erasekit.toyworld.domain import caption_templates

CASES = {
    "circle": ("toyworld:shape=circle:anchor=shape=square", ["circle"], "square", "shape"),
    "striped": ("toyworld:pattern=striped", ["striped"], "solid", "pattern"),
}
# Toy-world settings per method: the papers' optimisers and objectives, with the learning rate
# raised for the toy UNet where the paper's SD value does not move it (see docs/methods/).
# (method, settings, anchor per case: None = the method takes none)
METHODS = {
    "abo": ("abo", ABO_TOY, {"circle": "square", "striped": "solid"}),
    # CA maps onto a superset concept: the toy world's unnamed shape, or the solid pattern.
    "ca": ("ca", CA_TOY, {"circle": "thing", "striped": "solid"}),
    "esd-x": ("esd", {**ESD_TOY, "variant": "x"}, None),
    "esd-u": ("esd", {**ESD_TOY, "variant": "u", "lr": ESD_U_LR}, None),
    "sdd": ("sdd", SDD_TOY, None),
    "uce": ("uce", {}, {"circle": "square", "striped": "solid"}),
    "fmn": ("fmn", FMN_TOY, None),
}
# Per-case settings that differ from a method's toy defaults (from that method's own benchmark).
CASE_SETTINGS = {("abo", "striped"): common.ABO_STRIPED}


def case_config(label: str, case: str) -> dict:
    method, config, _ = METHODS[label]
    config = {**config, **CASE_SETTINGS.get((label, case), {})}
    if method == "ca":  # anchor prompts in the toy world's caption styles (ca_toyworld.py)
        config["prompt_templates"] = caption_templates(50, CASES[case][3])
    return config


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--timeline-every", type=int, default=50, help="training steps between timeline points")
    parser.add_argument("--attack-steps", type=int, default=100, help="Concept Inversion steps per run")
    parser.add_argument("--patches", default=".cache/erasekit/table1-patches",
                        help="where each run's patch is kept (benchmarks/table1_grid.py draws from them)")
    args = parser.parse_args()
    seeds, model = common.setup(args)
    runs: list[dict] = []
    Path(args.patches).mkdir(parents=True, exist_ok=True)
    for case, (suite, concepts, _, _) in CASES.items():
        runs.append(evaluation_run(model, [], suite, seeds, args.steps, {"method": "base", "case": case}))
        for label in args.methods.split(","):
            method, _, anchors = METHODS[label]
            request = EraseRequest(concepts=concepts, anchors=[anchors[case]] if anchors else [])
            entry = run_case(model, method, request, case_config(label, case), suite, seeds, args.steps,
                             label={"case": case, "label": label}, timeline_every=args.timeline_every,
                             attack_steps=args.attack_steps, save_to=f"{args.patches}/{label}-{case}.safetensors")
            runs.append(entry)
            print(case, label, {k: round(v, 3) for k, v in entry["metrics"].items() if isinstance(v, float)},
                  flush=True)
            write_result("table1_toyworld", runs, out_dir=args.out)


if __name__ == "__main__":
    main()
