"""Release gates: `--require "target_rate<=0.05"` checked against an evaluation's metrics.

A safety team's release pipeline blocks a model whose erasure regressed: each requirement names a
metric of the registry, a comparison and a bound; the evaluation exits 1 when one fails (a metric the
evaluation did not measure fails too: a gate that cannot be checked must not pass).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from erasekit.errors import ErasekitError
from erasekit.eval.metric_registry import METRICS
from erasekit.registry import suggest

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq,
}
_FORM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|<|>)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Requirement:
    metric: str
    op: str
    bound: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"

    def holds(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.bound)


def parse_requirement(text: str) -> Requirement:
    """'target_rate<=0.05' → Requirement; one readable ErasekitError line for anything else."""
    match = _FORM.match(text)
    if match is None:
        raise ErasekitError(f"bad --require {text!r}: expected METRIC<=VALUE (operators: {', '.join(OPERATORS)})")
    metric, op, bound_text = match.groups()
    if metric not in METRICS:
        raise ErasekitError(f"bad --require {text!r}: unknown metric {metric!r}{suggest(metric, METRICS)}")
    try:
        bound = float(bound_text)
    except ValueError:
        raise ErasekitError(f"bad --require {text!r}: {bound_text!r} is not a number") from None
    if not math.isfinite(bound):
        raise ErasekitError(f"bad --require {text!r}: the bound must be a finite number")
    return Requirement(metric, op, bound)


def failures(requirements: list[Requirement], metrics: Mapping[str, object]) -> list[str]:
    """One phrase per requirement that does not hold ('target_rate 0.12 > 0.05', 'clip_score not measured')."""
    failed = []
    for req in requirements:
        value = metrics.get(req.metric)
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            failed.append(f"{req.metric} not measured (required {req})")
        elif not req.holds(float(value)):
            failed.append(f"{req.metric} = {value:.4g}, required {req}")
    return failed
