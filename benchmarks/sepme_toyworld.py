"""SepME on the toy world: erase circle, cross and the implicit stripes at once, restore one,
compare interference with stacked single-concept abo / esd-x patches, and five erase → restore
cycles. Writes benchmarks/results/sepme_toyworld.json (format: ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import common
from common import erase_timed, evaluation_run

from erasekit.core.patch import stack
from erasekit.eval.results import write_result
from erasekit.methods.abo.config import TOYWORLD_DEFAULTS as ABO_TOY
from erasekit.methods.sepme.config import TOYWORLD_DEFAULTS as SEPME_TOY
from erasekit.request import EraseRequest

CONCEPTS = ["circle", "cross", "striped"]
SUITES = {"circle": "toyworld:shape=circle", "cross": "toyworld:shape=cross", "striped": "toyworld:pattern=striped"}


def evaluate_all(model, patches, seeds, steps, label) -> list[dict]:
    return [evaluation_run(model, patches, SUITES[c], seeds, steps, {**label, "measured": c}) for c in CONCEPTS]


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    seeds, model = common.setup(args)
    runs: list[dict] = []

    def record(entries):
        runs.extend(entries)
        write_result("sepme_toyworld", runs, out_dir=args.out)

    patches, seconds, _ = erase_timed(model, "sepme", EraseRequest(concepts=CONCEPTS), SEPME_TOY)
    by_concept = dict(zip(CONCEPTS, patches, strict=True))
    record(evaluate_all(model, patches, seeds, args.steps, {"method": "sepme", "case": "erase-all",
                                                           "seconds": round(seconds, 1)}))
    kept = [by_concept[c] for c in CONCEPTS if c != "circle"]
    record(evaluate_all(model, kept, seeds, args.steps, {"method": "sepme", "case": "restore-circle"}))

    for method, config in (("abo", ABO_TOY), ("esd", {"variant": "x", "steps": 200, "lr": 1e-4})):
        singles = [erase_timed(model, method, EraseRequest(concepts=[c]), config)[0] for c in CONCEPTS]
        record(evaluate_all(model, [stack(singles)], seeds, args.steps, {"method": method, "case": "stacked"}))

    for cycle in range(args.cycles):
        record([evaluation_run(model, kept + [by_concept["circle"]], SUITES["cross"], seeds, args.steps,
                               {"method": "sepme", "case": f"cycle-{cycle}-erased"}),
                evaluation_run(model, kept, SUITES["cross"], seeds, args.steps,
                               {"method": "sepme", "case": f"cycle-{cycle}-restored"})])


if __name__ == "__main__":
    main()
