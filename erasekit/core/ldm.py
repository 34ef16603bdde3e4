"""Write a Stable Diffusion 1.x pipeline as one original-layout (LDM) .safetensors checkpoint.

This is the layout A1111, ComfyUI and diffusers' `from_single_file` read. It is
the inverse of diffusers' own LDM → diffusers conversion
(`diffusers.loaders.single_file_utils.convert_ldm_*_checkpoint`), and the tests
check it by loading the file back through that converter.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_key(key: str, config: dict) -> str:
    per = config["layers_per_block"] + 1
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    head, _, tail = key.rpartition(".")  # tail is weight / bias
    for old, new in _UNET_TOP.items():
        if head == old:
            return f"{new}.{tail}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", head):
        i, j, part = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + i * per + j}.0.{_UNET_RESNET[part]}.{tail}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        i, j = int(m[1]), int(m[2])
        return f"input_blocks.{1 + i * per + j}.1.{m[3]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", head):
        return f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{tail}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(\w+)", head):
        return f"middle_block.{2 * int(m[1])}.{_UNET_RESNET[m[2]]}.{tail}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)", head):
        i, j = int(m[1]), int(m[2])
        return f"output_blocks.{i * per + j}.0.{_UNET_RESNET[m[3]]}.{tail}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
        i, j = int(m[1]), int(m[2])
        return f"output_blocks.{i * per + j}.1.{m[3]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", head):
        i = int(m[1])
        return f"output_blocks.{i * per + per - 1}.{2 if up_has_attn[i] else 1}.conv.{tail}"
    raise KeyError(f"no LDM name for UNet parameter {key!r}")


def _vae_key(key: str, tensor: torch.Tensor, config: dict) -> tuple[str, torch.Tensor]:
    n_up = len(config["up_block_types"])
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
        part = _VAE_ATTN[m[2]]
        if m[3] == "weight" and tensor.dim() == 2:
            tensor = tensor[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        return f"{m[1]}.mid.attn_1.{part}.{m[3]}", tensor
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}", tensor
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}", tensor
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", tensor
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(.+)", key):
        return f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}", tensor
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}", tensor
    return key, tensor


def diffusers_to_ldm(pipe) -> dict[str, torch.Tensor]:
    """The original-layout state dict of a StableDiffusionPipeline (SD 1.x text encoder)."""
    out: dict[str, torch.Tensor] = {}
    unet_config = dict(pipe.unet.config)
    for key, value in pipe.unet.state_dict().items():
        out[UNET_PREFIX + _unet_key(key, unet_config)] = value
    vae_config = dict(pipe.vae.config)
    for key, value in pipe.vae.state_dict().items():
        name, tensor = _vae_key(key, value, vae_config)
        out[VAE_PREFIX + name] = tensor
    for key, value in pipe.text_encoder.state_dict().items():
        # transformers 5 drops the `text_model.` level that SD 1.x checkpoints carry.
        name = key if key.startswith("text_model.") else f"text_model.{key}"
        out[CLIP_PREFIX + name] = value
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


# SD 2.x's text encoder is OpenCLIP ViT-H (1024 wide), stored as `cond_stage_model.model.*` in the
# original layout; this module writes SD 1.x's HF-CLIP layout only.
OPENCLIP_WIDTH = 1024


def save_single_file(pipe, path: str | os.PathLike) -> Path:
    """Write the pipeline's weights as one LDM-layout .safetensors file, atomically."""
    from erasekit.errors import ErasekitError

    if pipe.text_encoder.config.hidden_size == OPENCLIP_WIDTH:
        raise ErasekitError("single-file export writes SD 1.x's layout; this is an SD 2.x model (OpenCLIP text "
                            "encoder), whose original layout is not written: export a diffusers directory")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(diffusers_to_ldm(pipe), str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)
    return path
