"""SDXL: two CLIP text encoders (CLIP-L, OpenCLIP bigG), a UNet with a pooled-text + size embedding.

Conditioning as diffusers' StableDiffusionXLPipeline builds it: the penultimate hidden states of both
encoders joined on the feature axis (77 × 2048 for SDXL 1.0), CLIP-G's projected `text_embeds` as
the pooled vector, and `time_ids` = (original size, crop top-left, target size) at the native
resolution. With the pipeline's `force_zeros_for_empty_prompt` (SDXL base), the empty prompt is
all zeros, which is what sampling uses as the unconditional branch; every method's ε(∅) is the same.
Token positions: both tokenizers share CLIP's vocabulary and BPE, so a word sits at the same
positions in both; layouts are read from the first tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from erasekit.core.families import Family, register_family
from erasekit.core.families.sd import token_ids
from erasekit.core.scopes import UNET_SCOPE_DESCRIPTIONS, UNET_SCOPES

ENCODERS = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))


def encode(pipe, prompts: Sequence[str]):
    import torch

    from erasekit.core.conditioning import Conditioning

    hidden, pooled = [], None
    for tokenizer_name, encoder_name in ENCODERS:
        encoder = getattr(pipe, encoder_name, None)
        if encoder is None:  # refiner-style pipelines carry only the second encoder
            continue
        out = encoder(token_ids(getattr(pipe, tokenizer_name), prompts, encoder.device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        if out[0].dim() == 2:  # CLIPTextModelWithProjection's text_embeds
            pooled = out[0]
    joined = torch.cat(hidden, dim=-1)
    if pooled is None:
        raise ValueError("an SDXL pipeline needs a text encoder with projection (text_encoder_2)")
    size = pipe.default_sample_size * pipe.vae_scale_factor
    time_ids = torch.tensor([size, size, 0, 0, size, size], dtype=joined.dtype, device=joined.device)
    time_ids = time_ids.expand(len(prompts), 6)
    if pipe.config.get("force_zeros_for_empty_prompt", True):
        empty = torch.tensor([p == "" for p in prompts], device=joined.device)
        joined = joined.masked_fill(empty[:, None, None], 0.0)
        pooled = pooled.masked_fill(empty[:, None], 0.0)
    return Conditioning(joined, {"text_embeds": pooled, "time_ids": time_ids})


def unet_inputs(x, t, hidden, extras: Mapping[str, Any]) -> tuple[tuple, dict[str, Any]]:
    return (x, t, hidden), {"added_cond_kwargs": {"text_embeds": extras["text_embeds"], "time_ids": extras["time_ids"]}}


register_family(Family(
    name="sdxl",
    description="Stable Diffusion XL (UNet with text_time embedding, CLIP-L + OpenCLIP bigG; ε or v)",
    pipeline="StableDiffusionXLPipeline",
    class_names=("StableDiffusionXLPipeline",),
    components=("unet", "text_encoder", "text_encoder_2"),
    text_encoders=("text_encoder", "text_encoder_2"),
    native_resolution=1024,
    encode=encode,
    denoiser_inputs=unet_inputs,
    scopes=UNET_SCOPES,
    scope_descriptions=UNET_SCOPE_DESCRIPTIONS,
    single_file_marker="conditioner.embedders.1.model.",  # OpenCLIP bigG in the original SDXL layout
    single_file_text=(("text_encoder", "conditioner.embedders.0.transformer.", "hf-clip"),
                      ("text_encoder_2", "conditioner.embedders.1.model.", "open-clip")),
    # SDXL's pipeline samples at guidance 5.0 (SD 1.x: 7.5); methods that draw their training images from
    # the base model do so at the model's own default.
    method_defaults={"ca": {"image_guidance": 5.0}, "fmn": {"guidance": 5.0}, "sepme": {"image_guidance": 5.0}},
))
