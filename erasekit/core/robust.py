"""Robust erasure for any method whose student reads the concept's condition (AdvUnlearn's bi-level
scheme, as a core option; the settings: core.robust_options.RobustOptions).

    min_θ  L_method(θ; [δ*; c])   with   δ* = argmin_δ ‖ε_θ(x_t, t, E([δ; c])) − ε*(x_t, t, E(c))‖²

The inner problem is AdvUnlearn's attack (../shared/papers/attacks-reference-notes.md §5): prefix
embeddings δ under which the *current* student predicts what the frozen model predicts for the
concept, i.e. the embedding that brings the concept back. It runs on the method's own batch (x_t, t)
of that step, every `robust_every` steps, `robust_steps` Adam steps from the previous δ (their
`latest` init; the first δ is a random vocabulary token's row, their `random`); the outer step is the
method's own loss with E([δ; c]) where the student read E(c), its preservation terms untouched. The
first `robust_warmup` share of steps trains plainly (theirs: 200 of 1,000).

Where we differ: δ lives in every token table of the family (SDXL: both CLIP tables) through the
attacks' slot hook, and only δ's gradient is taken in the inner loop (theirs accumulates without
zeroing, a quirk we do not copy).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from erasekit.core.conditioning import Conditioning
from erasekit.core.distributed import processes
from erasekit.core.robust_options import RobustOptions
from erasekit.core.tokens import TokenSlots, decode, free_placeholders, word_vocabulary
from erasekit.errors import ErasekitError


class AdversarialPrefix:
    """The adversary of one training run: `condition(...)` gives the student's condition for a step."""

    def __init__(self, model, teacher: dict[str, torch.Tensor] | None, prompts: Sequence[str],
                 options: RobustOptions, total_steps: int, seed: int = 0) -> None:
        self.model, self.teacher, self.options = model, teacher, options
        tok = model.tokenizer
        self.slot_ids = free_placeholders(tok, options.robust_tokens, prompts)
        self.texts = [f"{decode(tok, self.slot_ids)} {p}" for p in prompts]
        self.slots = TokenSlots(model, self.slot_ids)
        self.start = int(options.robust_warmup * total_steps)
        gen = torch.Generator().manual_seed(seed + 7)
        vocab = torch.tensor(word_vocabulary(tok, set()))
        first = vocab[torch.randint(len(vocab), (options.robust_tokens,), generator=gen)].to(model.device)
        self.delta = {name: rows.float().clone().requires_grad_(True)
                      for name, rows in self.slots.table_rows(first).items()}
        self.optimizer = torch.optim.Adam(list(self.delta.values()), lr=options.robust_lr)
        self.attacks = 0
        self.last_loss: float | None = None

    def active(self, step: int) -> bool:
        return self.options.robust and step >= self.start

    def _encode(self, rows: torch.Tensor, delta: dict[str, torch.Tensor]) -> Conditioning:
        with self.slots:
            self.slots.set({name: d[None] for name, d in delta.items()}, torch.zeros(len(rows), dtype=torch.long))
            return self.model.encode([self.texts[int(r)] for r in rows])

    def _attack(self, x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor, plain: Conditioning) -> None:
        with torch.no_grad():
            wanted = self.model.eps(x, t, plain[None], self.teacher)[0]
        params = list(self.delta.values())
        for _ in range(self.options.robust_steps):
            loss = F.mse_loss(self.model.eps(x, t, self._encode(rows, self.delta)[None])[0], wanted)
            grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            self.optimizer.step()
            self.last_loss = float(loss.detach())
        self.attacks += 1

    def condition(self, step: int, x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor,
                  plain: Conditioning) -> Conditioning:
        """What the student reads for the concept prompts `rows` at this step: `plain` (E(c) of those
        rows) before the warm-up ends, E([δ; c]) after it, δ re-attacked on (x, t) every robust_every steps."""
        if not self.active(step):
            return plain
        if (step - self.start) % self.options.robust_every == 0:
            self._attack(x.detach(), t, rows, plain)
        # δ is fixed for the outer step; the encoder stays in the graph for methods that train it (CA's rows)
        return self._encode(rows, {name: d.detach() for name, d in self.delta.items()})

    def summary(self) -> dict:
        return {"attacks": self.attacks, "inner_loss": self.last_loss, "warmup_steps": self.start}


def adversary(model, session, config, prompts: Sequence[str], total_steps: int) -> AdversarialPrefix | None:
    """The run's adversary when `config.robust` is set (the frozen model: the session's teacher)."""
    if not getattr(config, "robust", False):
        return None
    if processes().num_processes > 1:
        # each process would attack its own share of the batch and keep its own δ: not the one-process run
        raise ErasekitError("robust erasure runs in one process (each process would keep its own adversary)")
    return AdversarialPrefix(model, session.teacher_denoiser(), prompts, config, total_steps, config.seed)


def robust_info(adv: AdversarialPrefix | None) -> dict:
    """What a patch's info records of its adversary (nothing without one)."""
    return {"robust": adv.summary()} if adv is not None else {}
