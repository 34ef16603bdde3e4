"""Robust erasure as a core option: the inner adversary finds a prefix that brings the concept's
prediction back on the student, the outer step reads it after the warm-up, and the option reaches
every training method's config and patch, or is refused in one line where it cannot run."""

import pytest
import torch

from erasekit.core.edit import EditSession
from erasekit.core.robust import AdversarialPrefix, RetainTerm, attacked_texts, retain_prompts
from erasekit.core.robust_options import RobustOptions
from erasekit.core.tokens import decode
from erasekit.errors import ErasekitError


def _student_moved_off_the_concept(model, session):
    """Scale the trained weights, so that the student no longer predicts what the teacher does."""
    with torch.no_grad():
        for p in session.params.values():
            p.mul_(0.3)


@pytest.mark.parametrize("where", ["prefix", "replace"])
def test_the_adversary_finds_a_prefix_that_recovers_the_teacher_s_prediction(tiny_model, where):
    with EditSession(tiny_model, "xattn-kv") as session:
        _student_moved_off_the_concept(tiny_model, session)
        options = RobustOptions(robust=True, robust_steps=25, robust_lr=0.05, robust_warmup=0.5, robust_attack=where)
        adv = AdversarialPrefix(tiny_model, session.teacher_denoiser(), ["a red circle"], options, total_steps=10,
                                concepts=["circle"])
        slot = decode(tiny_model.tokenizer, adv.slot_ids)
        # prefix: [δ; c], AdvUnlearn's; replace: δ where the concept's word was, the rest of the prompt kept
        assert adv.texts == [{"prefix": f"{slot} a red circle", "replace": f"a red {slot}"}[where]]
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, *tiny_model.latent_shape, generator=gen)
        t = torch.tensor([300, 700])
        rows = torch.zeros(2, dtype=torch.long)
        plain = tiny_model.encode(["a red circle"])[rows]
        with torch.no_grad():
            wanted = tiny_model.eps(x, t, plain[None], session.teacher_denoiser())[0]

            def gap(cond):
                return float((tiny_model.eps(x, t, cond[None])[0] - wanted).pow(2).mean())

        assert adv.condition(4, x, t, rows, plain) is plain and adv.attacks == 0  # still in the warm-up
        start = {n: d.detach().clone() for n, d in adv.delta.items()}
        with torch.no_grad():
            before = gap(adv._encode(rows, start))
        attacked = adv.condition(5, x, t, rows, plain)
        with torch.no_grad():
            after = gap(attacked)
        assert adv.attacks == 1 and after < before  # the prefix moved the student back towards the concept
        assert all(not torch.equal(start[n], d) for n, d in adv.delta.items())
        assert not torch.equal(attacked.hidden, plain.hidden)
        adv.condition(6, x, t, rows, plain)
        assert adv.attacks == 2  # robust_every = 1: a re-attack every step after the warm-up


def test_the_adversary_can_attack_on_the_concept_s_own_latents_instead_of_the_method_s_batch(tiny_model):
    from erasekit.core.edit import RunOptions
    from erasekit.core.robust import adversary
    from erasekit.methods.abo.config import AboConfig

    config = AboConfig(robust=True, robust_latents="concept", robust_steps=3, robust_lr=0.05, robust_warmup=0.0)
    with EditSession(tiny_model, "xattn-kv") as session:
        _student_moved_off_the_concept(tiny_model, session)
        adv = adversary(tiny_model, session, config, ["a red circle", "a blue circle"], 10, ["circle"],
                        RunOptions(progress=False))
        # the frozen model's images of each prompt, an equal number (≥ 32 in all)
        assert adv.latents is not None and len(adv.latents) == 32
        rows = torch.tensor([0, 1])
        plain = tiny_model.encode(["a red circle", "a blue circle"])
        # the method's batch is not read: a batch of NaNs leaves the attack finite
        poisoned = torch.full((2, *tiny_model.latent_shape), float("nan"))
        adv.condition(0, poisoned, torch.tensor([300, 700]), rows, plain)
        assert adv.attacks == 1 and adv.last_loss is not None and torch.isfinite(torch.tensor(adv.last_loss))
        assert all(torch.isfinite(d).all() for d in adv.delta.values())
    batch = AdversarialPrefix(tiny_model, None, ["a red circle"], RobustOptions(robust=True, robust_steps=1),
                              total_steps=10)
    batch._attack(poisoned[:1], torch.tensor([300]), rows[:1], rows[:1], plain[:1], None)
    assert not torch.isfinite(torch.tensor(batch.last_loss))  # the default attacks on the batch it is given
    with pytest.raises(ValueError, match="same number of images"):
        AdversarialPrefix(tiny_model, None, ["a", "b"], RobustOptions(robust=True), 10, latents=adv.latents[:3])


