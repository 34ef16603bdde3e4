import pytest
import torch

from erasekit.api import erase
from erasekit.core import patch as patching
from erasekit.core.model import DiffusionModel
from erasekit.core.scopes import named_parameters
from erasekit.errors import ErasekitError
from erasekit.methods.sepme.config import SepmeConfig
from erasekit.methods.sepme.method import (
    MomentumStopper,
    balance_weights,
    correlation_loss,
    null_space_basis,
    relative_kv_change,
)
from erasekit.request import EraseRequest


def test_null_space_basis_is_orthonormal_and_annihilates():
    gen = torch.Generator().manual_seed(0)
    constraints = torch.randn(5, 12, generator=gen)
    constraints = torch.cat([constraints, constraints[:2] * 3.0])  # rank stays 5
    basis = null_space_basis(constraints, rank_tol=1e-6)
    assert basis.shape == (7, 12)
    torch.testing.assert_close(basis @ basis.T, torch.eye(7), atol=1e-5, rtol=0)
    assert (constraints @ basis.T).abs().max() < 1e-5


def test_correlation_loss_hand_computed():
    ec, eu = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    bc, bu = torch.tensor([3.0, 1.0]), torch.tensor([1.0, 0.0])
    # (1, −1) · (2, 1) / 2 = 0.5
    assert correlation_loss(ec, eu, bc, bu).item() == pytest.approx(0.5)


def test_momentum_early_stopping_fires_on_constructed_sequence():
    stopper = MomentumStopper(momentum=0.5, warmup=2, tau=0.1)
    fired = [stopper.update(v) for v in [1.0, 0.5, 0.0, 0.0, 0.0, 0.0]]
    # L_mom: 1, .75, .375, .1875, .09375 (< τ = 0.1 at the fifth step), ...
    assert fired == [False, False, False, False, True, True]
    never = MomentumStopper(momentum=0.9, warmup=0, tau=-1.0)
    assert not any(never.update(v) for v in [1.0, 0.5, 0.2])
    anti = MomentumStopper(momentum=0.5, warmup=0, tau=-0.25)
    # L_mom: 1, 0 (uncorrelated is not enough), −0.5 (< τ)
    assert [anti.update(v) for v in [1.0, -1.0, -1.0]] == [False, False, True]


def test_balance_weights_scale_each_concept_to_the_largest_loss_scale():
    weights = balance_weights({0: 0.02, 1: -0.004, 2: 0.0})
    # |L| 0.02 is the largest: η = 1, 5 and (a zero scale) capped by the 1e-12 floor.
    assert weights[0] == pytest.approx(1.0)
    assert weights[1] == pytest.approx(5.0)
    assert weights[2] == pytest.approx(0.02 / 1e-12)


@pytest.mark.parametrize("tau_rel", [0.0, 1.5, float("nan")])
def test_bad_relative_tau_is_refused(tau_rel):
    from erasekit.methods.sepme.config import SepmeConfig

    with pytest.raises(ValueError, match="tau_rel"):
        SepmeConfig(tau_rel=tau_rel)


@pytest.fixture
def wide_model(tokenizer_dir):
    from conftest import build_tiny_pipeline

    return DiffusionModel(build_tiny_pipeline(tokenizer_dir, text_dim=128))


CFG = dict(max_steps=4, warmup=0, lr=1.0, beta=1e-2, n_images=2, image_steps=2)


