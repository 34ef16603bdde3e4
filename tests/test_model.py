import shutil

import pytest
import torch

from erasekit.core.model import DiffusionModel, load_pipeline
from erasekit.core.sources import resolve_source
from erasekit.errors import ErasekitError


def test_loads_from_directory(tiny_dir):
    model = DiffusionModel.load(tiny_dir, device="cpu")
    assert model.latent_shape == (4, 8, 8)
    assert model.image_size == 16
    assert not any(p.requires_grad for p in model.denoiser.parameters())


def test_loads_hub_id_from_local_cache(tiny_dir, tmp_path, monkeypatch):
    # The hub cache layout huggingface_hub resolves offline: models--owner--name/snapshots/<rev>.
    repo = tmp_path / "hub" / "models--erasekit--tiny-sd"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_dir, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    pipe = load_pipeline("erasekit/tiny-sd")
    reference = load_pipeline(tiny_dir)
    for (name, a), (_, b) in zip(pipe.unet.state_dict().items(), reference.unet.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_unknown_hub_id_is_one_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ErasekitError, match="could not load model"):
        load_pipeline("nobody/not-a-model")


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt"])
def test_pickles_are_refused(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"not really a pickle")
    with pytest.raises(ErasekitError, match="pickle"):
        resolve_source(path)


def test_directory_without_model_index_is_refused(tmp_path):
    with pytest.raises(ErasekitError, match="model_index.json"):
        resolve_source(tmp_path)


def test_missing_local_path_is_refused(tmp_path):
    with pytest.raises(ErasekitError, match="not found"):
        resolve_source(tmp_path / "nothing" / "here.safetensors")


def test_eps_batches_conditions_in_one_call(tiny_model):
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    conds = tiny_model.encode(["a red circle", "a blue box"])
    with torch.no_grad():
        joint = tiny_model.eps(x, torch.tensor(500), conds)
        single = torch.stack([tiny_model.eps(x, torch.tensor(500), conds[k : k + 1])[0] for k in range(2)])
    assert joint.shape == (2, 3, 4, 8, 8)
    torch.testing.assert_close(joint, single, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(joint[0], joint[1])  # the condition matters


def test_loads_from_single_safetensors_file(tiny_dir, tmp_path):
    # Written in the original (LDM) layout and read back through diffusers' own converter.
    from erasekit.core.ldm import save_single_file

    reference = load_pipeline(tiny_dir)
    path = save_single_file(reference, tmp_path / "tiny.safetensors")
    pipe = load_pipeline(path, config=tiny_dir)
    for component in ("unet", "vae", "text_encoder"):
        a, b = getattr(reference, component).state_dict(), getattr(pipe, component).state_dict()
        assert a.keys() == b.keys(), component
        for key in a:
            assert torch.equal(a[key].reshape(b[key].shape), b[key]), (component, key)


def test_a_v_prediction_model_round_trips_through_directory_and_single_file(tokenizer_dir, tmp_path):
    from conftest import build_tiny_pipeline
    from diffusers import DDIMScheduler

    from erasekit.core.ldm import save_single_file

    pipe = build_tiny_pipeline(tokenizer_dir)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    pipe.save_pretrained(tmp_path / "v", safe_serialization=True)
    from_dir = DiffusionModel.load(tmp_path / "v", device="cpu")
    assert from_dir.scheduler.config.prediction_type == "v_prediction"
    path = save_single_file(from_dir.pipe, tmp_path / "v.safetensors")
    from_file = DiffusionModel.load(path, device="cpu", config=tmp_path / "v")
    assert from_file.scheduler.config.prediction_type == "v_prediction"
    x = torch.randn(1, *from_dir.latent_shape, generator=torch.Generator().manual_seed(0))
    cond = from_dir.encode(["a red circle"])
    torch.testing.assert_close(from_file.eps(x, 300, cond), from_dir.eps(x, 300, cond), atol=1e-5, rtol=0)


def test_sd2_single_file_export_is_refused_not_written_in_the_wrong_layout(tokenizer_dir, tmp_path):
    from conftest import build_tiny_pipeline

    from erasekit.core.ldm import save_single_file

    with pytest.raises(ErasekitError, match="SD 2.x model"):
        save_single_file(build_tiny_pipeline(tokenizer_dir, text_dim=1024), tmp_path / "sd2.safetensors")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["toyworld", "toyworld-wide", "toyworld-v"])
def test_builtin_toy_worlds_resolve_to_their_own_directories(name, monkeypatch):
    from erasekit.core import sources as model_module

    monkeypatch.delenv("ERASEKIT_TOYWORLD", raising=False)
    path = model_module.toyworld_dir(name)
    assert path.name == name and path.parent.name == "models"
    if (path / "model_index.json").exists():
        assert resolve_source(name) == path
    else:
        with pytest.raises(ErasekitError, match=f"'{name}' is missing"):
            resolve_source(name)


def test_load_records_its_source(tiny_dir):
    assert DiffusionModel.load(tiny_dir, device="cpu").source == str(tiny_dir)
