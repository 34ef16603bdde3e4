"""SDD's configuration. Defaults: the authors' train_sdd.py."""

from __future__ import annotations

import math
from dataclasses import dataclass

from erasekit.core.pool_options import PoolOptions
from erasekit.core.robust_options import ROBUST_HELP, RobustOptions
from erasekit.methods.field_help import COMMON

# Who samples z_t: the EMA teacher (the authors' train_sdd.py), or the frozen base (trajectories that do
# not depend on training, so they can be pooled: docs/methods/baselines.md).
SAMPLERS = ("teacher", "base")


@dataclass
class SddConfig(PoolOptions, RobustOptions):
    steps: int = 1500
    lr: float = 1e-5
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    guidance: float = 3.0  # CFG of the sampling of z_t on all concepts joined
    sample_from: str = "teacher"
    sampling_steps: int = 50
    scope: str = "xattn"
    seed: int = 0
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.sampling_steps < 1:
            raise ValueError("steps and sampling_steps must be >= 1")
        if self.sample_from not in SAMPLERS:
            raise ValueError(f"sample_from must be one of {SAMPLERS}, got {self.sample_from!r}")
        self.check_pool()
        self.check_robust()
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError("lr must be positive and finite")
        if not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in (0, 1), got {self.ema_decay}")
        if self.scope not in ("xattn", "full"):
            raise ValueError(f"scope must be 'xattn' or 'full', got {self.scope!r}")

    def pooled(self) -> bool:
        return self.sample_from == "base"


SddConfig.HELP = COMMON | ROBUST_HELP | {
    "ema_decay": "decay of the EMA of the trained weights the patch is made from",
    "guidance": "classifier-free guidance of the sampling of z_t on all concepts joined",
    "sample_from": "whose trajectory z_t comes from: teacher (EMA teacher, the reference code) or base (poolable)",
    "scope": "weights that train: xattn (the paper) or another scope",
}
