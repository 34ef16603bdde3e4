import pytest
import torch

from erasekit.api import erase
from erasekit.core.scopes import named_parameters
from erasekit.methods.esd.config import EsdConfig
from erasekit.methods.esd.method import esd_target
from erasekit.methods.uce.config import UceConfig
from erasekit.methods.uce.method import token_rows, uce_solve
from erasekit.request import EraseRequest


def _unchanged_outside(model, before, patch, scope):
    assert patch.deltas and all(model.family.scopes[scope](n) for n in patch.deltas)
    assert any(d.abs().max() > 0 for d in patch.deltas.values())
    after = named_parameters(model.named_modules())
    assert all(torch.equal(before[n], after[n].detach()) for n in before)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in named_parameters(model.named_modules()).items()}


def test_esd_target_hand_computed():
    u, c = torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0])
    assert torch.equal(esd_target(u, c, eta=1.0), torch.tensor([0.0, -1.0]))
    assert torch.equal(esd_target(u, c, eta=2.0), torch.tensor([-1.0, -2.0]))


@pytest.mark.parametrize("variant, scope", [("x", "xattn"), ("u", "non-xattn")])
def test_esd_short_run_touches_only_its_scope(tiny_model, variant, scope):
    before = _snapshot(tiny_model)
    patch = erase(tiny_model, "esd", EraseRequest(concepts=["circle"]),
                  EsdConfig(variant=variant, steps=3, sampling_steps=4, lr=1e-3), progress=False)
    assert patch.method == "esd" and patch.config["variant"] == variant
    _unchanged_outside(tiny_model, before, patch, scope)


