"""Stable Diffusion 3 / 3.5: an MMDiT (SD3Transformer2DModel) whose text and image tokens share one joint
attention, flow matching, two CLIP encoders with projection and an optional T5.

Conditioning as diffusers' StableDiffusion3Pipeline.encode_prompt builds it: both CLIPs' penultimate
hidden states side by side, zero-padded (or cropped, as diffusers' F.pad does) on the feature axis to
the transformer's `joint_attention_dim`, then T5's last hidden state over `T5_TOKENS` tokens along the
sequence — or that many zero tokens when the pipeline has no T5. The pooled vector is both CLIPs'
projections side by side. The empty prompt is encoded like any other (SD3 has no zeroing flag).

What methods may touch: the text side of the joint attention (`add_q/k/v_proj`, `to_add_out`) is
where text meets the image tokens; `context_embedder` and the pooled `text_embedder` are where it
enters (UCE's and SepME's closed-form / null-space layers, `Family.readers`). There is no attn2
cross-attention (in SD3.5, `attn2` is a second self-attention over the image tokens, which nothing
hooks as cross-attention). Every method serves this family (docs/families.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from erasekit.core.families import Family, register_family
from erasekit.core.families.sd import token_ids
from erasekit.core.scopes import TEXT_ENCODER_DESCRIPTION, TEXT_ENCODER_LAYERS, TOKEN_EMBEDDING

T5_TOKENS = 256  # StableDiffusion3Pipeline's default max_sequence_length


def encode(pipe, prompts: Sequence[str], max_sequence_length: int = T5_TOKENS):
    import torch
    import torch.nn.functional as F

    from erasekit.core.conditioning import Conditioning

    hidden, pooled = [], []
    for tokenizer_name, encoder_name in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
        encoder = getattr(pipe, encoder_name)
        out = encoder(token_ids(getattr(pipe, tokenizer_name), prompts, encoder.device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled.append(out[0])
    clip = torch.cat(hidden, dim=-1)
    width = pipe.transformer.config.joint_attention_dim
    clip = F.pad(clip, (0, width - clip.shape[-1]))
    if pipe.text_encoder_3 is None:
        t5 = clip.new_zeros(len(prompts), max_sequence_length, width)
    else:
        ids = pipe.tokenizer_3(list(prompts), padding="max_length", max_length=max_sequence_length, truncation=True,
                               add_special_tokens=True, return_tensors="pt").input_ids
        t5 = pipe.text_encoder_3(ids.to(pipe.text_encoder_3.device))[0].to(clip.dtype)
    return Conditioning(torch.cat([clip, t5], dim=-2), {"pooled_projections": torch.cat(pooled, dim=-1)})


def transformer_inputs(x, t, hidden, extras: Mapping[str, Any]) -> tuple[tuple, dict[str, Any]]:
    return (x,), {"timestep": t, "encoder_hidden_states": hidden, "pooled_projections": extras["pooled_projections"]}


_TEXT_SIDE = re.compile(r"\.attn\.(add_[qkv]_proj|to_add_out)\.")
_TEXT_KV = re.compile(r"\.attn\.add_[kv]_proj\.")
_IMAGE_OUT = re.compile(r"\.attn2?\.to_out\.0\.")
_TEXT_PROJ = re.compile(r"^transformer\.(context_embedder|time_text_embed\.text_embedder)\.")

SCOPES = {
    "to_out": lambda n: n.startswith("transformer.") and bool(_IMAGE_OUT.search(n)),
    "xattn": lambda n: n.startswith("transformer.") and bool(_TEXT_SIDE.search(n)),
    "xattn-kv": lambda n: n.startswith("transformer.") and bool(_TEXT_KV.search(n)),
    "non-xattn": lambda n: n.startswith("transformer.") and not _TEXT_SIDE.search(n),
    "text-proj": lambda n: bool(_TEXT_PROJ.match(n)),
    "embedding": lambda n: bool(TOKEN_EMBEDDING.match(n)),
    "text-encoder": lambda n: bool(TEXT_ENCODER_LAYERS.match(n)),
    "full": lambda n: n.startswith("transformer."),
}
SCOPE_DESCRIPTIONS = {
    "to_out": "to_out.0 of the joint attention's image side (and of SD3.5's image self-attention attn2)",
    "xattn": "the text side of every joint attention: add_q_proj, add_k_proj, add_v_proj, to_add_out",
    "xattn-kv": "the text side's add_k_proj / add_v_proj",
    "non-xattn": "the transformer without the text side of its joint attention",
    "text-proj": "context_embedder and the pooled text_embedder (where UCE edits Flux)",
    "embedding": "rows of every text encoder's token embedding (only the given tokens train)",
    "text-encoder": TEXT_ENCODER_DESCRIPTION,
    "full": "every transformer parameter",
}

# Where an MMDiT's text enters: its tokens through context_embedder, the pooled vector through
# text_embedder.linear_1 (UCE's Flux recipe); add_k/v_proj read timestep-modulated text instead.
READERS = ((r"context_embedder\.weight$", "hidden"),
           (r"time_text_embed\.text_embedder\.linear_1\.weight$", "pooled_projections"))
# The family's layer of method defaults. AbO's paper scope, a UNet's cross-attention to_out, carries only what
# the image reads from the text; an MMDiT's image-side to_out also carries the image-to-image attention, so
# editing it moves every image. The text side of the joint attention is the place that reads the prompt
# (on the MMDiT toy world, calibration_abo_toyworld-mmdit.json: to_out's mean ssim_other 0.49–0.78 against
# xattn's 0.68–0.80 at the same rates, and to_out erases less).
METHOD_DEFAULTS = {"abo": {"scope": "xattn"}}

register_family(Family(
    name="sd3",
    description="Stable Diffusion 3 / 3.5 (MMDiT joint attention, flow matching; CLIP-L + CLIP-G, optional T5)",
    pipeline="StableDiffusion3Pipeline",
    class_names=("StableDiffusion3Pipeline",),
    components=("transformer", "text_encoder", "text_encoder_2", "text_encoder_3"),
    text_encoders=("text_encoder", "text_encoder_2", "text_encoder_3"),
    native_resolution=1024,
    encode=encode,
    denoiser_inputs=transformer_inputs,
    scopes=SCOPES,
    scope_descriptions=SCOPE_DESCRIPTIONS,
    capabilities=frozenset({"unconditional-branch", "text-attention-map"}),
    denoiser="transformer",
    context_key="joint_attention_dim",
    reader_scope="text-proj",
    readers=READERS,
    single_file_note="erasekit writes SD3 as a diffusers directory only",
    method_defaults=METHOD_DEFAULTS,
))
