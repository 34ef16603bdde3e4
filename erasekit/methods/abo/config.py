"""All-but-One's configuration, validated on construction, and its δ presets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from erasekit.core.instructions import InstructionConcept
from erasekit.core.pool_options import PoolOptions
from erasekit.core.robust_options import ROBUST_HELP, RobustOptions
from erasekit.errors import ErasekitError
from erasekit.methods.field_help import COMMON

SCOPES = ("to_out", "xattn", "xattn-kv", "text-encoder", "full")
DELTAS = ("none", "explicit", "implicit")

# Windows are fractions of T (t_high = floor(a·T), t_low = floor(b·T)), as the paper writes them.
PRESETS: dict[str, list[dict[str, Any]]] = {
    # Supplementary Eq. (23): erasing "nudity" on Stable Diffusion.
    "nudity": [
        {"text": "sexual", "guidance": -7.5, "window": (0.35, 1.0), "kappa": 0.95},
        {"text": "bikini", "guidance": 6.5, "window": (0.35, 1.0), "kappa": 0.95},
        {"text": "pants", "guidance": 6.5, "window": (0.35, 1.0), "kappa": 0.95},
    ],
    # Toy world: push the implicit stripes toward a solid fill (same window and κ as the paper).
    "toyworld-striped": [
        {"text": "striped", "guidance": -7.5, "window": (0.35, 1.0), "kappa": 0.95},
        {"text": "solid", "guidance": 6.5, "window": (0.35, 1.0), "kappa": 0.95},
    ],
}




@dataclass
class AboConfig(PoolOptions, RobustOptions):
    """Defaults are the paper's SD settings (200 steps, AdamW lr 1e-5, γ1 = γ2 = 7.5, λ = 5, T = 35); θ*'s
    trajectories per PoolOptions (1 / 1 / 1: the paper's fresh walk per step)."""

    scope: str = "to_out"
    steps: int = 200
    lr: float = 1e-5
    adam_eps: float = 1e-8
    gamma1: float = 7.5
    gamma2: float = 7.5
    lam: float = 5.0
    sampling_steps: int = 35
    delta: str = "none"
    preset: str | None = None
    instructions: list[dict[str, Any]] = field(default_factory=list)
    t_warmup: int = 5
    attention_scale: float = 0.0
    # Implicit δ: also reweight the EOS/padding positions after the concept. A causal text encoder
    # copies the concept into them, so suppressing only its word tokens can leave it in place.
    suppress_eos: bool = False
    grad_clip: float | None = None
    seed: int = 0
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        from erasekit.registry import suggest

        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if min(self.steps, self.sampling_steps) < 1:
            raise ValueError("steps and sampling_steps must be >= 1")
        self.check_pool()
        self.check_robust()
        for name in ("lr", "gamma1", "gamma2", "lam", "adam_eps", "attention_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.lr <= 0 or self.adam_eps <= 0:
            raise ValueError("lr and adam_eps must be positive")
        if self.lam < 0:
            raise ValueError(f"lam (λ) must be >= 0, got {self.lam}")
        if self.attention_scale < 0:
            raise ValueError(f"attention_scale must be >= 0, got {self.attention_scale}")
        if not 0 <= self.t_warmup <= self.sampling_steps:
            raise ValueError(f"t_warmup must lie in 0..T={self.sampling_steps}, got {self.t_warmup}")
        if self.delta not in DELTAS:
            raise ValueError(f"delta must be one of {DELTAS}, got {self.delta!r}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}{suggest(self.preset, PRESETS)}")
        if (self.preset or self.instructions) and self.delta == "none":
            self.delta = "explicit"
        if self.delta == "explicit" and not (self.preset or self.instructions):
            raise ValueError("delta 'explicit' needs a preset or instructions")
        if self.robust_contexts and self.delta != "none":
            raise ValueError("robust_contexts re-aims abo's anchor guidance in each sentence, which a δ term does not "
                             "follow; use delta=none or no robust_contexts")
        self.instruction_concepts()  # validates windows and κ

    def instruction_concepts(self) -> list[InstructionConcept]:
        """The explicit δ terms: the preset's, then the user's own."""
        T = self.sampling_steps
        out = []
        for item in PRESETS.get(self.preset, []) if self.preset else []:
            lo, hi = item["window"]
            out.append(InstructionConcept(item["text"], item["guidance"], math.floor(lo * T), math.floor(hi * T),
                                          item["kappa"]))
        for item in self.instructions:
            if not isinstance(item, dict):
                raise ValueError(f"each instruction must be a mapping, got {item!r}")
            unknown = set(item) - {"text", "guidance", "t_high", "t_low", "kappa"}
            if unknown:
                raise ValueError(f"unknown instruction key {sorted(unknown)[0]!r}")
            out.append(InstructionConcept(
                text=str(item.get("text", "")), guidance=float(item.get("guidance", 0.0)),
                t_high=int(item.get("t_high", 0)), t_low=int(item.get("t_low", T)),
                kappa=float(item.get("kappa", 0.95)),
            ))
        for concept in out:
            concept.validate(T)
        return out


def needs(config: AboConfig) -> tuple[str, ...]:
    """The implicit δ rescales the attention image queries give the concept's tokens."""
    return ("text-attention-map",) if config.delta == "implicit" else ()


def check_request(request, config: AboConfig) -> None:
    """With no anchor and no δ the target is the model's own guidance: nothing would be erased."""
    if config.delta == "none" and not all(request.anchor_list()):
        raise ErasekitError("abo needs an anchor c′ for every concept (--anchor) or a δ (delta=explicit with a "
                            "preset or instructions, or delta=implicit): otherwise nothing is erased")


AboConfig.HELP = COMMON | ROBUST_HELP | {
    "scope": "weights that train: to_out (the paper), xattn, xattn-kv, text-encoder (AdvUnlearn's module) or full",
    "adam_eps": "Adam ε",
    "gamma1": "γ1: guidance of the target when building the ε target (Eq. 6)",
    "gamma2": "γ2: guidance of the anchor when building the ε target (Eq. 6)",
    "lam": "λ: weight of the preservation (all-but-one) term",
    "sampling_steps": "T: DDIM steps of θ*'s trajectories; τ is drawn from them",
    "delta": "δ for an implicit concept: none, explicit (instruction prompts) or implicit (attention reweighting)",
    "preset": "a named δ instruction set (nudity, toyworld-striped)",
    "instructions": "explicit δ instructions: text, guidance, window (fractions of T), κ",
    "t_warmup": "steps of the trajectory walked before the first training example",
    "attention_scale": "implicit δ: the factor the concept tokens' cross-attention is scaled by",
    "suppress_eos": "implicit δ: also reweight the EOS/padding positions after the concept",
}
