"""Recovery attacks: can the erased concept be brought back without changing the erased weights?

One interface (`base.Attack`: `run(inputs, budgets) -> outcomes`), five attacks named in
`erasekit.eval.attack_names`: Concept Inversion and the hard prompt (`inversion`), UnlearnDiffAtk
(`unlearndiff`), Ring-A-Bell (`ringabell`) and P4D (`p4d`). Each module's docstring gives its
objective and where it differs from the authors' code; docs/attacks.md compares them.
"""

from __future__ import annotations

import importlib
from typing import Any

from erasekit.core.tokens import nearest_tokens
from erasekit.eval.attack_names import ATTACKS, parse_attacks
from erasekit.eval.attacks.base import Attack, AttackInputs, AttackOutcome
from erasekit.eval.attacks.inversion import InversionAttack, concept_inversion, prompt_attack, recover

__all__ = ["ATTACKS", "Attack", "AttackInputs", "AttackOutcome", "InversionAttack", "build_attack",
           "concept_inversion", "nearest_tokens", "prompt_attack", "recover"]


def build_attack(name: str, **settings: Any) -> Attack:
    """The attack registered as `name`, with `settings` overriding its defaults."""
    parse_attacks(name)
    module, _, factory = ATTACKS[name].factory.partition(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), factory)(**settings)
