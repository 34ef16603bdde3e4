"""The SD3-architecture toy world's trainer: it conditions and noises exactly as diffusers' SD3 stack
does, and what it exports loads as a plain StableDiffusion3Pipeline."""

import pytest
import torch

from erasekit.toyworld import models, train


@pytest.fixture(scope="module")
def sd3_pipe(tokenizer_dir):
    from diffusers import StableDiffusion3Pipeline
    from transformers import CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    vae = models.build_vae()
    vae.register_to_config(shift_factor=0.0)
    return StableDiffusion3Pipeline(
        transformer=models.build_mmdit(16), scheduler=models.build_flow_scheduler(), vae=vae,
        text_encoder=models.build_text_encoder_with_projection(tokenizer, 16), tokenizer=tokenizer,
        text_encoder_2=models.build_text_encoder_with_projection(tokenizer, 16), tokenizer_2=tokenizer,
        text_encoder_3=None, tokenizer_3=None,
    )


def test_training_conditioning_is_the_pipelines_own(sd3_pipe):
    prompts = ["a red circle on snow", ""]
    ids = sd3_pipe.tokenizer(prompts, padding="max_length", max_length=sd3_pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
    hidden, pooled = train.sd3_conditioning([sd3_pipe.text_encoder, sd3_pipe.text_encoder_2], ids)
    for i, prompt in enumerate(prompts):
        ref_hidden, _, ref_pooled, _ = sd3_pipe.encode_prompt(prompt, None, None, device="cpu",
                                                              do_classifier_free_guidance=False,
                                                              max_sequence_length=train.T5_TOKENS)
        torch.testing.assert_close(hidden[i], ref_hidden[0])
        torch.testing.assert_close(pooled[i], ref_pooled[0])
    assert hidden.shape[1] == sd3_pipe.tokenizer.model_max_length + train.T5_TOKENS


def test_training_sigmas_follow_the_schedulers_shift():
    scheduler = models.build_flow_scheduler()
    n = scheduler.config.num_train_timesteps
    unshifted = torch.linspace(1, n, n).flip(0) / n
    torch.testing.assert_close(train.flow_sigmas(scheduler, unshifted), scheduler.sigmas[:n].float(), atol=1e-5,
                               rtol=0)


def test_an_mmdit_world_exports_a_plain_sd3_pipeline(sd3_pipe, tmp_path, monkeypatch):
    from diffusers import StableDiffusion3Pipeline
    from safetensors.torch import save_file

    out = tmp_path / "world"
    out.mkdir()
    sd3_pipe.tokenizer.save_pretrained(out / "tokenizer")
    models.build_vae().save_pretrained(out / "vae")
    work = tmp_path / "work"
    work.mkdir()
    n = 8
    ids = sd3_pipe.tokenizer(["a red circle"] * n, padding="max_length",
                             max_length=sd3_pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
    uncond = sd3_pipe.tokenizer([""], padding="max_length", max_length=sd3_pipe.tokenizer.model_max_length,
                                return_tensors="pt").input_ids
    latents = {"mean": torch.randn(n, 4, 8, 8), "std": torch.full((n, 4, 8, 8), 0.1), "ids": ids, "uncond": uncond}
    save_file(latents, str(work / "latents.safetensors"))
    monkeypatch.setattr(train, "quick_pipeline_fidelity", lambda pipe, classifier, seed: {})  # no classifier here
    cfg = train.ToyTrainConfig(arch="mmdit", unet_steps=2, unet_batch=2, export_every=2, checkpoint_every=0)
    train.train_mmdit(cfg, out, work, classifier=None)
    pipe = StableDiffusion3Pipeline.from_pretrained(out, text_encoder_3=None, tokenizer_3=None)
    assert type(pipe.transformer).__name__ == "SD3Transformer2DModel" and pipe.vae.config.shift_factor == 0.0
    image = pipe("a red circle", num_inference_steps=2, height=32, width=32, output_type="pt",
                 max_sequence_length=train.T5_TOKENS).images
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()


def test_erasekit_encodes_a_trained_mmdit_world_with_its_recorded_sequence_length(sd3_pipe, tmp_path, monkeypatch):
    from erasekit.core.model import DiffusionModel

    test_an_mmdit_world_exports_a_plain_sd3_pipeline(sd3_pipe, tmp_path, monkeypatch)
    model = DiffusionModel.load(tmp_path / "world", device="cpu")
    assert model.encode_options == {"max_sequence_length": train.T5_TOKENS}
    expected, _, _, _ = model.pipe.encode_prompt("a red circle", None, None, device="cpu",
                                                 do_classifier_free_guidance=False,
                                                 max_sequence_length=train.T5_TOKENS)
    torch.testing.assert_close(model.encode(["a red circle"]).hidden, expected)


def test_an_mmdit_fine_tune_starts_from_the_given_world(sd3_pipe, tmp_path, monkeypatch):
    import shutil

    from safetensors.torch import load_file, save_file

    test_an_mmdit_world_exports_a_plain_sd3_pipeline(sd3_pipe, tmp_path, monkeypatch)
    world, out = tmp_path / "world", tmp_path / "tuned"
    parts = (("transformer", "diffusion_pytorch_model"), ("text_encoder_2", "model"))
    gen = torch.Generator().manual_seed(3)
    for part, file in parts:  # a world far from the trainer's own seeded initialisation (fixed buffers kept)
        path = str(world / part / f"{file}.safetensors")
        save_file({k: v if "pos_embed" in k else v + 0.05 * torch.randn(v.shape, generator=gen)
                   for k, v in load_file(path).items()}, path)
    out.mkdir()
    for part in ("tokenizer", "vae"):
        shutil.copytree(world / part, out / part)
    # a vanishing learning rate: the export is then the initial weights, which must be the given world's
    cfg = train.ToyTrainConfig(arch="mmdit", unet_steps=1, unet_batch=2, export_every=1, checkpoint_every=0,
                               unet_lr=1e-12)
    train.train_mmdit(cfg, out, tmp_path / "work", classifier=None, init_from=world)
    for part, file in parts:
        given, tuned = (load_file(str(d / part / f"{file}.safetensors")) for d in (world, out))
        assert given.keys() == tuned.keys()
        for key in given:
            torch.testing.assert_close(tuned[key], given[key])
