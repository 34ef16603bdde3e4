"""Architectures of the toy world's networks: genuine SD and SD3 stacks at toy size, and the classifier."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import load_file
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from erasekit.core import files
from erasekit.toyworld.domain import ATTRIBUTES, IMAGE_SIZE
from erasekit.toyworld.tokenizer import MAX_LENGTH

LATENT_SIZE = IMAGE_SIZE // 4
TEXT_DIM = 128


def build_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=IMAGE_SIZE,
    )


def _clip_config(tokenizer: CLIPTokenizer, text_dim: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=text_dim,
        intermediate_size=4 * text_dim,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=text_dim,
    )


def build_text_encoder(tokenizer: CLIPTokenizer, text_dim: int = TEXT_DIM) -> CLIPTextModel:
    return CLIPTextModel(_clip_config(tokenizer, text_dim))


# The SD3-architecture world (toyworld-mmdit): two CLIP encoders with projection (SD3's CLIP-L and
# CLIP-G; no T5, which diffusers' SD3 pipeline replaces by zeros), an MMDiT over the shipped VAE's
# 8×8×4 latents (patch 1: 64 image tokens), flow matching with SD3's shift.
MMDIT_TEXT_DIM = 64  # each CLIP encoder; the joint context is both, side by side (SD3's 768 + 1280)
MMDIT_LAYERS, MMDIT_HEADS, MMDIT_HEAD_DIM = 4, 4, 32


def build_text_encoder_with_projection(tokenizer: CLIPTokenizer, text_dim: int = MMDIT_TEXT_DIM
                                       ) -> CLIPTextModelWithProjection:
    return CLIPTextModelWithProjection(_clip_config(tokenizer, text_dim))


def build_mmdit(text_dim: int = MMDIT_TEXT_DIM):
    from diffusers import SD3Transformer2DModel

    width = MMDIT_HEADS * MMDIT_HEAD_DIM
    return SD3Transformer2DModel(
        sample_size=LATENT_SIZE, patch_size=1, in_channels=4, out_channels=4, num_layers=MMDIT_LAYERS,
        attention_head_dim=MMDIT_HEAD_DIM, num_attention_heads=MMDIT_HEADS, joint_attention_dim=2 * text_dim,
        caption_projection_dim=width, pooled_projection_dim=2 * text_dim, pos_embed_max_size=LATENT_SIZE,
    )


def build_flow_scheduler():
    """SD3's flow-matching Euler scheduler (shift 3.0)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)


def build_unet(text_dim: int = TEXT_DIM) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        block_out_channels=(64, 128),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=text_dim,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def build_scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    """Stable Diffusion 1.x's schedule and DDIM settings; the UNet predicts ε or (SD 2.x 768) v."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def classifier_path() -> Path:
    """The shipped classifier, beside the toy-world pipeline directory."""
    from erasekit.core.sources import toyworld_dir

    directory = toyworld_dir()
    return directory.parent / f"{directory.name}-classifier.safetensors"


class AttributeClassifier(nn.Module):
    """Reads every toy-world attribute from a 32x32 image in [0, 1]: one head per attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Flatten(),
            nn.Linear(64 * (IMAGE_SIZE // 4) ** 2, 128),
            nn.GELU(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(128, len(values)) for name, values in ATTRIBUTES.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(images)
        return {name: head(h) for name, head in self.heads.items()}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features: the toy world's stand-in for Inception/CLIP features (FID, KID)."""
        return self.features(images)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: logits.argmax(-1) for name, logits in self(images).items()}

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_safetensors(path, self.state_dict(), metadata={"format": "pt"})

    @classmethod
    def load(cls, path: Path) -> AttributeClassifier:
        model = cls()
        model.load_state_dict(load_file(str(path)))
        return model.eval()