def test_increments_keep_other_keys_values_and_restore_exactly(wide_model):
    before = {n: p.detach().clone() for n, p in named_parameters(wide_model.named_modules()).items()}
    patches = erase(wide_model, "sepme", EraseRequest(concepts=["circle", "cross"]), SepmeConfig(**CFG),
                    progress=False)
    assert [p.concepts for p in patches] == [["circle"], ["cross"]]
    circle, cross = patches
    assert any(d.abs().max() > 0 for d in circle.deltas.values())
    empty = wide_model.encode([""]).hidden[0]
    cross_emb = wide_model.encode(["cross"]).hidden[0]
    circle_emb = wide_model.encode(["circle"]).hidden[0]
    for name, delta in circle.deltas.items():
        w = before[name]
        scale = (cross_emb @ w.T).abs().max()
        # ∅ and the other concept keep their keys/values; the erased one's change.
        assert (empty @ delta.T).abs().max() < 1e-5 * scale
        assert (cross_emb @ delta.T).abs().max() < 1e-5 * scale
    assert max((circle_emb @ d.T).abs().max() for d in circle.deltas.values()) > 0
    assert relative_kv_change(wide_model, [circle], "cross") < 1e-5
    assert relative_kv_change(wide_model, [circle], "circle") > 1e-4

    for p in patches:
        patching.apply(wide_model, p)
    patching.remove(wide_model, circle)
    with_cross_only = {n: p.detach().clone() for n, p in named_parameters(wide_model.named_modules()).items()}
    patching.remove(wide_model, cross)
    patching.apply(wide_model, cross)
    again = {n: p.detach() for n, p in named_parameters(wide_model.named_modules()).items()}
    assert all(torch.equal(with_cross_only[n], again[n]) for n in again)


def test_tau_is_calibrated_on_the_mean_base_loss_unless_given(wide_model):
    request = EraseRequest(concepts=["circle", "cross"])
    calibrated = erase(wide_model, "sepme", request, SepmeConfig(**CFG, tau_rel=-0.5, calibration_samples=3),
                       progress=False)
    for patch in calibrated:
        # At the base model L_cor = mean(r²) > 0, so a negative tau_rel gives a negative τ.
        assert patch.info["loss_scale"] > 0
        assert patch.info["tau"] == pytest.approx(-0.5 * patch.info["loss_scale"])
    assert calibrated[0].info["loss_scale"] != calibrated[1].info["loss_scale"]
    given = erase(wide_model, "sepme", request, SepmeConfig(**CFG, tau=-1e-3), progress=False)
    assert [p.info["tau"] for p in given] == [-1e-3, -1e-3]


def test_staged_training_carries_earlier_increments_and_stays_decoupled(wide_model):
    before = {n: p.detach().clone() for n, p in named_parameters(wide_model.named_modules()).items()}
    circle, cross = erase(wide_model, "sepme", EraseRequest(concepts=["circle", "cross"]),
                          SepmeConfig(**CFG, stages=[["cross"], ["circle"]]), progress=False)
    after = {n: p.detach() for n, p in named_parameters(wide_model.named_modules()).items()}
    assert all(torch.equal(before[n], after[n]) for n in before)  # the carried stage is taken off again
    assert circle.info["trained_on"] == [cross.id] and "trained_on" not in cross.info
    assert relative_kv_change(wide_model, [circle], "cross") < 1e-5
    assert relative_kv_change(wide_model, [cross], "circle") < 1e-5
    patching.apply(wide_model, cross)
    patching.apply(wide_model, circle)  # fits the base next to the stage it was trained on
    patching.remove(wide_model, cross)  # restoring cross keeps circle's increment alone
    assert patching.applied(wide_model) == [circle]


@pytest.mark.parametrize("stages", [[["circle"]], [["circle"], ["circle", "cross"]], [["circle", "square"]]])
def test_stages_must_name_every_concept_once(wide_model, stages):
    with pytest.raises(ErasekitError, match="exactly once"):
        erase(wide_model, "sepme", EraseRequest(concepts=["circle", "cross"]), SepmeConfig(**CFG, stages=stages),
              progress=False)


def test_one_concept_without_protection_is_allowed_but_said(wide_model, caplog):
    with caplog.at_level("WARNING", logger="erasekit.methods.sepme.method"):
        (patch,) = erase(wide_model, "sepme", EraseRequest(concepts=["circle"]), SepmeConfig(**CFG), progress=False)
    assert "only the empty prompt constrains" in caplog.text
    assert relative_kv_change(wide_model, [patch], "") < 1e-5