def test_uce_solve_closed_form_properties():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 8, generator=gen)
    c, g, p = (torch.randn(n, 8, generator=gen) for n in (2, 2, 3))
    # With λ → 0 and room to spare (5 constraints in 8 dims) both goals are met exactly.
    new = uce_solve(w, c, g, p, lamb=1e-6, erase_scale=1.0, preserve_scale=1.0)
    torch.testing.assert_close(c @ new.T, g @ w.T, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(p @ new.T, p @ w.T, atol=1e-3, rtol=1e-3)
    # Nothing to erase: W stays.
    torch.testing.assert_close(uce_solve(w, c[:0], g[:0], p, 0.5, 1.0, 1.0), w, atol=1e-5, rtol=1e-5)


def test_uce_maps_target_to_anchor_and_keeps_preserved(tiny_model):
    before = _snapshot(tiny_model)
    request = EraseRequest(concepts=["circle"], anchors=["square"], preserve=["red"])
    patch = erase(tiny_model, "uce", request, UceConfig(lamb=1e-4), progress=False)
    _unchanged_outside(tiny_model, before, patch, "xattn-kv")
    target, last = token_rows(tiny_model, "circle", "last+eos")
    guide, _ = token_rows(tiny_model, "square", "last+eos", start=last)
    kept = tiny_model.encode(["red"]).hidden[0]
    name = next(n for n in patch.deltas if n.endswith("to_k.weight"))
    w_old = before[name]
    w_new = w_old + patch.deltas[name]
    err = (target @ w_new.T - guide @ w_old.T).norm() / (guide @ w_old.T).norm()
    moved = (target @ w_old.T - guide @ w_old.T).norm() / (guide @ w_old.T).norm()
    assert err < 0.1 * moved
    drift = (kept @ w_new.T - kept @ w_old.T).norm() / (kept @ w_old.T).norm()
    assert drift < 0.05


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_uce_on_an_mmdit_maps_the_targets_text_projections_onto_the_anchors(tokenizer_dir, family):
    """On an MMDiT, UCE edits what the text enters through: the concept's tokens through
    context_embedder and its pooled vector through text_embedder.linear_1 become the anchor's."""
    import conftest

    from erasekit.core.model import DiffusionModel

    model = DiffusionModel(getattr(conftest, f"build_tiny_{family}_pipeline")(tokenizer_dir))
    model.encode_options = {"max_sequence_length": 16} if family == "flux" else {}
    before = _snapshot(model)
    request = EraseRequest(concepts=["circle"], anchors=["square"], preserve=["red"])
    patch = erase(model, "uce", request, UceConfig(lamb=1e-4), progress=False)
    _unchanged_outside(model, before, patch, "text-proj")
    for suffix, field in (("context_embedder.weight", "hidden"),
                          ("text_embedder.linear_1.weight", "pooled_projections")):
        target, last = token_rows(model, "circle", "last+eos", field=field)
        guide, _ = token_rows(model, "square", "last+eos", start=last, field=field)
        name = next(n for n in patch.deltas if n.endswith(suffix))
        w_old, w_new = before[name], before[name] + patch.deltas[name]
        err = (target @ w_new.T - guide @ w_old.T).norm() / (guide @ w_old.T).norm()
        moved = (target @ w_old.T - guide @ w_old.T).norm() / (guide @ w_old.T).norm()
        assert err < 0.2 * moved, suffix


def test_sdd_loss_stops_gradient_on_uncond():
    from erasekit.methods.sdd.method import sdd_loss

    c = torch.tensor([1.0, 3.0], requires_grad=True)
    u = torch.tensor([0.0, 1.0], requires_grad=True)
    loss = sdd_loss(c, u)
    assert loss.item() == pytest.approx(2.5)
    loss.backward()
    assert u.grad is None and c.grad.abs().sum() > 0


def test_sdd_short_run_saves_the_ema_teacher(tiny_model):
    from erasekit.methods.sdd.config import SddConfig

    before = _snapshot(tiny_model)
    patch = erase(tiny_model, "sdd", EraseRequest(concepts=["circle", "cross"]),
                  SddConfig(steps=3, sampling_steps=4, lr=1e-3, ema_decay=0.5), progress=False)
    _unchanged_outside(tiny_model, before, patch, "xattn")


def test_fmn_attention_norm_hand_computed():
    from erasekit.methods.fmn.method import attention_norm

    maps = {"a": [torch.tensor([[0.6, 0.4]])], "b": [torch.tensor([[0.0, 0.3]])]}
    assert attention_norm(maps, [1]).item() == pytest.approx((0.4**2 + 0.3**2) ** 0.5)


def test_fmn_short_run_lowers_attention_on_concept(tiny_model):
    from erasekit.methods.fmn.config import FmnConfig

    before = _snapshot(tiny_model)
    cfg = FmnConfig(steps=3, lr=1e-2, scope="xattn", n_images=2, image_steps=2)
    patch = erase(tiny_model, "fmn", EraseRequest(concepts=["circle"]), cfg, progress=False)
    _unchanged_outside(tiny_model, before, patch, "xattn")

    from erasekit.core import patch as patching
    from erasekit.core.attention import control_attention
    from erasekit.methods.fmn.method import attention_norm, concept_columns

    columns = concept_columns(tiny_model, "a photo of circle", "circle", use_pooler=True)
    x = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    emb = tiny_model.encode(["a photo of circle"])

    def mass():
        with torch.no_grad(), control_attention(tiny_model.denoiser) as store:
            tiny_model.eps(x, torch.tensor(500), emb)
        return attention_norm(store.maps, columns).item()

    base = mass()
    patching.apply(tiny_model, patch)
    assert mass() < base


def test_uce_token_rows_follow_a_sequence_tokenizer_without_bos():
    """T5 (Flux's sequence) has no BOS: the last word token of 'red circle' is at position 1, not 2."""
    from types import SimpleNamespace

    from erasekit.core.conditioning import Conditioning

    class T5Like:
        bos_token_id = None

        def __call__(self, text, add_special_tokens=True):
            ids = [10 + i for i, _ in enumerate(text.split())]
            return SimpleNamespace(input_ids=ids + [1] if add_special_tokens else ids)

    hidden = torch.arange(6.0).repeat_interleave(2).view(1, 6, 2)
    model = SimpleNamespace(encode=lambda texts: Conditioning(hidden), sequence_tokenizer=T5Like())
    rows, last = token_rows(model, "red circle", "last+eos")
    assert last == 1 and torch.equal(rows, hidden[0, 1:])
    rows, _ = token_rows(model, "red circle", "last")
    assert torch.equal(rows, hidden[0, 1:2])
