"""SepME's configuration. Defaults: the authors' code and extended paper (SD 1.4)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from erasekit.core.robust_options import ROBUST_HELP, RobustOptions
from erasekit.methods.field_help import COMMON


@dataclass
class SepmeConfig(RobustOptions):
    mode: str = "joint"  # joint: increments summed in one forward, losses balanced; separate: one at a time
    beta: float = 1e-4  # ΔW_k = β P_k S_k
    lr: float = 0.1  # Adam on the coefficients P_k (initialised at zero)
    max_steps: int = 1000
    warmup: int = 10  # early stopping is checked after this many steps
    momentum: float = 0.9  # L_mom ← m·L_mom + (1 − m)·L_cor
    tau: float | None = None  # absolute stopping threshold (SD 1.4: 1e-4); None: tau_rel · the loss scale
    tau_rel: float = 0.05  # negative: stop only once the representations are anti-correlated
    # The loss scale (τ and the balance weights η): mean base-model L_cor over this many image/noise draws.
    calibration_samples: int = 32
    reg: float = 1e-6  # λ of the L1 term (1/M) Σ_l ‖β P_l S‖₁
    rank_tol: float = 1e-6  # singular values below tol · σ_max count as zero when building null spaces
    n_images: int = 1000
    image_steps: int = 50
    image_guidance: float = 7.5
    template: str = "{}"  # the concept's prompt: its per-token embeddings constrain the other concepts' increments
    # Per concept, caption templates ('{}' where the concept goes) to train its representation in; default: template.
    captions: dict[str, list[str]] = field(default_factory=dict)
    # ∅ of each training prompt: "" (False) or the same caption without the concept ("a picture of a painting").
    phrase_null: bool = False
    protect: list[str] = field(default_factory=list)  # extra prompts whose keys/values must not change
    # Concept groups trained one after another, each on the model carrying the earlier groups' increments
    # (an erasekit extension, docs/methods/sepme.md); empty: all concepts in one stage.
    stages: list[list[str]] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("joint", "separate"):
            raise ValueError(f"mode must be 'joint' or 'separate', got {self.mode!r}")
        if min(self.max_steps, self.n_images, self.image_steps, self.calibration_samples) < 1 or self.warmup < 0:
            raise ValueError("max_steps, n_images, image_steps and calibration_samples must be >= 1, warmup >= 0")
        if not (math.isfinite(self.tau_rel) and self.tau_rel < 1 and self.tau_rel != 0):
            # τ ≥ the loss scale would stop at the first check, before any erasure.
            raise ValueError(f"tau_rel must be finite, below 1 and not 0, got {self.tau_rel}")
        for name in ("beta", "lr", "rank_tol"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        if not 0 <= self.momentum < 1 or self.reg < 0:
            raise ValueError("momentum must lie in [0, 1) and reg be >= 0")
        if self.tau is not None and not math.isfinite(self.tau):
            raise ValueError("tau must be finite")
        if "{}" not in self.template:
            raise ValueError("template must contain {} for the concept")
        if any(not stage for stage in self.stages):
            raise ValueError("each of stages must name at least one concept")
        for concept, captions in self.captions.items():
            if not captions or any("{}" not in c for c in captions):
                raise ValueError(f"captions for {concept!r} must be a non-empty list of templates containing {{}}")
        self.check_robust()


SepmeConfig.HELP = COMMON | ROBUST_HELP | {
    "mode": "joint: every concept's increment in one forward, losses balanced; separate: one at a time",
    "beta": "β in ΔW_k = β P_k S_k",
    "lr": "Adam learning rate of the coefficients P_k (initialised at zero)",
    "max_steps": "most optimisation steps (early stopping usually ends sooner)",
    "warmup": "steps before early stopping is checked",
    "momentum": "m in L_mom ← m·L_mom + (1 − m)·L_cor",
    "tau": "absolute stopping threshold of L_mom (SD 1.4: 1e-4); null: tau_rel × the loss scale",
    "tau_rel": "stopping threshold relative to the loss scale (negative: stop once anti-correlated)",
    "calibration_samples": "image/noise draws the loss scale (τ, the balance weights) is measured on",
    "reg": "λ of the L1 term (1/M) Σ_l ‖β P_l S‖₁",
    "rank_tol": "singular values below tol × σ_max count as zero when building null spaces",
    "template": "the concept's prompt; its per-token embeddings constrain the other concepts' increments",
    "captions": "per concept, caption templates ('{}' marks it) to train its representation in",
    "phrase_null": "∅ of a training prompt: false: ''; true: the caption without the concept",
    "protect": "extra prompts whose keys/values must not change",
    "stages": "concept groups trained one after another (empty: all in one stage)",
}
