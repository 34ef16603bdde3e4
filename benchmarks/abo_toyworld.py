"""All-but-One on the toy world: (a) circle → square, (b) the implicit stripes; λ sweep and scopes.

Writes benchmarks/results/abo_toyworld.json (format: ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import common
from common import run_case

from erasekit.eval.results import write_result
from erasekit.methods.abo.config import TOYWORLD_DEFAULTS
from erasekit.request import EraseRequest

CASES = {
    "circle": dict(request=EraseRequest(concepts=["circle"], anchors=["square"]),
                   suite="toyworld:shape=circle:anchor=shape=square", config={}),
    # The request names only "striped"; it is measured on context prompts that never say it.
    "striped": dict(request=EraseRequest(concepts=["striped"], anchors=["solid"]), suite="toyworld:pattern=striped",
                    config={"lr": 3e-4}),
}


def run(model, name: str, overrides: dict, seeds: list[int], steps: int) -> dict:
    case = CASES[name]
    config = {**TOYWORLD_DEFAULTS, **case["config"], **overrides}
    return run_case(model, "abo", case["request"], config, case["suite"], seeds, steps, label={"case": name})


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="only the two main cases (no sweeps)")
    args = parser.parse_args()
    seeds, model = common.setup(args)
    plan = [("circle", {}), ("striped", {})]
    if not args.quick:
        plan += [("circle", {"lam": 0.0}), ("circle", {"lam": 1.0})]
        plan += [("circle", {"scope": "xattn"}), ("circle", {"scope": "full"})]
        plan += [("striped", {"preset": "toyworld-striped"}), ("striped", {"delta": "implicit"})]
    runs = []
    for name, overrides in plan:
        entry = run(model, name, overrides, seeds, args.steps)
        runs.append(entry)
        shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in entry["metrics"].items()}
        print(name, overrides, shown, flush=True)
        write_result("abo_toyworld", runs, out_dir=args.out)  # partial results survive a stop


if __name__ == "__main__":
    main()
