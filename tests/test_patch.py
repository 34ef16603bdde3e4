import pytest
import torch
from diffusers import StableDiffusionPipeline

from erasekit.core import patch as patching
from erasekit.core.model import DiffusionModel
from erasekit.core.sampler import generate_images
from erasekit.core.scopes import named_parameters, select


def _random_patch(model, scope, seed, concept="circle", scale=0.05):
    """A patch touching `scope` with random deltas (what a method would return)."""
    params = select(model.named_modules(), scope).params
    gen = torch.Generator().manual_seed(seed)
    base = {n: p.detach().clone() for n, p in params.items()}
    edited = {n: b + scale * torch.randn(b.shape, generator=gen) for n, b in base.items()}
    return patching.Patch.from_weights(base, edited, "test", {"scope": scope, "seed": seed}, [concept])


def _snapshot(model):
    return {n: p.detach().clone() for n, p in named_parameters(model.named_modules()).items()}


def test_save_load_roundtrip(tiny_model, tmp_path):
    p = _random_patch(tiny_model, "to_out", 0)
    path = p.save(tmp_path / "p.safetensors")
    q = patching.Patch.load(path)
    assert q.id == p.id and q.config == p.config and q.concepts == ["circle"]
    assert q.base_fingerprint == p.base_fingerprint
    assert all(torch.equal(q.deltas[k], p.deltas[k]) for k in p.deltas)
    assert not list(tmp_path.glob("*.tmp"))


def test_apply_then_remove_restores_base_exactly(tiny_model):
    before = _snapshot(tiny_model)
    a, b = _random_patch(tiny_model, "to_out", 0), _random_patch(tiny_model, "xattn", 1)
    patching.apply(tiny_model, a)
    patching.apply(tiny_model, b)
    changed = _snapshot(tiny_model)
    assert any(not torch.equal(changed[k], before[k]) for k in a.deltas)
    patching.remove(tiny_model, a)
    patching.remove(tiny_model, b)
    after = _snapshot(tiny_model)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_stack_equals_applying_both(tiny_model):
    a, b = _random_patch(tiny_model, "to_out", 0), _random_patch(tiny_model, "xattn", 1)
    patching.apply(tiny_model, a)
    patching.apply(tiny_model, b)
    both = _snapshot(tiny_model)
    patching.remove(tiny_model, b)
    patching.remove(tiny_model, a)
    patching.apply(tiny_model, patching.stack([a, b]))
    stacked = _snapshot(tiny_model)
    assert all(torch.equal(both[k], stacked[k]) for k in both)


def test_fingerprint_mismatch_is_refused(tiny_model, tiny_dir, tokenizer_dir):
    from conftest import build_tiny_pipeline

    other = DiffusionModel(build_tiny_pipeline(tokenizer_dir, seed=1))
    p = _random_patch(other, "to_out", 0)
    with pytest.raises(patching.FingerprintMismatch, match="another base model"):
        patching.apply(tiny_model, p)
    # Re-applying a patch on top of itself is fine: the base is what is checked.
    q = _random_patch(tiny_model, "to_out", 0)
    patching.apply(tiny_model, q)
    patching.apply(tiny_model, q)


def test_patch_made_on_a_patched_model_fits_the_base_next_to_its_prerequisite(tiny_model, caplog):
    from erasekit.core.data import model_fingerprint
    from erasekit.core.edit import EditSession

    first = _random_patch(tiny_model, "xattn", 0)
    unpatched = model_fingerprint(tiny_model)
    patching.apply(tiny_model, first)
    assert model_fingerprint(tiny_model) != unpatched  # cached images of the patched model are its own
    with EditSession(tiny_model, "xattn") as session:
        with torch.no_grad():
            for p in session.params.values():
                p.mul_(0.5)
        second = session.to_patch("test", {}, ["cross"])
    patching.remove(tiny_model, first)
    assert model_fingerprint(tiny_model) == unpatched
    # Same tensors, same unpatched base: the fingerprints agree although the live weights differed.
    assert second.base_fingerprint == first.base_fingerprint
    assert second.info["trained_on"] == [first.id]
    patching.apply(tiny_model, patching.stack([first, second]))
    patching.remove(tiny_model, patching.applied(tiny_model)[0])
    with caplog.at_level("WARNING"):
        patching.apply(tiny_model, second)
    assert first.id in caplog.text


def test_export_loads_in_plain_diffusers_with_same_images(tiny_model, tmp_path):
    p = _random_patch(tiny_model, "xattn", 2, scale=0.2)
    patching.apply(tiny_model, p)
    ours = generate_images(tiny_model, ["a red circle", "a blue box"], [0, 1], steps=3, progress=False)
    out = patching.export_pipeline(tiny_model, tmp_path / "exported", keep_base=False)
    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        ["a red circle", "a blue box"],
        num_inference_steps=3,
        guidance_scale=7.5,
        generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
        output_type="pt",
    ).images
    torch.testing.assert_close(theirs, ours, atol=2e-4, rtol=0)
    patching.remove(tiny_model, p)
    base = generate_images(tiny_model, ["a red circle"], [0], steps=3, progress=False)
    assert (base[0] - ours[0]).abs().max() > 1e-3  # the patch changed the images