def test_with_contexts_the_adversary_attacks_the_prompt_inside_sentences_toward_the_frozen_sentence(tiny_model):
    options = RobustOptions(robust=True, robust_steps=2, robust_lr=0.05, robust_warmup=0.0,
                            robust_contexts=["a red {} on snow", "{}", "a photo of a {}"])
    with EditSession(tiny_model, "xattn-kv") as session:
        _student_moved_off_the_concept(tiny_model, session)
        adv = AdversarialPrefix(tiny_model, session.teacher_denoiser(), ["circle", "square"], options, 10,
                                concepts=["circle", "square"])
        slot = decode(tiny_model.tokenizer, adv.slot_ids)
        # prompt p in context j is variant 3p + j, the adversary's slot before it
        assert adv.texts == [f"{slot} {c}" for p in ("circle", "square")
                             for c in (f"a red {p} on snow", p, f"a photo of a {p}")]
        torch.testing.assert_close(adv.frozen.hidden[0], tiny_model.encode(["a red circle on snow"]).hidden[0])
        seen = set()
        rows = torch.tensor([0, 1, 1, 0])
        x = torch.randn(4, *tiny_model.latent_shape, generator=torch.Generator().manual_seed(0))
        plain = tiny_model.encode(["circle", "square", "square", "circle"])
        for step in range(6):
            cond = adv.condition(step, x, torch.full((4,), 500), rows, plain)
            with torch.no_grad():
                every = adv._encode(torch.arange(6), adv.delta).hidden
            for i, r in enumerate(rows.tolist()):  # each row reads one of its own prompt's sentences
                gaps = (every - cond.hidden[i]).abs().amax(dim=(1, 2))
                nearest = int(gaps.argmin())
                assert nearest // 3 == r and float(gaps[nearest]) < 1e-5
                seen.add(nearest)
        assert seen == set(range(6))  # every sentence of both prompts is drawn


def test_robust_abo_in_sentences_aims_at_the_anchor_in_the_same_sentence(tiny_model, monkeypatch):
    from erasekit import api
    from erasekit.methods.abo import method as abo
    from erasekit.request import EraseRequest

    contexts = ["a red {} on snow", "a photo of a {}"]
    aimed = []
    original = abo._Teacher.guidance_toward

    def recording(self, x, t, anchors, eps_u):
        aimed.append(anchors.hidden.clone())
        return original(self, x, t, anchors, eps_u)

    monkeypatch.setattr(abo._Teacher, "guidance_toward", recording)
    config = {"steps": 4, "robust": True, "robust_steps": 1, "robust_warmup": 0.5, "robust_contexts": contexts,
              "sampling_steps": 6, "batch_size": 3, "pool_size": 3}
    patch = api.erase(tiny_model, "abo", EraseRequest(concepts=["circle"], anchors=["square"]), config, progress=False)
    assert len(aimed) == 2 and patch.info["robust"]["attacks"] == 2  # the steps after the warm-up
    sentences = tiny_model.encode(["a red square on snow", "a photo of a square"]).hidden
    for hidden in aimed:  # every example's target: the anchor in one of the drawn sentences
        for row in hidden:
            assert min(float((row - s).abs().max()) for s in sentences) < 1e-5
    with pytest.raises(ValueError, match="robust_contexts re-aims"):
        abo.AboConfig(robust=True, robust_contexts=contexts, preset="nudity")


