"""The family adapter on a tiny SDXL pipeline: conditioning as diffusers builds it, images as the
plain pipeline draws them, exports plain diffusers loads, family defaults and refusals."""

import pytest
import torch
from diffusers import StableDiffusionXLPipeline

from erasekit.core import patch as patching
from erasekit.core.conditioning import Conditioning
from erasekit.core.model import DiffusionModel
from erasekit.core.sampler import generate_images
from erasekit.core.scopes import select


@pytest.fixture
def sdxl_model(tiny_sdxl_dir):
    return DiffusionModel.load(tiny_sdxl_dir, device="cpu")


def _pipe(path) -> StableDiffusionXLPipeline:
    pipe = StableDiffusionXLPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_a_directory_loads_as_sdxl_with_every_text_encoder(sdxl_model):
    assert sdxl_model.family.name == "sdxl"
    assert list(sdxl_model.named_modules()) == ["unet", "text_encoder", "text_encoder_2"]
    assert sdxl_model.context_dim == 32 + 48  # CLIP-L-like ⊕ CLIP-G-like
    assert not any(p.requires_grad for m in sdxl_model.named_modules().values() for p in m.parameters())


def test_conditioning_equals_the_pipelines_own_encoding(sdxl_model, tiny_sdxl_dir):
    ours = sdxl_model.encode(["a red circle", ""])
    hidden, _, pooled, _ = _pipe(tiny_sdxl_dir).encode_prompt(
        "a red circle", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
    torch.testing.assert_close(ours.hidden[0], hidden[0])
    torch.testing.assert_close(ours.extras["text_embeds"][0], pooled[0])
    size = sdxl_model.image_size
    assert ours.extras["time_ids"][0].tolist() == [size, size, 0, 0, size, size]
    # force_zeros_for_empty_prompt: the unconditional branch is zeros, as in the pipeline's sampling
    assert float(ours.hidden[1].abs().max()) == 0 == float(ours.extras["text_embeds"][1].abs().max())
    assert float(ours.hidden[0].abs().max()) > 0


def test_conditionings_stack_index_and_expand_field_by_field():
    a = Conditioning(torch.zeros(3, 5, 8), {"p": torch.zeros(3, 4)})
    b = Conditioning(torch.ones(3, 5, 8), {"p": torch.ones(3, 4)})
    both = torch.stack([a, b])
    assert both.shape == (2, 3, 5, 8) and both.extras["p"].shape == (2, 3, 4)
    assert torch.equal(both[1, 2].extras["p"], torch.ones(4))
    one = b[0].expand(7, 5, 8)
    assert one.shape == (7, 5, 8) and one.extras["p"].shape == (7, 4)
    assert torch.cat([a, b]).flatten_batch().extras["p"].shape == (6, 4)
    with pytest.raises(IndexError, match="batch dimensions"):
        a[..., 0]


def test_eps_passes_the_added_conditioning_to_the_unet(sdxl_model):
    cond = sdxl_model.encode(["a red circle", "a blue box"])
    x = torch.randn(2, *sdxl_model.latent_shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500, 20])
    ours = sdxl_model.eps(x, t, cond[:, None].expand(2, 2, *cond.shape[1:]))
    for k in range(2):
        direct = sdxl_model.denoiser(x, t, cond.hidden[k].expand(2, -1, -1),
                                 added_cond_kwargs={n: v[k].expand(2, -1) for n, v in cond.extras.items()}).sample
        torch.testing.assert_close(ours[k], direct, atol=1e-5, rtol=0)
    other = dict(cond.extras, text_embeds=torch.zeros_like(cond.extras["text_embeds"]))
    assert (sdxl_model.eps(x, t, Conditioning(cond.hidden, other)[None])[0] - ours[0]).abs().max() > 1e-4


