"""Named selections of trainable parameters (what a method is allowed to change).

Parameter names carry their component as prefix: `unet.<name>`, `text_encoder.<name>`,
`text_encoder_2.<name>`, the same names patches store. Each model family maps the scope names to
its own modules (erasekit.core.families); the UNet families (SD, SDXL) share the table here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from erasekit.errors import ErasekitError

if TYPE_CHECKING:  # torch loads with the model, not for `erasekit ls scopes`
    import torch

log = logging.getLogger(__name__)

# transformers 4 names it text_model.embeddings..., transformers 5 embeddings...; every text encoder
# of the family (SDXL: text_encoder and text_encoder_2) has its own table.
TOKEN_EMBEDDING = re.compile(r"^text_encoder(_\d)?\.(text_model\.)?embeddings\.token_embedding\.weight$")
# AdvUnlearn's text_encoder_full: every CLIP text encoder's transformer layers and final layer norm (token and
# position embeddings, SDXL's text_projection and SD3's T5 stay frozen).
TEXT_ENCODER_LAYERS = re.compile(r"^text_encoder(_\d)?\.(text_model\.)?(encoder\.layers\.|final_layer_norm\.)")
TEXT_ENCODER_DESCRIPTION = ("every CLIP text encoder's layers and final layer norm (AdvUnlearn's module: the "
                            "student reads its conditions through them)")

_TO_OUT = re.compile(r"\.attn[12]\.to_out\.0\.")
_XATTN = re.compile(r"\.attn2\.")
_XATTN_KV = re.compile(r"\.attn2\.to_[kv]\.")
# ESD-u as in the ESD paper code: everything in the UNet except cross-attention, the time
# embedding and the output head (conv_norm_out / conv_out).
_NON_XATTN_EXCLUDE = re.compile(r"(\.attn2\.|^unet\.time_embedding\.|^unet\.conv_norm_out\.|^unet\.conv_out\.)")

UNET_SCOPES: dict[str, Callable[[str], bool]] = {
    "to_out": lambda n: n.startswith("unet.") and bool(_TO_OUT.search(n)),
    "xattn": lambda n: n.startswith("unet.") and bool(_XATTN.search(n)),
    "xattn-kv": lambda n: n.startswith("unet.") and bool(_XATTN_KV.search(n)),
    "non-xattn": lambda n: n.startswith("unet.") and not _NON_XATTN_EXCLUDE.search(n),
    "embedding": lambda n: bool(TOKEN_EMBEDDING.match(n)),
    "text-encoder": lambda n: bool(TEXT_ENCODER_LAYERS.match(n)),
    "full": lambda n: n.startswith("unet."),
}
UNET_SCOPE_DESCRIPTIONS = {
    "to_out": "to_out.0 of self- (attn1) and cross-attention (attn2) in the UNet",
    "xattn": "all cross-attention (attn2) projections of the UNet (ESD-x)",
    "xattn-kv": "cross-attention to_k / to_v of the UNet",
    "non-xattn": "the UNet without cross-attention, time embedding and output head (ESD-u)",
    "embedding": "rows of every text encoder's token embedding (only the given tokens train)",
    "text-encoder": TEXT_ENCODER_DESCRIPTION,
    "full": "every UNet parameter",
}


@dataclass
class Selection:
    """The parameters a scope selects, frozen everything else, and how many values train."""

    scope: str
    params: dict[str, torch.nn.Parameter]
    trainable_count: int
    hooks: list = field(default_factory=list)  # gradient masks to remove when training ends
    row_mask: torch.Tensor | None = None  # embedding scope: 1 for the rows that may change


def named_parameters(modules: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Parameter]:
    return {f"{prefix}.{name}": p for prefix, module in modules.items() for name, p in module.named_parameters()}


def select(
    modules: dict[str, torch.nn.Module], scope: str, token_ids: Sequence[int] | None = None,
    scopes: Mapping[str, Callable[[str], bool]] = UNET_SCOPES,
) -> Selection:
    """Freeze every parameter, then unfreeze and return those of `scope` (in the family's `scopes`).

    For `embedding`, only the rows of `token_ids` receive gradient (a hook zeroes the rest), in every
    token table the scope selects (the tokenizers of a family share one vocabulary).
    """
    if scope not in scopes:
        from erasekit.registry import suggest

        raise ErasekitError(f"unknown parameter scope {scope!r}{suggest(scope, scopes)}")
    every = named_parameters(modules)
    for p in every.values():
        p.requires_grad_(False)
    chosen = {n: p for n, p in every.items() if scopes[scope](n)}
    if not chosen:
        raise ErasekitError(f"scope {scope!r} selects no parameter of this model")
    for p in chosen.values():
        p.requires_grad_(True)
    count = sum(p.numel() for p in chosen.values())
    if scope == "embedding":
        if not token_ids:
            raise ErasekitError("scope 'embedding' needs the token ids whose rows may change")
        import torch

        rows = {p.shape[0] for p in chosen.values()}
        if len(rows) != 1:
            raise ErasekitError(f"scope 'embedding': the token tables differ in size {sorted(rows)}")
        weight = next(iter(chosen.values()))
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        mask[list(token_ids)] = 1.0
        hooks = [p.register_hook(lambda grad: grad * mask) for p in chosen.values()]
        count = len(set(token_ids)) * sum(p.shape[1] for p in chosen.values())
        log.info("scope %s: %d tensors, %d trainable values", scope, len(chosen), count)
        return Selection(scope=scope, params=chosen, trainable_count=count, hooks=hooks, row_mask=mask)
    log.info("scope %s: %d tensors, %d trainable values", scope, len(chosen), count)
    return Selection(scope=scope, params=chosen, trainable_count=count)
