"""Flux.1 (dev / schnell): an MMDiT (FluxTransformer2DModel: joint blocks, then single blocks over the
concatenated text + image tokens, rotary positions), flow matching, CLIP for the pooled vector and T5
for the token sequence.

As diffusers' FluxPipeline builds it: the sequence is T5's last hidden state over
`max_sequence_length` tokens (512 by default), the pooled vector CLIP's pooler output; the latents
(B, C, H, W) are packed into 2×2 patches, (B, H/2 · W/2, 4C), with image ids (row, column) and zero
text ids; the timestep goes in as σ = t / 1000; the scheduler's timesteps are set from the
pipeline's sigmas linspace(1, 1/N, N) and the resolution's shift mu. erasekit keeps the latents in
(B, C, H, W), so samplers, pools and losses are the ones every family uses; the family packs them on
the way into the transformer and unpacks its output.

Guidance: Flux-dev is guidance-distilled. Sampling gives the guidance scale to the transformer's
guidance embedding in one pass (no ε(∅) pass; the pipeline's default 3.5), which is what the plain
pipeline does. For the methods' decomposition into ε(c) and ε(∅) the conditioning carries guidance
1.0: the distilled model at scale 1 approximates the undistilled conditional prediction, and the
empty prompt's prediction at scale 1 the unconditional one (docs/families.md).

What methods may touch: the SD3 scope table carries over (same module names for the joint blocks'
text side, `to_out`, `context_embedder`, the pooled `text_embedder`); the single blocks share one
set of weights for text and image tokens, so only `non-xattn` / `full` reach them. The `embedding`
scope is not offered: the sequence comes from T5, whose vocabulary is not the first tokenizer's.
Token positions (UCE's rows, FMN's columns, AbO's suppressed tokens) come from the sequence's own
tokenizer (T5's, no BOS); attention control goes through core.attention's ControlledFluxAttnProcessor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from erasekit.core.families import Family, register_family
from erasekit.core.families.sd import token_ids
from erasekit.core.families.sd3 import METHOD_DEFAULTS, READERS, SCOPE_DESCRIPTIONS, SCOPES

T5_TOKENS = 512  # FluxPipeline's default max_sequence_length
DISTILLED_GUIDANCE = 1.0  # the guidance embedding the methods' predictions are taken at (see above)


def encode(pipe, prompts: Sequence[str], max_sequence_length: int = T5_TOKENS):
    import torch

    from erasekit.core.conditioning import Conditioning

    pooled = pipe.text_encoder(token_ids(pipe.tokenizer, prompts, pipe.text_encoder.device),
                               output_hidden_states=False).pooler_output
    ids = pipe.tokenizer_2(list(prompts), padding="max_length", max_length=max_sequence_length, truncation=True,
                           return_tensors="pt").input_ids
    hidden = pipe.text_encoder_2(ids.to(pipe.text_encoder_2.device), output_hidden_states=False)[0]
    extras = {"pooled_projections": pooled.to(hidden.dtype)}
    if pipe.transformer.config.guidance_embeds:
        # (N, 1): extras keep a feature axis last, as the Conditioning's indexing expects
        extras["guidance"] = torch.full((len(prompts), 1), DISTILLED_GUIDANCE, device=hidden.device)
    return Conditioning(hidden, extras)


def _image_ids(height: int, width: int, device, dtype):
    import torch

    ids = torch.zeros(height, width, 3, device=device, dtype=dtype)
    ids[..., 1] = torch.arange(height, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(width, device=device, dtype=dtype)[None, :]
    return ids.reshape(height * width, 3)


def transformer_inputs(x, t, hidden, extras: Mapping[str, Any]) -> tuple[tuple, dict[str, Any]]:
    n, c, h, w = x.shape
    guidance = extras.get("guidance")
    packed = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // 2) * (w // 2), c * 4)
    return (), {
        "hidden_states": packed,
        "timestep": t / 1000,
        "guidance": None if guidance is None else guidance[:, 0],
        "pooled_projections": extras["pooled_projections"],
        "encoder_hidden_states": hidden,
        "txt_ids": hidden.new_zeros(hidden.shape[1], 3),
        "img_ids": _image_ids(h // 2, w // 2, x.device, x.dtype),
    }


def transformer_output(packed, shape: tuple[int, ...]):
    n, c, h, w = shape
    return packed.view(n, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def latent_size(pipe) -> tuple[int, int]:
    """The pipeline's default resolution (default_sample_size · vae_scale_factor) in latents, made even
    for the 2×2 packing, as FluxPipeline.prepare_latents does."""
    return pipe.vae.config.latent_channels, 2 * (pipe.default_sample_size // 2)


def timestep_options(pipe, steps: int, latent_shape: tuple[int, ...]) -> dict[str, Any]:
    """FluxPipeline's sigmas and resolution-dependent shift mu (calculate_shift on the packed length)."""
    import numpy as np
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    config = pipe.scheduler.config
    tokens = (latent_shape[-2] // 2) * (latent_shape[-1] // 2)
    mu = calculate_shift(tokens, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                         config.get("base_shift", 0.5), config.get("max_shift", 1.15))
    return {"sigmas": np.linspace(1.0, 1 / steps, steps).tolist(), "mu": mu}


register_family(Family(
    name="flux",
    description="Flux.1 dev / schnell (MMDiT with single blocks, flow matching, guidance-distilled; CLIP + T5)",
    pipeline="FluxPipeline",
    class_names=("FluxPipeline",),
    components=("transformer", "text_encoder", "text_encoder_2"),
    text_encoders=("text_encoder", "text_encoder_2"),
    native_resolution=1024,
    encode=encode,
    denoiser_inputs=transformer_inputs,
    denoiser_output=transformer_output,
    latent_size=latent_size,
    timestep_options=timestep_options,
    cfg=False,
    sequence_tokenizer="tokenizer_2",
    # its sequence comes from T5, whose tables and layers these scopes do not reach (CLIP gives the pooled vector)
    scopes={k: v for k, v in SCOPES.items() if k not in ("embedding", "text-encoder")},
    scope_descriptions={**{k: v for k, v in SCOPE_DESCRIPTIONS.items() if k not in ("embedding", "text-encoder")},
                        "to_out": "to_out.0 of the joint blocks' image side (the single blocks have none)",
                        "xattn": "the joint blocks' text side: add_q_proj, add_k_proj, add_v_proj, to_add_out",
                        "non-xattn": "the transformer without the joint blocks' text side (single blocks included)",
                        "text-proj": "context_embedder (T5 tokens) and the pooled text_embedder (CLIP)"},
    capabilities=frozenset({"unconditional-branch", "text-attention-map"}),
    denoiser="transformer",
    context_key="joint_attention_dim",
    reader_scope="text-proj",
    readers=READERS,
    single_file_note="erasekit writes Flux as a diffusers directory only",
    method_defaults=METHOD_DEFAULTS,  # SD3's reasons hold for Flux's joint blocks
))
