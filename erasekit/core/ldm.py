"""Write a UNet pipeline (SD 1.x, SDXL) as one original-layout (LDM / SGM) .safetensors checkpoint.

This is the layout A1111, ComfyUI and diffusers' `from_single_file` read. It is
the inverse of diffusers' own LDM → diffusers conversion
(`diffusers.loaders.single_file_utils.convert_ldm_*_checkpoint`, `convert_open_clip_checkpoint`),
and the tests check it by loading the file back through that converter. Where each text encoder
goes, and in which layout (HF CLIP or OpenCLIP), is the family's `single_file_text`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from erasekit.core import files

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
HF_CLIP, OPEN_CLIP = "hf-clip", "open-clip"  # the two text-encoder layouts of the original checkpoints

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's pooled-text + size embedding
    "add_embedding.linear_2": "label_emb.0.2",
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


def _hf_clip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}text_model.{k}": v for k, v in state.items() if k != "text_projection.weight"}


def _open_clip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """OpenCLIP's names: fused q/k/v `in_proj`, `resblocks`, `c_fc`/`c_proj`, a (width, dim) projection."""
    out = {
        f"{prefix}token_embedding.weight": state["embeddings.token_embedding.weight"],
        f"{prefix}positional_embedding": state["embeddings.position_embedding.weight"],
        f"{prefix}ln_final.weight": state["final_layer_norm.weight"],
        f"{prefix}ln_final.bias": state["final_layer_norm.bias"],
    }
    if "text_projection.weight" in state:
        out[f"{prefix}text_projection"] = state["text_projection.weight"].T
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat([state[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for old, new in names.items():
                out[f"{dst}{new}.{kind}"] = state[f"{src}{old}.{kind}"]
    return out


_TEXT_LAYOUTS = {HF_CLIP: _hf_clip, OPEN_CLIP: _open_clip}


def diffusers_to_ldm(pipe, text_layout) -> dict[str, torch.Tensor]:
    """The original-layout state dict of a UNet pipeline; text_layout: (component, key prefix, layout) per
    text encoder."""
    out: dict[str, torch.Tensor] = {}
    unet_config = dict(pipe.unet.config)
    for key, value in pipe.unet.state_dict().items():
        out[UNET_PREFIX + _unet_key(key, unet_config)] = value
    vae_config = dict(pipe.vae.config)
    for key, value in pipe.vae.state_dict().items():
        name, tensor = _vae_key(key, value, vae_config)
        out[VAE_PREFIX + name] = tensor
    for component, prefix, layout in text_layout:
        # transformers 5 drops the `text_model.` level of CLIPTextModel; both layouts start below it.
        state = {k.removeprefix("text_model."): v for k, v in getattr(pipe, component).state_dict().items()}
        out.update(_TEXT_LAYOUTS[layout](state, prefix))
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


# SD 2.x's text encoder is OpenCLIP ViT-H (1024 wide). diffusers keeps 23 of its 24 layers (it reads the
# penultimate one), so the original layout cannot be written back whole: such a file would miss a layer
# that A1111 and ComfyUI expect.
OPENCLIP_WIDTH = 1024


def save_single_file(pipe, path: str | os.PathLike) -> Path:
    """Write the pipeline's weights as one original-layout .safetensors file, atomically (the family's layout;
    a family without one is refused)."""
    from erasekit.core.model import family_of_pipeline
    from erasekit.errors import ErasekitError

    family = family_of_pipeline(pipe)
    if not family.single_file_text:
        raise ErasekitError(f"single-file export: {family.single_file_note}")
    if family.single_file_text[0][2] == HF_CLIP and pipe.text_encoder.config.hidden_size == OPENCLIP_WIDTH:
        raise ErasekitError("single-file export writes SD 1.x's layout; this is an SD 2.x model (OpenCLIP text "
                            "encoder, of which diffusers keeps 23 of 24 layers), whose original layout cannot be "
                            "written whole: export a diffusers directory")
    path = Path(path)
    # The whole model: written by safetensors itself rather than doubled in memory as bytes.
    with files.atomic_path(path) as tmp:
        save_file(diffusers_to_ldm(pipe, family.single_file_text), str(tmp), metadata={"format": "pt"})
    return path