@pytest.mark.parametrize("method", ["abo", "ca", "esd", "sdd", "fmn"])
def test_every_training_method_takes_the_option_and_records_its_adversary(tiny_model, method):
    from erasekit import api
    from erasekit.request import EraseRequest

    request = EraseRequest(concepts=["circle"], anchors=["square"])
    base = {"steps": 3, "robust_steps": 2, "robust_warmup": 0.0}
    extra = {"ca": {"n_images": 2, "image_steps": 2}, "abo": {"sampling_steps": 6},
             "esd": {"sampling_steps": 4}, "sdd": {"sampling_steps": 4},
             "fmn": {"n_images": 2, "image_steps": 2, "lr": 1e-3}}[method]
    robust = api.erase(tiny_model, method, request, {**base, **extra, "robust": True}, progress=False)
    plain = api.erase(tiny_model, method, request, {**base, **extra}, progress=False)
    assert robust.config["robust"] and robust.info["robust"]["attacks"] == 3
    assert robust.info["robust"]["retain_prompts"] > 0 and robust.info["robust"]["retain_loss"] is not None
    assert "robust" not in plain.info
    assert any(not torch.equal(robust.deltas[n], plain.deltas[n]) for n in plain.deltas)


def test_fmn_under_the_adversary_steers_the_prefix_columns_and_the_concept_s(tiny_model):
    from erasekit.core.attention import token_indices
    from erasekit.methods.fmn.method import concept_columns, prefix_columns

    adv = AdversarialPrefix(tiny_model, None, ["a photo of circle"], RobustOptions(robust=True), total_steps=10)
    tok = tiny_model.sequence_tokenizer
    (attacked,) = prefix_columns(tiny_model, adv, ["circle"], use_pooler=False)
    text = adv.texts[0]
    ids = tok(text).input_ids
    assert [ids[i] for i in attacked if ids[i] in adv.slot_ids] == adv.slot_ids  # δ's own columns
    assert set(token_indices(tok, text, "circle")) <= set(attacked)
    assert len(attacked) == len(adv.slot_ids) + len(concept_columns(tiny_model, "a photo of circle", "circle", False))


def test_a_plain_erase_takes_the_retain_term_alone(tiny_model):
    from erasekit import api
    from erasekit.request import EraseRequest

    request = EraseRequest(concepts=["circle"], anchors=["square"])
    config = {"steps": 3, "n_images": 2, "image_steps": 2}
    kept = api.erase(tiny_model, "ca", request, {**config, "retain": 1.0, "robust_retain_prompts": ["a red square"]},
                     progress=False)
    plain = api.erase(tiny_model, "ca", request, config, progress=False)
    assert "robust" not in kept.info and kept.info["retain"]["retain_prompts"] == 1
    assert kept.info["retain"]["retain_loss"] is not None and "retain" not in plain.info
    assert any(not torch.equal(kept.deltas[n], plain.deltas[n]) for n in plain.deltas)
    with pytest.raises(ValueError, match="retain must be a finite number"):
        RobustOptions(retain=float("nan")).check_robust()


def test_the_retain_term_draws_an_image_of_every_retain_prompt_when_there_are_many(tiny_model):
    from erasekit.core.edit import RunOptions
    from erasekit.core.robust import RETAIN_IMAGES, retain_term
    from erasekit.methods.abo.config import AboConfig

    prompts = [f"a {c} {s} on {b}" for c in ("red", "blue", "green") for s in ("square", "cross", "triangle")
               for b in ("snow", "sand", "slate", "grass")]
    assert len(prompts) > RETAIN_IMAGES
    config = AboConfig(robust=True, robust_retain_prompts=prompts)
    with EditSession(tiny_model, "xattn-kv") as session:
        term = retain_term(tiny_model, session, config, ["circle"], RunOptions(progress=False))
    assert len(term.latents) == len(prompts)  # image i is prompt i mod P's: every prompt has one


def test_the_retain_term_is_zero_on_the_frozen_model_and_pulls_a_moved_student_back(tiny_model):
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(4, *tiny_model.latent_shape, generator=gen)
    with EditSession(tiny_model, "xattn-kv") as session:
        term = RetainTerm(tiny_model, session, ["a red square", "a blue cross"], latents,
                          weight=0.3, start=2)
        assert term(1, torch.Generator().manual_seed(1)) == 0.0  # the warm-up trains the plain method
        assert float(term(2, torch.Generator().manual_seed(1))) == pytest.approx(0.0, abs=1e-10)
        _student_moved_off_the_concept(tiny_model, session)
        loss = term(2, torch.Generator().manual_seed(1))
        assert float(loss) > 0 and term.last_loss == pytest.approx(float(loss) / 0.3)
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in session.params.values())


