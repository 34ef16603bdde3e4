import pytest
import torch

from erasekit.core.edit import RunOptions
from erasekit.core.guidance import InstructionConcept, bottlenecked_delta, percentile_mask
from erasekit.core.scopes import named_parameters
from erasekit.errors import ErasekitError
from erasekit.methods.abo.config import AboConfig
from erasekit.methods.abo.method import abo_losses
from erasekit.request import EraseRequest, build_config


def test_losses_against_hand_computed_values():
    student_c = torch.tensor([1.0, 2.0])
    student_u = torch.tensor([0.5, 1.0])
    teacher_u = torch.tensor([0.0, 1.0])
    target = torch.tensor([1.0, 1.0])
    concept, penalty = abo_losses(student_c, student_u, teacher_u, target, gamma2=2.0)
    # γ2(c − u) = [1, 2]; minus target [1, 1] → [0, 1]; mean square 0.5.
    assert concept.item() == pytest.approx(0.5)
    # (u − u*) = [0.5, 0] → 0.125
    assert penalty.item() == pytest.approx(0.125)


def test_concept_gradient_does_not_reach_uncond_branch():
    student_c = torch.randn(4, requires_grad=True)
    student_u = torch.randn(4, requires_grad=True)
    concept, penalty = abo_losses(student_c, student_u, torch.randn(4), torch.randn(4), gamma2=7.5)
    concept.backward(retain_graph=True)
    assert student_u.grad is None or torch.all(student_u.grad == 0)
    assert student_c.grad.abs().sum() > 0
    penalty.backward()
    assert student_u.grad.abs().sum() > 0


@pytest.mark.parametrize("kappa", [0.5, 0.9, 0.95])
def test_percentile_mask_keeps_top_share(kappa):
    delta = torch.randn(2, 4, 10, 10, generator=torch.Generator().manual_seed(0))
    mask = percentile_mask(delta, kappa)
    kept = mask.reshape(2, 4, -1).sum(-1)
    expected = round((1 - kappa) * 100)
    assert torch.all(kept == expected)
    # Every kept entry is at least as large as every dropped one, per channel.
    flat, m = delta.abs().reshape(8, -1), mask.reshape(8, -1).bool()
    for row, keep in zip(flat, m, strict=True):
        assert row[keep].min() >= row[~keep].max()


def test_delta_window_and_warmup():
    eps_u = torch.zeros(1, 1, 4, 4)
    eps_c = torch.randn(1, 1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    concept = InstructionConcept("x", guidance=2.0, t_high=10, t_low=30, kappa=0.5)
    inside = bottlenecked_delta(eps_u, eps_c, [concept], tau=20, t_warmup=5)
    assert inside.abs().sum() > 0 and (inside != 0).sum() == 8
    torch.testing.assert_close(inside[inside != 0], 2.0 * eps_c[0][inside != 0])
    assert bottlenecked_delta(eps_u, eps_c, [concept], tau=9, t_warmup=5).abs().sum() == 0
    assert bottlenecked_delta(eps_u, eps_c, [concept], tau=31, t_warmup=5).abs().sum() == 0
    assert bottlenecked_delta(eps_u, eps_c, [concept], tau=20, t_warmup=25).abs().sum() == 0


def test_nudity_preset_matches_paper():
    cfg = AboConfig(preset="nudity")
    terms = cfg.instruction_concepts()
    assert cfg.delta == "explicit"
    assert [(t.text, t.guidance, t.t_high, t.t_low, t.kappa) for t in terms] == [
        ("sexual", -7.5, 12, 35, 0.95), ("bikini", 6.5, 12, 35, 0.95), ("pants", 6.5, 12, 35, 0.95)]


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"preset": "nudty"}, "did you mean 'nudity'"),
        ({"instructions": [{"text": "a", "guidance": 1, "kappa": 1.5}]}, "kappa"),
        ({"instructions": [{"text": "a", "guidance": 1, "t_high": 5, "t_low": 40}]}, "window"),
        ({"scope": "xattn-q"}, "scope"),
        ({"lam": -1}, "lam"),
        ({"lambda": 1}, "unknown config key"),
    ],
)
def test_bad_configs_are_one_clear_error(values, fragment):
    with pytest.raises(ErasekitError, match=fragment):
        build_config(AboConfig, values)