def test_images_and_export_match_the_plain_sdxl_pipeline(sdxl_model, tmp_path):
    params = select(sdxl_model.named_modules(), "xattn").params
    gen = torch.Generator().manual_seed(1)
    base = {n: p.detach().clone() for n, p in params.items()}
    edit = patching.Patch.from_weights(base, {n: b + 0.2 * torch.randn(b.shape, generator=gen)
                                              for n, b in base.items()}, "test", {}, ["circle"], family="sdxl")
    patching.apply(sdxl_model, edit)
    prompts = ["a red circle", "a blue box"]
    ours = generate_images(sdxl_model, prompts, [0, 1], steps=3, guidance=5.0, progress=False)
    out = patching.export_pipeline(sdxl_model, tmp_path / "exported", keep_base=False)
    theirs = _pipe(out)(prompts, num_inference_steps=3, guidance_scale=5.0, output_type="pt",
                        generator=[torch.Generator().manual_seed(s) for s in (0, 1)]).images
    torch.testing.assert_close(theirs, ours, atol=2e-4, rtol=0)
    patching.remove(sdxl_model, edit)
    assert (generate_images(sdxl_model, prompts[:1], [0], steps=3, guidance=5.0, progress=False)[0]
            - ours[0]).abs().max() > 1e-3


def test_embedding_scope_trains_the_same_rows_of_both_token_tables(sdxl_model):
    sel = select(sdxl_model.named_modules(), "embedding", token_ids=[5, 7], scopes=sdxl_model.family.scopes)
    assert sorted(n.split(".")[0] for n in sel.params) == ["text_encoder", "text_encoder_2"]
    assert sel.trainable_count == 2 * (32 + 48)  # two rows of each token table
    for p in sel.params.values():
        p.sum().backward()
        assert set(torch.nonzero(p.grad.abs().sum(1)).flatten().tolist()) == {5, 7}
    for hook in sel.hooks:
        hook.remove()


def test_the_family_layer_sits_between_paper_and_model(tiny_sdxl_dir):
    from erasekit.defaults import family_name_of, resolve
    from erasekit.methods.fmn.config import FmnConfig

    assert family_name_of(tiny_sdxl_dir) == "sdxl"
    resolved = resolve("fmn", None, ["circle"], family="sdxl")
    assert resolved.config.guidance == 5.0 != FmnConfig().guidance
    assert resolved.sources["guidance"] == "family:sdxl"
    over = resolve("fmn", None, ["circle"], [("set", {"guidance": "6.5"})], family="sdxl")
    assert over.config.guidance == 6.5 and over.sources["guidance"] == "set"
    assert resolve("fmn", None, ["circle"], family="sd").config.guidance == FmnConfig().guidance


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_abo_edits_an_mmdits_text_side_unless_asked_otherwise(family):
    from erasekit.defaults import resolve
    from erasekit.methods.abo.config import AboConfig

    resolved = resolve("abo", None, ["circle"], family=family)
    assert resolved.config.scope == "xattn" != AboConfig().scope and resolved.sources["scope"] == f"family:{family}"
    assert resolve("abo", None, ["circle"], [("set", {"scope": "to_out"})], family=family).config.scope == "to_out"
    assert resolve("abo", None, ["circle"], family="sd").config.scope == AboConfig().scope


def test_cli_lists_the_family_and_its_scopes(tiny_sdxl_dir):
    from click.testing import CliRunner

    from erasekit.cli.main import cli

    runner = CliRunner()
    listed = runner.invoke(cli, ["ls", "families"])
    assert listed.exit_code == 0 and "sdxl" in listed.output and "StableDiffusionXLPipeline" in listed.output
    scopes = runner.invoke(cli, ["ls", "scopes", "--family", "sdxl"])
    assert scopes.exit_code == 0 and "every text encoder's token embedding" in scopes.output