def test_exported_pipeline_remembers_patches(tiny_model, tmp_path):
    before = _snapshot(tiny_model)
    p = _random_patch(tiny_model, "to_out", 3)
    patching.apply(tiny_model, p)
    out = patching.export_pipeline(tiny_model, tmp_path / "patched", keep_base=True)
    reloaded = DiffusionModel.load(out, device="cpu")
    assert [q.id for q in patching.applied(reloaded)] == [p.id]
    patching.remove(reloaded, p)
    after = _snapshot(reloaded)
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_export_refuses_non_empty_directory(tiny_model, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(Exception, match="not an empty directory"):
        patching.export_pipeline(tiny_model, tmp_path / "x")


def test_purify_inverts_with_base_weights_and_regenerates_with_the_patch(tiny_model):
    from erasekit import api
    from erasekit.core.sampler import DDIMSampler

    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    patch = _random_patch(tiny_model, "xattn", seed=4, scale=0.2)
    cond = tiny_model.encode(["circle"])[0].expand(2, -1, -1)
    sampler = DDIMSampler(tiny_model, steps=3, guidance=1.0)
    with torch.no_grad():
        x_T = sampler.invert(tiny_model.encode_images(images), cond).latents  # unpatched weights invert
        patching.apply(tiny_model, patch)
        expected = tiny_model.decode(sampler.sample(x_T, cond, cond).latents).cpu()
        got = api.purify(tiny_model, images, prompt="circle", steps=3, invert_with="base")
        edited = api.purify(tiny_model, images, prompt="circle", steps=3, invert_with="edited")
    patching.remove(tiny_model, patch)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - edited).abs().max() > 1e-3  # the inverting weights matter


def test_purify_with_random_noise_starts_from_the_forward_process(tiny_model):
    from erasekit import api
    from erasekit.core.sampler import DDIMSampler

    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    sampler = DDIMSampler(tiny_model, steps=4, guidance=1.0)
    cond = tiny_model.encode([""])[0].expand(2, -1, -1)
    with torch.no_grad():
        latents = tiny_model.encode_images(images)
        t = sampler.timesteps()[2]  # strength 0.5 of 4 steps: the last two steps regenerate
        alpha = tiny_model.scheduler.alphas_cumprod[int(t)]
        eps = torch.stack([torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(s))
                           for s in (7, 8)])
        x_t = alpha.sqrt() * latents + (1 - alpha).sqrt() * eps
        expected = tiny_model.decode(sampler.sample(x_t, cond, cond, start_at=2).latents).cpu()
        got = api.purify(tiny_model, images, steps=4, strength=0.5, noise="random", seed=7)
        other_seed = api.purify(tiny_model, images, steps=4, strength=0.5, noise="random", seed=9)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - other_seed).abs().max() > 1e-3
    with pytest.raises(Exception, match="noise must be"):
        api.purify(tiny_model, images, steps=4, noise="sdedit")


def test_patch_records_its_family_and_refuses_another(tiny_model, tmp_path):
    import dataclasses

    from erasekit.core.families import get_family
    from erasekit.core.patch import FingerprintMismatch, Patch, apply

    patch = _random_patch(tiny_model, "xattn-kv", seed=0)
    assert patch.family == "sd" == Patch.load(patch.save(tmp_path / "p.safetensors")).family
    other = dataclasses.replace(patch, family="sdxl")
    with pytest.raises(FingerprintMismatch, match="made on a sdxl model; this model is sd"):
        apply(tiny_model, other)
    tiny_model.family = dataclasses.replace(get_family("sd"), name="flux-test", pipeline="FluxPipeline")
    with pytest.raises(FingerprintMismatch, match="this model is flux-test"):
        apply(tiny_model, patch)


def test_family_of_a_directory_comes_from_its_model_index(tmp_path, tiny_dir):
    import json

    from erasekit.core.families import family_of
    from erasekit.errors import ErasekitError

    assert family_of(tiny_dir).name == "sd" and family_of("owner/name").name == "sd"
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    with pytest.raises(ErasekitError, match="WanPipeline; erasekit serves: flux .*sd .*sdxl"):
        family_of(tmp_path)


def test_apply_and_remove_on_a_users_own_pipeline(tiny_model, tiny_dir, tmp_path):
    import erasekit
    from erasekit.core.patch import FingerprintMismatch

    pipe = StableDiffusionPipeline.from_pretrained(tiny_dir, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    p = _random_patch(tiny_model, "xattn", 5, scale=0.2)
    patching.apply(tiny_model, p)
    ours = generate_images(tiny_model, ["a red circle"], [0], steps=3, progress=False)
    erasekit.apply(pipe, p.save(tmp_path / "p.safetensors"))
    theirs = pipe(["a red circle"], num_inference_steps=3, guidance_scale=7.5, output_type="pt",
                  generator=[torch.Generator().manual_seed(0)]).images
    torch.testing.assert_close(theirs, ours, atol=2e-4, rtol=0)
    erasekit.remove(pipe, p)
    assert all(torch.equal(v, before[k]) for k, v in pipe.unet.state_dict().items())
    assert pipe.unet.conv_in.weight.requires_grad  # the user's pipeline is left as it was
    with torch.no_grad():
        next(iter(dict(select({"unet": pipe.unet}, "xattn").params).values())).add_(1.0)  # another base
    with pytest.raises(FingerprintMismatch, match="another base model"):
        erasekit.apply(pipe, p)