def test_retain_prompts_leave_out_what_names_an_erased_concept():
    assert retain_prompts(["a red square", "a red circle", "a Circle on snow"], ["circle"]) == ["a red square"]
    coco = retain_prompts([], ["dog"])
    assert len(coco) == 78 and "a photo of a cat" in coco and not any("dog" in p for p in coco)  # and "hot dog"
    assert "a photo of a carrot" in retain_prompts([], ["car"])  # a word, not a substring
    with pytest.raises(ErasekitError, match="names an erased concept"):
        retain_prompts(["a circle"], ["circle"])
    with pytest.raises(ValueError):
        RobustOptions(robust_retain=-1.0).check_robust()


def test_robust_settings_are_checked_and_refused_where_they_cannot_run(tokenizer_dir):
    from conftest import build_tiny_flux_pipeline

    from erasekit.core.model import DiffusionModel
    from erasekit.registry import get_method

    for bad in ({"robust_lr": float("nan")}, {"robust_steps": 0}, {"robust_warmup": 1.0}, {"robust_attack": "suffix"},
                {"robust_latents": "anchor"}, {"robust_contexts": ["a photo of a circle"]}):
        with pytest.raises(ValueError):
            RobustOptions(**bad).check_robust()
    with pytest.raises(ValueError, match="fmn steers the attention on the concept word"):
        get_method("fmn").config_class(robust=True, robust_attack="replace")
    with pytest.raises(ErasekitError, match="does not name it") as exc:
        attacked_texts(["circle", "a red square"], "<x>", ["circle"], "replace")
    assert "\n" not in str(exc.value)
    model = DiffusionModel(build_tiny_flux_pipeline(tokenizer_dir))
    spec = get_method("esd")
    with pytest.raises(ErasekitError, match="robust erasure sets an adversarial prefix") as exc:
        spec.check_family(model.family, spec.config_class(robust=True))
    assert "\n" not in str(exc.value)
    spec.check_family(model.family, spec.config_class())  # without the option, esd runs on Flux


def test_rece_epochs_leave_no_embedding_that_maps_back_to_the_concept_as_well(tiny_model):
    """UCE + RECE: the best adversarial embedding's residual Σ_l ‖W_l c′ − W⁰_l c‖² (+ λ‖c′‖²) grows."""
    from erasekit import api
    from erasekit.core import patch as patching
    from erasekit.core.scopes import named_parameters
    from erasekit.methods.uce.method import rece_embedding, token_rows
    from erasekit.request import EraseRequest

    request = EraseRequest(concepts=["circle"], anchors=["square"])
    rows, _ = token_rows(tiny_model, "circle", "last+eos")
    names = [n for n in named_parameters(tiny_model.named_modules()) if tiny_model.family.reader_field(n) == "hidden"]
    original = [named_parameters(tiny_model.named_modules())[n].detach().clone() for n in names]

    def residual(patch) -> float:
        with patching.applied_temporarily(tiny_model, [patch]):
            current = [named_parameters(tiny_model.named_modules())[n].detach().clone() for n in names]
        found = rece_embedding(current, original, rows, 0.1)
        return sum(float((found @ w.T - rows @ w0.T).pow(2).sum()) for w, w0 in zip(current, original, strict=True)
                   ) + 0.1 * float(found.pow(2).sum())

    plain = api.erase(tiny_model, "uce", request, {}, progress=False)
    robust = api.erase(tiny_model, "uce", request, {"robust": True, "robust_epochs": 2}, progress=False)
    assert robust.info["robust"]["epochs"] == 2 and "robust" not in plain.info
    assert residual(robust) > 1.05 * residual(plain)


