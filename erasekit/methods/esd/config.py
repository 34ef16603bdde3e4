"""ESD's configuration. Defaults: the paper's code (train-esd.py), ESD-x, x_t sampled by the student."""

from __future__ import annotations

import math
from dataclasses import dataclass

from erasekit.core.pool_options import PoolOptions
from erasekit.core.robust_options import ROBUST_HELP, RobustOptions
from erasekit.methods.field_help import COMMON

# te: the text encoder's layers, the module AdvUnlearn trains (its ESD objective with --set robust=true)
VARIANTS = {"x": "xattn", "u": "non-xattn", "x-strict": "xattn-kv", "te": "text-encoder"}
# Who samples x_t: the student being trained (the paper's train-esd.py) or the frozen base (the authors'
# later diffusers code, esd_sd.py), whose trajectories do not depend on the student and so can be pooled.
SAMPLERS = ("student", "base")


@dataclass
class EsdConfig(PoolOptions, RobustOptions):
    variant: str = "x"  # x: cross-attention (ESD-x), u: everything else (ESD-u), x-strict: attn2 to_k/to_v,
    # te: the text encoder
    steps: int = 1000
    lr: float = 1e-5
    eta: float = 1.0  # negative-guidance strength η
    start_guidance: float = 3.0  # CFG of the sampling of x_t
    sample_from: str = "student"
    sampling_steps: int = 50
    grad_clip: float | None = None
    seed: int = 0
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {self.variant!r}")
        if self.steps < 1 or self.sampling_steps < 1:
            raise ValueError("steps and sampling_steps must be >= 1")
        if self.sample_from not in SAMPLERS:
            raise ValueError(f"sample_from must be one of {SAMPLERS}, got {self.sample_from!r}")
        self.check_pool()
        self.check_robust()
        for name in ("lr", "eta", "start_guidance"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")
        if self.lr <= 0:
            raise ValueError("lr must be positive")

    @property
    def scope(self) -> str:
        return VARIANTS[self.variant]

    def pooled(self) -> bool:
        return self.sample_from == "base"


EsdConfig.HELP = COMMON | ROBUST_HELP | {
    "variant": "x: attn2 (ESD-x); u: all but attn2 (ESD-u); x-strict: attn2 to_k/to_v; te: text encoder (AdvUnlearn)",
    "eta": "η: negative-guidance strength of the target ε_base(x_t) − η (ε_base(x_t, c) − ε_base(x_t))",
    "start_guidance": "classifier-free guidance of the sampling of x_t",
    "sample_from": "whose trajectory x_t comes from: student (the reference code) or base (poolable)",
}
