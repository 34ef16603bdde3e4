import pytest
import torch

from erasekit.api import erase
from erasekit.cli.main import main
from erasekit.core.scopes import UNET_SCOPES as SCOPES
from erasekit.core.scopes import named_parameters
from erasekit.methods.ca.config import CaConfig
from erasekit.methods.ca.method import ca_loss, prompt_pairs
from erasekit.request import EraseRequest


def _snapshot(model):
    return {n: p.detach().clone() for n, p in named_parameters(model.named_modules()).items()}


def test_losses_hand_computed():
    pred = torch.tensor([1.0, 2.0], requires_grad=True)
    teacher = torch.tensor([0.0, 0.0], requires_grad=True)
    noise = torch.tensor([1.0, 0.0])
    assert ca_loss(pred, teacher, noise).item() == pytest.approx(2.5)  # model-based
    assert ca_loss(pred, None, noise).item() == pytest.approx(2.0)  # noise-based
    ca_loss(pred, teacher, noise).backward()
    assert teacher.grad is None  # the teacher side is a stop-gradient


def test_prompt_pairs_replace_anchor_by_target():
    pairs = prompt_pairs("circle", "thing", CaConfig(), ["a photo of a {}", "{}"])
    assert pairs == [("a photo of a thing", "a photo of a circle"), ("thing", "circle")]


CFG = dict(steps=3, lr=1e-2, n_images=4, image_steps=2, batch_size=2, prompt_templates=["a red {}", "a {}"])


@pytest.mark.parametrize("scope, variant", [("xattn-kv", "model"), ("full", "noise")])
def test_short_run_touches_only_scope(tiny_model, tmp_path, scope, variant):
    before = _snapshot(tiny_model)
    patch = erase(tiny_model, "ca", EraseRequest(concepts=["circle"], anchors=["thing"]),
                  CaConfig(scope=scope, variant=variant, **CFG), progress=False, cache_dir=tmp_path)
    assert patch.deltas and all(SCOPES[scope](n) for n in patch.deltas)
    assert any(d.abs().max() > 0 for d in patch.deltas.values())
    after = named_parameters(tiny_model.named_modules())
    assert all(torch.equal(before[n], after[n].detach()) for n in before)


def test_embedding_scope_changes_only_target_rows(tiny_model, tmp_path):
    patch = erase(tiny_model, "ca", EraseRequest(concepts=["circle"], anchors=["thing"]),
                  CaConfig(scope="embedding", prior_weight=1.0, **CFG), progress=False, cache_dir=tmp_path)
    (delta,) = patch.deltas.values()
    rows = delta.abs().sum(1).nonzero().flatten().tolist()
    assert rows == tiny_model.tokenizer("circle", add_special_tokens=False).input_ids


def test_anchor_images_are_cached(tiny_model, tmp_path, monkeypatch):
    import erasekit.core.data as data_module

    calls = []
    original = data_module.generate_images

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(data_module, "generate_images", counting)
    request = EraseRequest(concepts=["circle"], anchors=["thing"])
    erase(tiny_model, "ca", request, CaConfig(**CFG), progress=False, cache_dir=tmp_path)
    erase(tiny_model, "ca", request, CaConfig(**{**CFG, "lr": 1e-3}), progress=False, cache_dir=tmp_path)
    assert len(calls) == 1


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--concept", "circle", "--anchor", "circle"], "its own anchor"),
        (["--concept", "circle"], "needs an anchor"),
        (["--concept", "circle", "--anchor", "thing", "--set", "scope=xattn"], "scope"),
    ],
)
def test_bad_requests_exit_2_before_loading(tiny_dir, capsys, monkeypatch, args, fragment):
    import erasekit.api

    monkeypatch.setattr(erasekit.api, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(SystemExit) as exc:
        main(["erase", "--model", str(tiny_dir), "--method", "ca", *args, "--out", "p.safetensors"])
    assert exc.value.code == 2
    assert fragment in capsys.readouterr().err