def test_the_toy_world_sizes_the_adversary_only_when_robust_is_asked_for():
    from erasekit import api
    from erasekit.request import EraseRequest

    request = EraseRequest(concepts=["circle"], anchors=["square"])
    plain = api.resolve_config("abo", "toyworld", request, {})
    robust = api.resolve_config("abo", "toyworld", request, {}, {"robust": "true"})
    assert (plain.config.robust, plain.config.robust_every) == (False, 1)  # the paper's, untouched
    assert robust.config.robust and robust.config.robust_every == 1
    assert (robust.config.robust_tokens, robust.config.robust_steps) == (4, 30)  # a shape's adversary
    striped = api.resolve_config("abo", "toyworld", EraseRequest(concepts=["striped"], anchors=["solid"]), {},
                                 {"robust": "true"})
    assert (striped.config.robust_tokens, striped.config.robust_steps) == (1, 10)  # AdvUnlearn's size, 10 steps
    assert robust.sources["robust_every"] == "model:toyworld" and robust.sources["robust"] == "set"
    kept = robust.config.robust_retain_prompts  # the other shapes, never the circle or its synonym
    assert kept and "a red square" in kept and not any("circle" in p or "disc" in p for p in kept)
    assert {"a square on snow", "a striped square"} <= set(kept)  # a robust run holds every word in its place
    from erasekit.eval.suites import resolve_suite

    evaluated = {p.prompt for group in resolve_suite("toyworld:shape=circle").groups.values() for p in group}
    assert not evaluated & set(kept)  # the retain set shares the world's words, never an evaluation prompt
    assert plain.config.robust_retain_prompts == []
    retained = api.resolve_config("ca", "toyworld", request, {}, {"retain": "0.3"})  # a plain run's retain term
    assert not retained.config.robust and "a red square" in retained.config.robust_retain_prompts
    assert not any(" on " in p for p in retained.config.robust_retain_prompts)  # as calibrated (ca.md)
    assert retained.sources["robust_retain_prompts"] == "model:toyworld"
    # the robust values are keyed by kind (CA's stripes and shapes differ; abo's are shared), its captions by kind too
    stripes = api.resolve_config("abo", "toyworld", EraseRequest(concepts=["striped"], anchors=["solid"]), {},
                                 {"robust": "true"})
    assert (stripes.config.robust_every, stripes.config.retain_encoding) == (1, 3.0)
    assert (robust.config.robust_every, robust.config.retain_encoding, robust.config.steps) == (1, 3.0, 300)
    assert stripes.config.scope == robust.config.scope == "text-encoder"
    ca = {c: api.resolve_config("ca", "toyworld", EraseRequest(concepts=[c], anchors=[a]), {}, {"robust": "true"})
          for c, a in (("circle", "square"), ("striped", "solid"))}
    assert (ca["circle"].config.lr, ca["circle"].config.retain_encoding) == (2e-3, 0.3)
    assert (ca["striped"].config.lr, ca["striped"].config.retain_encoding) == (1e-3, 0.0)
    # abo's own prompt is the bare word: its adversary also goes in the kind's caption styles (CA has its own)
    contexts = robust.config.robust_contexts
    assert len(contexts) > 10 and "{}" in contexts[0] and any(" on " in c for c in contexts)
    assert stripes.config.robust_contexts != contexts and plain.config.robust_contexts == []
    assert ca["circle"].config.robust_contexts == []
    with_delta = api.resolve_config("abo", "toyworld", EraseRequest(concepts=["striped"], anchors=["solid"]),
                                    {"preset": "toyworld-striped"}, {"robust": "true"})
    assert with_delta.config.robust_contexts == [] and with_delta.config.delta == "explicit"


@pytest.mark.parametrize("method", ["fmn", "sepme"])
def test_robust_fmn_and_sepme_run_on_an_mmdit_s_joint_attention(tiny_sd3_model, method):
    """FMN steers the joint attention's text columns, SepME passes its increments as tensors: the adversary
    runs through both on SD3, and the robust patch differs from the plain one."""
    from erasekit import api
    from erasekit.request import EraseRequest

    values = {"fmn": {"n_images": 2, "image_steps": 2, "lr": 1e-3, "steps": 3},
              "sepme": {"n_images": 2, "image_steps": 2, "max_steps": 3, "warmup": 0, "tau": -1e9,
                        "beta": 1e-2}}[method]
    request = EraseRequest(concepts=["circle"])
    robust = {"robust": True, "robust_steps": 2, "robust_warmup": 0.0, "robust_retain_prompts": ["a square"]}

    def one(result):
        return result[0] if isinstance(result, list) else result

    attacked = one(api.erase(tiny_sd3_model, method, request, {**values, **robust}, progress=False))
    plain = one(api.erase(tiny_sd3_model, method, request, values, progress=False))
    assert attacked.info["robust"]["attacks"] == 3 and attacked.info["robust"]["retain_prompts"] == 1
    assert any(not torch.equal(attacked.deltas[n], plain.deltas[n]) for n in plain.deltas)


