"""The SD3 family on a tiny random SD3 pipeline: conditioning and images as diffusers' own pipeline
builds and draws them (flow-matching sampler). Methods on SD3: tests/test_methods_contract.py."""

import pytest
import torch
from diffusers import StableDiffusion3Pipeline

from erasekit.core.model import DiffusionModel
from erasekit.core.sampler import generate_images


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory, tokenizer_dir):
    from conftest import build_tiny_sd3_pipeline

    pipe = build_tiny_sd3_pipeline(tokenizer_dir)
    path = tmp_path_factory.mktemp("sd3") / "pipe"
    pipe.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def sd3_model(sd3_dir):
    return DiffusionModel.load(sd3_dir, device="cpu")


def _plain(path) -> StableDiffusion3Pipeline:
    pipe = StableDiffusion3Pipeline.from_pretrained(path, text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_a_directory_loads_as_sd3_with_its_flow_scheduler(sd3_model):
    assert sd3_model.family.name == "sd3"
    assert type(sd3_model.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert list(sd3_model.named_modules()) == ["transformer", "text_encoder", "text_encoder_2"]
    assert sd3_model.context_dim == 32 and sd3_model.latent_shape == (4, 8, 8)


def test_conditioning_equals_the_pipelines_own_encoding(sd3_model, sd3_dir):
    ours = sd3_model.encode(["a red circle", ""])
    for i, prompt in enumerate(["a red circle", ""]):
        hidden, _, pooled, _ = _plain(sd3_dir).encode_prompt(prompt, None, None, device="cpu",
                                                             do_classifier_free_guidance=False)
        torch.testing.assert_close(ours.hidden[i], hidden[0])
        torch.testing.assert_close(ours.extras["pooled_projections"][i], pooled[0])


def test_images_equal_the_plain_pipelines_for_the_same_seeds(sd3_model, sd3_dir):
    prompts, seeds = ["a red circle", "a blue square on grass"], [0, 1]
    ours = generate_images(sd3_model, prompts, seeds, steps=3, guidance=5.0, progress=False)
    theirs = _plain(sd3_dir)(prompts, num_inference_steps=3, guidance_scale=5.0, output_type="pt", height=32,
                             width=32, generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    torch.testing.assert_close(ours, theirs.float(), atol=2e-5, rtol=0)
