"""The Flux family on a tiny random Flux pipeline: conditioning and images as diffusers' FluxPipeline
builds and draws them (packed latents, dynamic shift, guidance embedding), loaded from a directory."""

import pytest
import torch

from erasekit.core.model import DiffusionModel
from erasekit.core.sampler import generate_images

T5_TOKENS = 16  # the test's max_sequence_length (Flux's 512 is needless here)


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory, tokenizer_dir):
    from conftest import build_tiny_flux_pipeline

    path = tmp_path_factory.mktemp("flux") / "pipe"
    build_tiny_flux_pipeline(tokenizer_dir).save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def flux_model(flux_dir):
    model = DiffusionModel.load(flux_dir, device="cpu")
    model.pipe.default_sample_size = 8
    model.encode_options = {"max_sequence_length": T5_TOKENS}
    return model


def _plain(path):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_a_directory_loads_as_flux_with_its_packed_latent_shape(flux_model):
    assert flux_model.family.name == "flux" and not flux_model.family.cfg
    assert flux_model.latent_shape == (4, 8, 8) and flux_model.image_size == 32


def test_conditioning_equals_the_pipelines_own_encoding(flux_model, flux_dir):
    prompts = ["a red circle", "a blue square on grass"]
    ours = flux_model.encode(prompts)
    hidden, pooled, _ = _plain(flux_dir).encode_prompt(prompts, None, device="cpu", max_sequence_length=T5_TOKENS)
    # float32's default tolerances: CPUs with other vector units round the same encoders differently (CI did)
    torch.testing.assert_close(ours.hidden, hidden)
    torch.testing.assert_close(ours.extras["pooled_projections"], pooled)
    # the methods' predictions are taken at embedded guidance 1 (the distilled conditional prediction)
    assert torch.equal(ours.extras["guidance"], torch.ones(2, 1))


def test_images_equal_the_plain_pipelines_for_the_same_seeds(flux_model, flux_dir):
    prompts, seeds = ["a red circle", "a blue square on grass"], [0, 1]
    ours = generate_images(flux_model, prompts, seeds, steps=3, guidance=3.5, progress=False)
    theirs = _plain(flux_dir)(prompts, num_inference_steps=3, guidance_scale=3.5, output_type="pt", height=32,
                              width=32, max_sequence_length=T5_TOKENS,
                              generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    torch.testing.assert_close(ours, theirs.float(), atol=2e-5, rtol=0)


def test_a_patched_flux_exports_a_directory_plain_flux_draws_identically(flux_model, tmp_path):
    from erasekit.core import patch as patching
    from erasekit.core.scopes import select

    params = select(flux_model.named_modules(), "xattn", scopes=flux_model.family.scopes).params
    gen = torch.Generator().manual_seed(1)
    base = {n: p.detach().clone() for n, p in params.items()}
    edited = {n: b + 0.2 * torch.randn(b.shape, generator=gen) for n, b in base.items()}
    edit = patching.Patch.from_weights(base, edited, "test", {}, ["circle"], family="flux")
    with patching.applied_temporarily(flux_model, [edit]):
        ours = generate_images(flux_model, ["a red circle"], [0], steps=3, guidance=3.5, progress=False)
        out = patching.export_pipeline(flux_model, tmp_path / "exported", keep_base=False)
    theirs = _plain(out)(["a red circle"], num_inference_steps=3, guidance_scale=3.5, output_type="pt", height=32,
                         width=32, max_sequence_length=T5_TOKENS, generator=[torch.Generator().manual_seed(0)]).images
    torch.testing.assert_close(theirs.float(), ours, atol=2e-5, rtol=0)
    base_images = generate_images(flux_model, ["a red circle"], [0], steps=3, guidance=3.5, progress=False)
    assert (base_images - ours).abs().max() > 1e-3  # the edit was real, and it came off


@pytest.mark.parametrize("args", [["--method", "ca", "--concept", "circle", "--anchor", "thing",
                                   "--set", "scope=embedding"]])
def test_the_cli_refuses_what_flux_cannot_serve_before_loading_it(flux_dir, args, capsys, monkeypatch, tmp_path):
    import erasekit.api
    from erasekit.cli.main import main

    def must_not_load(*a, **k):
        raise AssertionError("model loaded before the family was checked")

    monkeypatch.setattr(erasekit.api, "load_model", must_not_load)
    out = tmp_path / "p.safetensors"
    with pytest.raises(SystemExit) as exc:
        main(["erase", "--model", str(flux_dir), *args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "flux" in err and len(err.splitlines()) == 1 and not out.exists()