def test_an_sdxl_patch_exports_as_one_original_layout_file_that_loads_back(sdxl_model, tiny_sdxl_dir, tmp_path):
    # patch export --single-file writes the SGM layout (CLIP-L as HF CLIP, CLIP-G as OpenCLIP with fused
    # q/k/v); diffusers' own from_single_file converter reads it back, every tensor and image equal.
    from click.testing import CliRunner

    from erasekit.cli.main import cli
    from erasekit.core.families import family_of

    params = select(sdxl_model.named_modules(), "xattn-kv").params
    patch = patching.Patch.from_weights({n: p.detach().clone() for n, p in params.items()},
                                        {n: p.detach() + 0.01 for n, p in params.items()}, "test", {}, ["circle"],
                                        family="sdxl")
    patch_path = patch.save(tmp_path / "p.safetensors")
    out = tmp_path / "sdxl.safetensors"
    result = CliRunner().invoke(cli, ["patch", "export", "--model", str(tiny_sdxl_dir), "--patch", str(patch_path),
                                      "--single-file", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert family_of(out).name == "sdxl"
    loaded = DiffusionModel.load(out, device="cpu", config=tiny_sdxl_dir)
    with patching.applied_temporarily(sdxl_model, [patch]):
        for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
            a, b = getattr(sdxl_model.pipe, component).state_dict(), getattr(loaded.pipe, component).state_dict()
            assert a.keys() == b.keys(), component
            for key in a:
                assert torch.equal(a[key].reshape(b[key].shape), b[key]), (component, key)
        ours = generate_images(sdxl_model, ["a red circle"], [3], steps=2, progress=False)
    theirs = generate_images(loaded, ["a red circle"], [3], steps=2, progress=False)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


def test_an_sd_patch_on_sdxl_is_refused_in_one_line(sdxl_model, tiny_model, tmp_path, capsys):
    from erasekit.cli.main import main

    params = select(tiny_model.named_modules(), "xattn-kv").params
    sd_patch = patching.Patch.from_weights({n: p.detach().clone() for n, p in params.items()},
                                           {n: p.detach() + 0.1 for n, p in params.items()}, "test", {}, ["circle"],
                                           family="sd")
    path = sd_patch.save(tmp_path / "sd.safetensors")
    with pytest.raises(patching.FingerprintMismatch, match="made on a sd model; this model is sdxl"):
        patching.apply(sdxl_model, sd_patch)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["patch", "apply", "--model", str(sdxl_model.source), "--patch", str(path), "--out", str(out)])
    assert exit_info.value.code == 2 and not out.exists()
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(err) == 1 and "this model is sdxl" in err[0] and "Traceback" not in err[0]


def test_a_single_file_is_recognised_by_its_keys(tmp_path):
    from safetensors.torch import save_file

    from erasekit.core.families import family_of

    sdxl = tmp_path / "sdxl.safetensors"
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(2),
               "model.diffusion_model.out.2.bias": torch.zeros(2)}, str(sdxl))
    sd = tmp_path / "sd.safetensors"
    save_file({"cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(2)}, str(sd))
    assert family_of(sdxl).name == "sdxl" and family_of(sd).name == "sd"


def test_a_method_refuses_a_family_without_what_it_needs_in_one_line(tiny_model):
    import dataclasses

    from erasekit import api
    from erasekit.core.families import CAPABILITIES, get_family, list_families
    from erasekit.errors import ErasekitError
    from erasekit.registry import get_method, list_methods
    from erasekit.request import EraseRequest

    for family in list_families():  # every UNet family serves every method (MMDiTs: test_methods_contract.py)
        if family.denoiser == "unet":
            for spec in list_methods():
                spec.check_family(family)
    assert all(set(spec.needs) <= set(CAPABILITIES) for spec in list_methods())
    distilled = dataclasses.replace(get_family("sd"), name="distilled",
                                    capabilities=frozenset(CAPABILITIES) - {"unconditional-branch"})
    with pytest.raises(ErasekitError, match="'esd' cannot run on distilled models: it needs an unconditional"):
        get_method("esd").check_family(distilled)
    get_method("uce").check_family(distilled)  # UCE needs only the text-side projections
    tiny_model.family = distilled
    with pytest.raises(ErasekitError, match="cannot run on distilled"):
        api.erase(tiny_model, "abo", EraseRequest(["circle"], ["square"]), {"steps": 1}, progress=False)