def test_empty_null_space_is_a_clear_error(tiny_model):
    # Text width 32 with 24 tokens per prompt: ∅ and one other concept span the whole space once the
    # final layer norm has a bias (a zero bias keeps every embedding in one hyperplane).
    with torch.no_grad():
        bias = next(p for n, p in tiny_model.text_encoder.named_parameters() if n.endswith("final_layer_norm.bias"))
        bias.copy_(torch.randn(bias.shape, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ErasekitError, match="empty null space"):
        erase(tiny_model, "sepme", EraseRequest(concepts=["circle", "cross"]), SepmeConfig(**CFG), progress=False)


def test_cli_writes_one_patch_per_concept_and_combined(tokenizer_dir, tmp_path):
    from conftest import build_tiny_pipeline

    from erasekit.cli.main import main

    build_tiny_pipeline(tokenizer_dir, text_dim=128).save_pretrained(tmp_path / "wide")
    args = ["erase", "--model", str(tmp_path / "wide"), "--method", "sepme", "--concept", "circle", "--concept",
            "cross", "--set", "max_steps=2", "--set", "n_images=2", "--set", "image_steps=2",
            "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "circle.safetensors", "combined.safetensors", "cross.safetensors"]


def test_training_pairs_phrase_null_drops_only_the_concept():
    from erasekit.methods.sepme.method import training_pairs

    templates = ["a picture of a {} painting", "{}"]
    assert training_pairs("VanGogh", templates, phrase_null=True) == [
        ("a picture of a VanGogh painting", "a picture of a painting"), ("VanGogh", "")]
    assert training_pairs("VanGogh", templates, phrase_null=False) == [
        ("a picture of a VanGogh painting", ""), ("VanGogh", "")]


def test_captions_must_name_erased_concepts_and_hold_a_slot(wide_model):
    with pytest.raises(ErasekitError, match="not among the concepts"):
        erase(wide_model, "sepme", EraseRequest(concepts=["circle"]),
              SepmeConfig(**CFG, captions={"cross": ["a {}"]}), progress=False)
    with pytest.raises(ValueError, match="captions"):
        SepmeConfig(captions={"circle": ["no slot"]})


def test_robust_sepme_attacks_after_the_warm_up_and_stops_only_on_attacked_losses(wide_model):
    request = EraseRequest(concepts=["circle", "cross"])
    # τ above any loss: the plain run stops at its first check; the robust one not before its adversary is on
    cfg = {**CFG, "tau": 1e9}
    (plain, _) = erase(wide_model, "sepme", request, SepmeConfig(**cfg), progress=False)
    robust_cfg = SepmeConfig(**cfg, robust=True, robust_steps=2, robust_warmup=0.5, robust_retain=0.3,
                             robust_retain_prompts=["a square"])
    (robust, _) = erase(wide_model, "sepme", request, robust_cfg, progress=False)
    assert plain.info["stopped_at"] == 1 and "robust" not in plain.info
    assert robust.info["stopped_at"] == 3  # steps 0, 1 plain (warm-up 0.5 × 4); step 2 attacked, then checked
    # joint mode: each step takes one example per concept, each re-attacked (robust_every 1)
    assert robust.info["robust"]["attacks"] == 2 and robust.info["robust"]["retain_loss"] is not None
    never = SepmeConfig(**{**CFG, "tau": -1e9}, robust=True, robust_steps=2, robust_warmup=0.5)
    (attacked, _) = erase(wide_model, "sepme", request, never, progress=False)
    assert attacked.info["robust"]["attacks"] == 4  # steps 2 and 3, both concepts
    (unattacked, _) = erase(wide_model, "sepme", request, SepmeConfig(**{**CFG, "tau": -1e9}), progress=False)
    assert any(not torch.equal(attacked.deltas[n], unattacked.deltas[n]) for n in attacked.deltas)
