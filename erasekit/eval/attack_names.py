"""The attacks `erasekit eval --attack` can run, as plain data (factory, result metric, description), so
that the CLI checks names and `erasekit ls attacks` answers without importing torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from erasekit.errors import ErasekitError


class AttackName(NamedTuple):
    factory: str  # "module:function" under erasekit.eval.attacks, called with the attack's settings
    metric: str  # the result's rate (metric_registry); its sample count is n_<metric without "_rate">
    description: str


ATTACKS: dict[str, AttackName] = {
    "concept-inversion": AttackName("inversion:concept_inversion_attack", "recovery_rate",
                                    "Concept Inversion: one token embedding learned against the edited model "
                                    "(continuous; Pham et al. 2023)"),
    "hard-prompt": AttackName("inversion:prompt_attack", "recovery_rate_prompt",
                              "three learned embeddings in the concept word's place, projected to real tokens"),
    "unlearndiff": AttackName("unlearndiff:UnlearnDiffAttack", "recovery_rate_unlearndiff",
                              "UnlearnDiffAtk: prefix tokens on the simplex, the edited model as its own "
                              "diffusion classifier (Zhang et al. 2024)"),
    "ring-a-bell": AttackName("ringabell:RingABellAttack", "recovery_rate_ringabell",
                              "Ring-A-Bell: a concept vector from the base text encoder, searched into real "
                              "tokens by a genetic algorithm; never queries the edited model (Tsai et al. 2024)"),
    "p4d": AttackName("p4d:P4DAttack", "recovery_rate_p4d",
                      "P4D: a PEZ-projected prompt under which the edited model predicts what the base model "
                      "predicts for the original prompt (Chin et al. 2024)"),
}


def parse_attacks(text: str) -> list[str]:
    """'unlearndiff,p4d' → the names, each checked ("did you mean" for a near miss)."""
    from erasekit.registry import suggest

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ErasekitError("--attack names no attack")
    for name in names:
        if name not in ATTACKS:
            raise ErasekitError(f"unknown attack {name!r}{suggest(name, ATTACKS)}")
    return list(dict.fromkeys(names))


def parse_budgets(text: str | int | Sequence[int]) -> list[int]:
    """'100,300,1000' (or 100, or [100, 300]) → [100, 300, 1000]: the budgets of an attack budget curve
    (0 alone: no attack)."""
    if not isinstance(text, str | int):
        text = ",".join(map(str, text))
    try:
        budgets = sorted({int(b) for b in str(text).replace(" ", "").split(",") if b})
    except ValueError:
        raise ErasekitError(f"attack budgets must be whole numbers like 100,300,1000, got {text!r}") from None
    if budgets == [0]:
        return []
    if not budgets or budgets[0] < 1:
        raise ErasekitError(f"attack budgets must be positive (or 0 alone for no attack), got {text!r}")
    return budgets


def count_key(metric: str) -> str:
    """recovery_rate → n_recovery, recovery_rate_p4d → n_recovery_p4d."""
    return "n_" + metric.replace("_rate", "", 1)