def test_empty_concept_is_refused():
    with pytest.raises(ErasekitError, match="must not be empty"):
        EraseRequest(concepts=["  "])


@pytest.mark.parametrize("delta", ["none", "explicit", "implicit"])
def test_short_run_changes_only_the_scope(tiny_model, delta):
    from erasekit.api import erase

    before = {n: p.detach().clone() for n, p in named_parameters(tiny_model.named_modules()).items()}
    config = AboConfig(steps=3, sampling_steps=4, lr=1e-3, t_warmup=0,
                       delta=delta, instructions=[{"text": "solid", "guidance": -3.0}] if delta == "explicit" else [])
    patch = erase(tiny_model, "abo", EraseRequest(concepts=["circle"], anchors=["square"]), config)
    assert patch.method == "abo" and patch.concepts == ["circle"]
    assert patch.config["delta"] == delta and patch.config["steps"] == 3
    assert set(patch.deltas) and all(".to_out.0." in n for n in patch.deltas)
    assert any(d.abs().max() > 0 for d in patch.deltas.values())
    after = {n: p.detach() for n, p in named_parameters(tiny_model.named_modules()).items()}
    assert all(torch.equal(before[n], after[n]) for n in before)  # the caller's model is untouched


def test_xattn_kv_scope_trains_only_the_cross_attention_keys_and_values(tiny_model):
    from erasekit.api import erase

    config = AboConfig(steps=2, sampling_steps=4, lr=1e-3, t_warmup=0, scope="xattn-kv")
    patch = erase(tiny_model, "abo", EraseRequest(concepts=["circle"], anchors=["square"]), config)
    assert set(patch.deltas) and all(".attn2.to_k." in n or ".attn2.to_v." in n for n in patch.deltas)
    assert any(d.abs().max() > 0 for d in patch.deltas.values())


def test_penalty_is_zero_at_first_step_and_resume(tiny_model, tmp_path):
    from erasekit.methods.abo.method import erase

    captured = {}
    import erasekit.methods.abo.method as abo_module

    original = abo_module.abo_losses

    def spy(*args, **kwargs):
        concept, penalty = original(*args, **kwargs)
        captured.setdefault("penalty0", penalty.item())
        return concept, penalty

    abo_module.abo_losses = spy
    try:
        erase(tiny_model, EraseRequest(concepts=["circle"], anchors=["square"]),
              AboConfig(steps=1, sampling_steps=3, lr=1e-3, t_warmup=0),
              RunOptions(progress=False))
    finally:
        abo_module.abo_losses = original
    assert captured["penalty0"] == pytest.approx(0.0, abs=1e-12)

    cfg = AboConfig(steps=4, sampling_steps=3, lr=1e-3, t_warmup=0, checkpoint_every=2)
    request = EraseRequest(concepts=["circle"], anchors=["square"])
    full = erase(tiny_model, request, cfg, RunOptions(progress=False))
    again = erase(tiny_model, request, cfg, RunOptions(tmp_path, progress=False))
    assert any(d.abs().max() > 0 for d in full.deltas.values())
    assert all(torch.equal(full.deltas[n], again.deltas[n]) for n in full.deltas)


def test_no_anchor_and_no_delta_is_refused(tiny_model):
    from erasekit.api import erase as api_erase

    with pytest.raises(ErasekitError, match="nothing is erased"):
        api_erase(tiny_model, "abo", EraseRequest(concepts=["circle"]), AboConfig(steps=1))


def test_implicit_delta_token_scale_covers_word_and_optionally_eos(tiny_model):
    from erasekit.methods.abo.method import concept_token_scale

    n_word = len(tiny_model.tokenizer("circle box", add_special_tokens=False).input_ids)
    words = concept_token_scale(tiny_model, "circle box", 0.25)
    assert words[0] == 1 and torch.all(words[1 : 1 + n_word] == 0.25) and torch.all(words[1 + n_word :] == 1)
    with_eos = concept_token_scale(tiny_model, "circle box", 0.0, with_eos=True)
    assert with_eos[0] == 1 and torch.all(with_eos[1:] == 0)
