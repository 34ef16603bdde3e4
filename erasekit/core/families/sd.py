"""Stable Diffusion 1.x and 2.x: one CLIP text encoder, a UNet with cross-attention (attn2), ε or v."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from erasekit.core.families import Family, register_family
from erasekit.core.scopes import UNET_SCOPE_DESCRIPTIONS, UNET_SCOPES


def token_ids(tokenizer, prompts: Sequence[str], device):
    """Prompts padded to the tokenizer's full length, as the diffusers pipelines tokenize them."""
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)


def encode(pipe, prompts: Sequence[str]):
    """The text encoder's last hidden state (after its final layer norm), as StableDiffusionPipeline."""
    from erasekit.core.conditioning import Conditioning

    encoder = pipe.text_encoder
    return Conditioning(encoder(token_ids(pipe.tokenizer, prompts, encoder.device))[0])


def unet_inputs(x, t, hidden, extras: Mapping[str, Any]) -> tuple[tuple, dict[str, Any]]:
    return (x, t, hidden), {}


register_family(Family(
    name="sd",
    description="Stable Diffusion 1.x / 2.x (UNet, CLIP text encoder; ε- or v-prediction)",
    pipeline="StableDiffusionPipeline",
    class_names=("StableDiffusionPipeline",),
    components=("unet", "text_encoder"),
    text_encoders=("text_encoder",),
    native_resolution=512,
    encode=encode,
    denoiser_inputs=unet_inputs,
    scopes=UNET_SCOPES,
    scope_descriptions=UNET_SCOPE_DESCRIPTIONS,
    single_file_text=(("text_encoder", "cond_stage_model.transformer.", "hf-clip"),),
    load_kwargs={"safety_checker": None, "requires_safety_checker": False},  # erasekit measures, it does not filter
))