@pytest.mark.parametrize("method", ["abo", "ca", "esd"])
def test_robust_erasure_can_train_the_text_encoder_as_advunlearn_does(tiny_model, method):
    """scope text-encoder: only the CLIP layers move, the student reads its conditions through them (the
    concept prompt's encoding changes), and the adversary runs against that encoder."""
    from erasekit import api
    from erasekit.core import patch as patching
    from erasekit.request import EraseRequest

    request = EraseRequest(concepts=["circle"], anchors=["square"])
    where = {"esd": {"variant": "te", "sampling_steps": 4}, "ca": {"scope": "text-encoder", "n_images": 2,
             "image_steps": 2}, "abo": {"scope": "text-encoder", "sampling_steps": 6}}[method]
    values = {"steps": 3, "robust_steps": 2, "robust_warmup": 0.0, "lr": 1e-2, "robust": True,
              "robust_retain_prompts": ["a square"], **where}
    plain = api.erase(tiny_model, method, request, {**values, "robust": False}, progress=False)
    # no adversary, no retain term: only the method's own loss, read through the encoder, moves it
    assert any(float(d.abs().max()) > 0 for d in plain.deltas.values())
    patch = api.erase(tiny_model, method, request, values, progress=False)
    assert patch.deltas and all(n.startswith("text_encoder.") for n in patch.deltas)
    assert "embeddings" not in " ".join(patch.deltas)
    assert patch.info["robust"]["attacks"] == 3
    with torch.no_grad():
        before = tiny_model.encode(["circle", "a red square"]).hidden.clone()
        with patching.applied_temporarily(tiny_model, [patch]):
            after = tiny_model.encode(["circle", "a red square"]).hidden
        assert not torch.allclose(before[0], after[0])
        assert torch.equal(before, tiny_model.encode(["circle", "a red square"]).hidden)  # removed exactly


def test_retain_encoding_keeps_the_retain_prompts_encodings_where_the_text_encoder_trains(tiny_model):
    """The encoding term holds E_θ(c_r) near E*(c_r) on a run that moves the encoder; it needs no retain
    images, and a run whose scope trains no text encoder refuses it in one line."""
    from erasekit import api
    from erasekit.core import patch as patching
    from erasekit.errors import ErasekitError
    from erasekit.request import EraseRequest

    request = EraseRequest(concepts=["circle"], anchors=["square"])
    values = {"steps": 6, "n_images": 2, "image_steps": 2, "lr": 3e-2, "scope": "text-encoder",
              "robust_retain_prompts": ["a red square", "a blue cross"]}
    free = api.erase(tiny_model, "ca", request, values, progress=False)
    kept = api.erase(tiny_model, "ca", request, {**values, "retain_encoding": 100.0}, progress=False)
    assert kept.info["retain"]["retain_encoding_loss"] is not None and kept.info["retain"]["retain_loss"] is None

    def moved(patch) -> float:
        with torch.no_grad():
            before = tiny_model.encode(["a red square", "a blue cross"]).hidden.clone()
            with patching.applied_temporarily(tiny_model, [patch]):
                after = tiny_model.encode(["a red square", "a blue cross"]).hidden
        return float((after - before).pow(2).mean())

    assert moved(free) > 0 and moved(kept) < 0.5 * moved(free)
    with pytest.raises(ErasekitError, match="trains no text encoder"):
        api.erase(tiny_model, "ca", request, {**values, "scope": "xattn-kv", "retain_encoding": 1.0}, progress=False)
    with pytest.raises(ValueError, match="retain_encoding must be a finite number"):
        RobustOptions(retain_encoding=-1.0).check_robust()
