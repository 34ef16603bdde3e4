"""UCE: one least-squares solve per layer that reads the text conditioning, no training loop.

The layers are the family's `readers`: a UNet's cross-attention to_k / to_v (per token), an MMDiT's
context_embedder (per token) and pooled text_embedder.linear_1 (per prompt: the pooled vectors).

For each projection W (out × in), with target embeddings c_i, their guides' v*_i = W c_guide(i)
and preserved embeddings c_j:

    W' = (λW + s_e Σ_i v*_i c_iᵀ + s_p Σ_j W c_j c_jᵀ)(λI + s_e Σ_i c_i c_iᵀ + s_p Σ_j c_j c_jᵀ)⁻¹

so the target's keys/values become the guide's (the anchor, or the empty prompt) while the
preserved concepts keep theirs. Token choice per docs/methods/baselines.md.

Robust erasure (`robust`, RECE, Gong et al. 2024; ../shared/papers/attacks-reference-notes.md §6): after
the edit, each epoch finds the embedding c′ the edited projections W still map where the original W⁰
mapped the concept's rows c,

    c′ = (Σ_l W_lᵀ W_l + λ I)⁻¹ (Σ_l W_lᵀ W⁰_l) c        (the sum over every per-token reader: to_k, to_v)

and erases c′ with the same closed form (guides' values under the current W, the same preserved set),
on the current weights. Where we differ: RECE takes all 77 rows of E(concept) and keeps an epoch only
when a NudeNet validation improves; we take the rows UCE edits (`tokens`) and run every epoch asked
for, choosing nothing on a validation set. A pooled reader (SD3's text_embedder) keeps its one UCE edit.
"""

from __future__ import annotations

import torch

from erasekit.core.attention import special_prefix
from erasekit.core.edit import EditSession, RunOptions
from erasekit.core.model import DiffusionModel
from erasekit.core.patch import Patch
from erasekit.methods.uce.config import UceConfig
from erasekit.request import EraseRequest


def uce_solve(
    weight: torch.Tensor,
    targets: torch.Tensor,
    guides: torch.Tensor,
    preserved: torch.Tensor,
    lamb: float,
    erase_scale: float,
    preserve_scale: float,
) -> torch.Tensor:
    """The closed-form edit of one projection; rows of targets/guides/preserved are embeddings (N, in)."""
    w = weight.double()
    c, g, p = targets.double(), guides.double(), preserved.double()
    eye = torch.eye(w.shape[1], dtype=torch.float64, device=w.device)
    v_star = g @ w.T  # (N, out): the guide's outputs under the old W
    left = lamb * w + erase_scale * v_star.T @ c
    right = lamb * eye + erase_scale * c.T @ c
    if len(p):
        left = left + preserve_scale * (w @ p.T) @ p
        right = right + preserve_scale * p.T @ p
    return torch.linalg.solve(right.T, left.T).T.to(weight.dtype)


def rece_embedding(current: list[torch.Tensor], original: list[torch.Tensor], rows: torch.Tensor,
                   lam: float) -> torch.Tensor:
    """c′ = (Σ WᵀW + λI)⁻¹ (Σ WᵀW⁰) c for each row of `rows` (N, in)."""
    eye = torch.eye(rows.shape[1], dtype=torch.float64, device=rows.device)
    a = lam * eye + sum(w.double().T @ w.double() for w in current)
    b = sum(w.double().T @ w0.double() for w, w0 in zip(current, original, strict=True))
    return torch.linalg.solve(a, b @ rows.double().T).T.to(rows.dtype)


def token_rows(model: DiffusionModel, text: str, mode: str, start: int | None = None, field: str = "hidden"
               ) -> tuple[torch.Tensor, int]:
    """Rows of `text`'s conditioning `field` and the position of its last word token: for "hidden", the
    chosen tokens' embeddings; for a pooled extra, its one row."""
    with torch.no_grad():
        cond = model.encode([text])
    tok = model.sequence_tokenizer  # CLIP: BOS, the words, EOS, padding; T5 (Flux): the words, EOS, padding
    prefix = special_prefix(tok)
    n_words = len(tok(text, add_special_tokens=False).input_ids)
    last = start if start is not None else max(prefix + n_words - 1, 0)
    if field != "hidden":
        return cond.extras[field][0:1], last
    hidden = cond.hidden[0]
    rows = hidden[last:] if mode == "last+eos" else hidden[last : last + 1]
    return rows, last


def _embedding_sets(model: DiffusionModel, request: EraseRequest, config: UceConfig, field: str):
    targets, guides = [], []
    for concept, anchor in zip(request.concepts, request.anchor_list(), strict=True):
        rows, last = token_rows(model, concept, config.tokens, field=field)
        # The guide's rows are taken at the same positions, so that the edit is aligned token by token.
        guide_rows, _ = token_rows(model, anchor or "", config.tokens, start=last, field=field)
        targets.append(rows)
        guides.append(guide_rows)
    preserved = []
    for text in ([""] if config.preserve_empty else []) + request.preserve:
        with torch.no_grad():
            cond = model.encode([text])
        preserved.append(cond.hidden[0] if field == "hidden" else cond.extras[field][0:1])
    dim = targets[0].shape[1]
    empty = torch.zeros(0, dim, device=model.device, dtype=targets[0].dtype)
    return torch.cat(targets), torch.cat(guides), torch.cat(preserved) if preserved else empty


def erase(model: DiffusionModel, request: EraseRequest, config: UceConfig, run: RunOptions | None = None) -> Patch:
    family = model.family
    with EditSession(model, family.reader_scope) as session:
        sets = {field: _embedding_sets(model, request, config, field) for field in {f for _, f in family.readers}}
        with torch.no_grad():
            for name, param in session.params.items():
                field = family.reader_field(name)
                if field is not None:
                    param.copy_(uce_solve(param, *sets[field], config.lamb, config.erase_scale,
                                          config.preserve_scale))
            shifts = rece(session, family, sets["hidden"], config) if config.robust else []
        info = {"anchors": request.anchors, **({"robust": {"epochs": len(shifts), "shift": shifts}} if shifts else {})}
        return session.to_patch("uce", config, request.concepts, info=info)


def rece(session: EditSession, family, sets, config: UceConfig) -> list[float]:
    """RECE's epochs on the per-token readers; per epoch, ‖c′ − c‖ / ‖c‖ of the adversarial embedding."""
    targets, guides, preserved = sets
    readers = [n for n in session.params if family.reader_field(n) == "hidden"]
    shifts = []
    for _ in range(config.robust_epochs):
        found = rece_embedding([session.params[n] for n in readers], [session.base[n] for n in readers], targets,
                               config.robust_lambda)
        shifts.append(float((found - targets).norm() / targets.norm()))
        for name in readers:
            param = session.params[name]
            param.copy_(uce_solve(param, found, guides, preserved, config.lamb, config.erase_scale,
                                  config.preserve_scale))
    return shifts
