"""The robust-erasure fields a training method's config shares (light: no torch, so configs stay instant)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ROBUST_HELP: dict[str, str] = {
    "robust": "robust erasure: train against an adversarial prefix token re-attacked during training (AdvUnlearn)",
    "robust_every": "re-attack the student every N outer steps (the adversarial prefix is kept in between)",
    "robust_steps": "inner attack steps per re-attack (Adam on the prefix embedding)",
    "robust_lr": "inner attack learning rate",
    "robust_warmup": "share of the outer steps trained without the adversary first",
    "robust_tokens": "adversarial prefix tokens",
    "robust_attack": "where the adversary's tokens go: prefix (AdvUnlearn's default) or replace (in the concept "
                     "word's place)",
    "robust_latents": "where the inner attack runs: batch (the method's) or concept (the concept's own images)",
    "robust_contexts": "sentence templates ('{}': the method's prompt) the adversary is also put in",
    "robust_retain": "weight γ of the retain term: keep the frozen model's prediction on retain prompts (0: off)",
    "robust_retain_prompts": "what the retain term keeps (empty: the model's set, else COCO objects; "
                             "erased ones left out)",
    "retain": "weight of the retain term (robust_retain_prompts) on a plain erase, from step 0 (0: off)",
    "retain_encoding": "where a text encoder trains: weight keeping its retain-prompt outputs at the frozen ones "
                       "(0: off)",
}

ROBUST_ATTACKS = ("prefix", "replace")
ROBUST_LATENTS = ("batch", "concept")


@dataclass
class RobustOptions:
    """AdvUnlearn's bi-level training for any method whose student reads the concept's condition c
    (core.robust.AdversarialPrefix): every `robust_every` steps, `robust_steps` Adam steps find prefix
    embeddings δ under which the current student predicts what the frozen model predicts for c; the
    method's own step then trains on [δ; c] in c's place, its preservation terms unchanged, plus their
    utility-retain term γ·ℓ_r on retain prompts while the adversary is on. Defaults: the authors' code
    (1 prefix token, 30 inner steps at lr 1e-3 each iteration, the first 200 of 1,000 iterations without
    the adversary, γ 0.3 as their README runs it); off unless `robust` is set."""

    robust: bool = False
    robust_every: int = 1
    robust_steps: int = 30
    robust_lr: float = 1e-3
    robust_warmup: float = 0.2
    robust_tokens: int = 1
    # AdvUnlearn's attack_type: prefix_k (their default) or replace_k. Ours replaces the concept's word and keeps
    # the rest of the prompt, which is what Concept Inversion and the hard prompt attack (core.robust).
    robust_attack: str = "prefix"
    # AdvUnlearn attacks on z_t of the concept prompt, which is also ESD's, SDD's and FMN's own batch; abo trains
    # on the anchor's trajectories and CA on noised anchor images, so their batch never shows the concept, while
    # Concept Inversion learns its embedding on the concept's images (core.robust).
    robust_latents: str = "batch"
    # Not in AdvUnlearn (its prompt is the bare concept, as abo's and ESD's are): Concept Inversion and the prompt
    # attacks put their tokens in sentences ("a photo of a red <z> on snow"), which the text encoder reads
    # differently from the word alone; templates here train the student against δ in such sentences too.
    robust_contexts: list[str] = field(default_factory=list)
    robust_retain: float = 0.3
    robust_retain_prompts: list[str] = field(default_factory=list)
    # The same retain term without the adversary: a preservation term any training method can add (not in
    # the papers, so 0 in their layer). A robust run keeps robust_retain instead.
    retain: float = 0.0
    # Not in AdvUnlearn: with the text encoder trained, the retain prompts' encodings are what the denoiser
    # reads, so holding them guards those prompts directly (core.robust, RetainTerm; what it does for the other
    # prompts is measured per method: docs/methods/abo.md, ca.md).
    retain_encoding: float = 0.0

    def check_robust(self) -> None:
        if self.robust_every < 1 or self.robust_steps < 1 or self.robust_tokens < 1:
            raise ValueError("robust_every, robust_steps and robust_tokens must be >= 1")
        if not (math.isfinite(self.robust_lr) and self.robust_lr > 0):
            raise ValueError("robust_lr must be a positive finite number")
        if self.robust_attack not in ROBUST_ATTACKS:
            raise ValueError(f"robust_attack must be one of {', '.join(ROBUST_ATTACKS)}, got {self.robust_attack!r}")
        if self.robust_latents not in ROBUST_LATENTS:
            raise ValueError(f"robust_latents must be one of {', '.join(ROBUST_LATENTS)}, got {self.robust_latents!r}")
        if not all(isinstance(c, str) and c.count("{}") == 1 for c in self.robust_contexts):
            raise ValueError("robust_contexts must be prompt templates with one '{}' where the method's prompt goes")
        if not 0.0 <= self.robust_warmup < 1.0:
            raise ValueError("robust_warmup must be in [0, 1)")
        for name in ("robust_retain", "retain", "retain_encoding"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0")
        if not all(isinstance(p, str) and p.strip() for p in self.robust_retain_prompts):
            raise ValueError("robust_retain_prompts must be a list of non-empty prompts")


def robust_fields() -> tuple[str, ...]:
    return tuple(ROBUST_HELP)
