"""Concept Ablation's configuration. Defaults: the authors' diffusers/train.py and README (SD)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from erasekit.core.robust_options import ROBUST_HELP, RobustOptions
from erasekit.errors import ErasekitError
from erasekit.methods.field_help import COMMON

SCOPES = ("xattn-kv", "embedding", "text-encoder", "full")
VARIANTS = ("model", "noise")



@dataclass
class CaConfig(RobustOptions):
    variant: str = "model"  # model-based: match the frozen base's ε for the anchor; noise-based: match ε
    scope: str = "xattn-kv"
    steps: int = 200
    lr: float = 1e-5
    batch_size: int = 4
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    prior_weight: float = 0.0  # prior-preservation loss on anchor images (the authors: 1.0 when on)
    teacher: str = "frozen"  # "frozen": the pretrained model, as the paper writes; "live": the authors' code
    n_images: int = 1000
    image_steps: int = 25
    image_guidance: float = 6.0
    prompt_templates: list[str] = field(default_factory=lambda: ["a photo of a {}", "a picture of a {}",
                                                                 "an image of a {}", "{}"])
    # per concept, in the request's order, its own templates (concepts of different kinds erased at once)
    concept_templates: list[list[str]] = field(default_factory=list)
    anchor_prompts: list[str] = field(default_factory=list)  # a user's own list (must contain the anchor)
    seed: int = 0
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        self.check_robust()
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.teacher not in ("frozen", "live"):
            raise ValueError(f"teacher must be 'frozen' or 'live', got {self.teacher!r}")
        if min(self.steps, self.batch_size, self.n_images, self.image_steps) < 1:
            raise ValueError("steps, batch_size, n_images and image_steps must be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.prior_weight < 0:
            raise ValueError("lr must be positive and prior_weight >= 0")
        for templates in (self.prompt_templates, *self.concept_templates):
            if not templates or any("{}" not in t for t in templates):
                raise ValueError("prompt_templates and each list of concept_templates must be a non-empty list of "
                                 "templates containing {}")


def check_request(request, config: CaConfig) -> None:
    """Per-concept templates name every concept of the request, in its order."""
    if config.concept_templates and len(config.concept_templates) != len(request.concepts):
        raise ErasekitError(f"concept_templates has {len(config.concept_templates)} lists of templates for "
                            f"{len(request.concepts)} concepts: give one list per concept, in the request's order")


CaConfig.HELP = COMMON | ROBUST_HELP | {
    "variant": "model: match the frozen base's prediction for the anchor; noise: match the added noise",
    "scope": "weights that train: xattn-kv (the paper), embedding, text-encoder (AdvUnlearn's module) or full",
    "prior_weight": "weight of the prior-preservation loss on anchor images (0: off; the authors: 1.0 when on)",
    "teacher": "frozen: the pretrained model gives targets (the paper); live: the trained model (the authors' code)",
    "prompt_templates": "caption templates around the concept ('{}' marks it) the training prompts come from",
    "concept_templates": "per concept, in the request's order, its own templates; empty: prompt_templates for all",
    "anchor_prompts": "your own anchor prompts (must contain the anchor); empty: the templates",
}
