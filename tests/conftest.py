"""Tiny models built in code, as diffusers' own tests do; slow tests need --runslow."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: needs --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def build_tiny_pipeline(tokenizer_dir, seed: int = 0, text_dim: int = 32):
    """A random-weight SD pipeline: UNet (32, 64), CLIP hidden 32, 2-block VAE, DDIM."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_dim,
        norm_num_groups=16,
        attention_head_dim=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=16,
        sample_size=16,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=text_dim,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def build_tiny_sd3_pipeline(tokenizer_dir, seed: int = 0, shift_factor: float = 0.1, text_dim: int = 16):
    """A random-weight SD3 pipeline: the toy MMDiT (4 layers, patch 1) over 16-wide CLIP encoders with
    projection, no T5, the flow-matching scheduler (shift 3), a VAE with a shift_factor."""
    from diffusers import StableDiffusion3Pipeline
    from transformers import CLIPTokenizer

    from erasekit.toyworld import models

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    vae = models.build_vae()
    vae.register_to_config(shift_factor=shift_factor)
    return StableDiffusion3Pipeline(
        transformer=models.build_mmdit(text_dim), scheduler=models.build_flow_scheduler(), vae=vae,
        text_encoder=models.build_text_encoder_with_projection(tokenizer, text_dim), tokenizer=tokenizer,
        text_encoder_2=models.build_text_encoder_with_projection(tokenizer, text_dim), tokenizer_2=tokenizer,
        text_encoder_3=None, tokenizer_3=None,
    )


def build_tiny_flux_pipeline(tokenizer_dir, seed: int = 0):
    """A random-weight Flux pipeline as diffusers' Flux tests build it (1 joint + 1 single block, head 16,
    rotary axes (4, 4, 8), guidance embedding), a 32-wide CLIP for the pooled vector, a 32-wide T5 that
    reads the toy tokenizer's ids, the toy VAE (4 latent channels → 16 packed); 32 px by default."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTokenizer, T5Config, T5EncoderModel

    from erasekit.toyworld import models

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 4, 8))
    t5 = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                 relative_attention_num_buckets=8))
    vae = models.build_vae()
    vae.register_to_config(shift_factor=0.1)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=models.build_text_encoder(tokenizer, 32),
                        tokenizer=tokenizer, text_encoder_2=t5, tokenizer_2=tokenizer, transformer=transformer)
    pipe.default_sample_size = 8  # 32 px: the toy VAE halves twice
    return pipe


def build_tiny_sdxl_pipeline(tokenizer_dir, seed: int = 0, text_dim: int = 32, prediction_type: str = "epsilon"):
    """A random-weight SDXL pipeline as diffusers' SDXL tests build it: UNet (32, 64) with the
    `text_time` addition embedding, a CLIP-L-like encoder (hidden `text_dim`) and a wider CLIP-G-like one
    with projection (hidden `text_dim` + 16, as bigG is wider than CLIP-L), context width their sum, DDIM."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    time_dim, wide = 8, text_dim + 16
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=time_dim, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * time_dim + wide, cross_attention_dim=text_dim + wide,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=16,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=16,
    )

    def clip(hidden: int) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=37, num_hidden_layers=3,
            num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length, projection_dim=hidden,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )

    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
    )
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(clip(text_dim)), text_encoder_2=CLIPTextModelWithProjection(clip(wide)),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
    )


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory, tokenizer_dir):
    """The tiny SDXL pipeline saved once as a diffusers directory."""
    path = tmp_path_factory.mktemp("tiny-sdxl") / "pipe"
    build_tiny_sdxl_pipeline(tokenizer_dir).save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    from erasekit.toyworld.tokenizer import save_tokenizer

    path = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tokenizer_dir):
    """The tiny pipeline saved once as a diffusers directory."""
    path = tmp_path_factory.mktemp("tiny") / "pipe"
    build_tiny_pipeline(tokenizer_dir).save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture
def tiny_model(tiny_dir):
    from erasekit.core.model import DiffusionModel

    return DiffusionModel.load(tiny_dir, device="cpu")


@pytest.fixture
def tiny_sd3_model(tokenizer_dir):
    from erasekit.core.model import DiffusionModel

    return DiffusionModel(build_tiny_sd3_pipeline(tokenizer_dir))
