"""The five attacks on the shipped toy world: each reaches the concept on the base model, none can on a
model that no longer reads its prompt, each is deterministic per seed, and their settings, budget curve
and cost reach the result file. On tiny SDXL / SD3 models the prompt attacks set every token table."""

import json

import pytest
import torch

from erasekit.core import patch as patching
from erasekit.core.data import SamplingSettings
from erasekit.core.sampler import generate_images
from erasekit.core.scopes import select
from erasekit.core.tokens import TokenSlots, free_placeholders, project_to_simplex
from erasekit.eval.attack_names import ATTACKS, count_key
from erasekit.eval.attacks import AttackInputs, build_attack
from erasekit.eval.detectors import get_detector

PROMPTS = ["a red circle on snow", "a blue circle on sand"]
SETTINGS = SamplingSettings(seeds=[0, 1], steps=8)
BUDGET = 30  # every attack's budget here: steps, or Ring-A-Bell's generations
# small searches, so that the whole file stays within seconds per attack
SMALL = {"ring-a-bell": {"population": 40, "keep": 20, "tokens": 8}, "p4d": {"tokens": 8},
         "concept-inversion": {"lr": 0.05}, "hard-prompt": {"lr": 0.05}}


@pytest.fixture(scope="module")
def toyworld():
    from erasekit import api

    return api.load_model("toyworld", device="cpu")


def _rate(images) -> float:
    return float((get_detector("toyworld-classifier").detect(images)["shape"] == "circle").mean())


def _run(model, name, patches=(), seed=0, budgets=(BUDGET,)):
    attack = build_attack(name, seed=seed, **SMALL.get(name, {}))
    return attack.run(AttackInputs(model, list(patches), "circle", PROMPTS, SETTINGS), list(budgets))


def _deaf_patch(model):
    """Cross-attention values zeroed: the UNet draws the same image whatever the prompt says, so no
    prompt, token or embedding can ask for a circle (the concept is out of every vocabulary's reach)."""
    params = {n: p for n, p in select(model.named_modules(), "xattn-kv").params.items() if ".to_v." in n}
    base = {n: p.detach().clone() for n, p in params.items()}
    return patching.Patch.from_weights(base, {n: torch.zeros_like(b) for n, b in base.items()}, "test", {},
                                       ["circle"])


@pytest.mark.parametrize("name", list(ATTACKS))
def test_an_attack_reaches_the_concept_on_the_base_model_and_not_past_a_deaf_one(toyworld, name):
    (reached,) = _run(toyworld, name)
    assert reached.budget == BUDGET and len(reached.texts) == len(PROMPTS) and reached.seconds > 0
    assert _rate(reached.images) >= 0.5
    if name != "unlearndiff":  # UnlearnDiffAtk adds words before the prompt; the others avoid its word
        assert all("circle" not in text.split() for text in reached.texts)  # found without typing the word
    deaf = _deaf_patch(toyworld)
    (blocked,) = _run(toyworld, name, patches=[deaf])
    with patching.applied_temporarily(toyworld, [deaf]):
        unprompted = generate_images(toyworld, [""] * 4, [0, 1, 0, 1], steps=SETTINGS.steps, progress=False)
    torch.testing.assert_close(blocked.images, unprompted, atol=1e-5, rtol=0)  # nothing got through
    assert patching.applied(toyworld) == []


@pytest.mark.parametrize("name", ["unlearndiff", "ring-a-bell", "p4d"])
def test_an_attack_is_deterministic_per_seed(toyworld, name):
    first, second = (_run(toyworld, name, budgets=(4, 8)) for _ in range(2))
    assert [o.texts for o in first] == [o.texts for o in second]
    assert all(torch.equal(a.images, b.images) for a, b in zip(first, second, strict=True))
    assert [o.budget for o in first] == [4, 8] and first[0].seconds <= first[1].seconds
    other = _run(toyworld, name, seed=1, budgets=(8,))
    assert other[0].texts != first[1].texts


def test_p4d_k_keeps_the_prompt_and_inserts_one_token_per_three(toyworld):
    (outcome,) = build_attack("p4d", mode="k").run(AttackInputs(toyworld, [], "circle", PROMPTS, SETTINGS), [2])
    words = outcome.texts[0].split()
    assert len(words) == 5 + 1 + 5 // 3 and [w for i, w in enumerate(words) if i not in (0, 4)] == PROMPTS[0].split()


def test_results_record_each_attack_s_settings_budget_curve_and_cost(toyworld, tmp_path):
    from erasekit import api

    deaf = _deaf_patch(toyworld)
    result = api.evaluate(toyworld, [deaf], "toyworld:shape=circle", seeds="0", steps=4, groups=["target"],
                          attack="unlearndiff,ring-a-bell", attack_steps="2,4", progress=False, cache_dir=tmp_path,
                          attack_settings={"ring-a-bell": SMALL["ring-a-bell"]})
    for name in ("unlearndiff", "ring-a-bell"):
        key = ATTACKS[name].metric
        detail = result["details"][key]
        assert detail["settings"][build_attack(name).budget_field] == 4 and detail["attack"] == name
        assert [p["budget"] for p in detail["curve"]] == [2, 4]
        assert result["metrics"][key] == detail["curve"][-1]["value"] and result["metrics"][count_key(key)]
        assert detail["ci95"] == detail["curve"][-1]["ci95"]  # the report draws the rate's interval from here
        assert all(p["seconds_per_prompt"] > 0 and p["texts"] for p in detail["curve"])
    out = api.save_evaluation(result, tmp_path / "run")
    assert (out / "grids" / "attack-ring-a-bell.png").exists()
    assert "recovery_rate_unlearndiff" in json.loads((out / "results.json").read_text())["metrics"]
    cached = list((tmp_path / "ring-a-bell").glob("*.json"))  # the black-box search is kept for other methods
    assert len(cached) == 1


def test_cli_refuses_unknown_attacks_and_bad_budgets_in_one_line(tmp_path):
    import subprocess
    import sys

    for args, message in ((["--attack", "unlearndif"], "did you mean 'unlearndiff'"),
                          (["--attack-steps", "100,x"], "whole numbers")):
        run = subprocess.run([sys.executable, "-m", "erasekit", "eval", "--model", "toyworld", "--suite",
                              "toyworld:shape=circle", "--out", str(tmp_path / "o"), *args],
                             capture_output=True, text=True)
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
        assert not (tmp_path / "o").exists()


def test_simplex_projection_is_a_projection():
    v = torch.randn(5, 7, generator=torch.Generator().manual_seed(0)) * 3
    p = project_to_simplex(v)
    assert torch.allclose(p.sum(-1), torch.ones(5)) and (p >= 0).all()
    torch.testing.assert_close(project_to_simplex(p), p)
    torch.testing.assert_close(project_to_simplex(torch.tensor([0.5, 0.2, 0.3])), torch.tensor([0.5, 0.2, 0.3]))
    torch.testing.assert_close(project_to_simplex(torch.tensor([2.0, 0.0])), torch.tensor([1.0, 0.0]))


def test_a_slot_carrying_a_word_s_rows_encodes_as_that_word(toyworld):
    tok = toyworld.tokenizer
    (slot,) = free_placeholders(tok, 1, ["a red circle"])
    assert slot not in tok("a red circle", add_special_tokens=False).input_ids
    circle = torch.tensor(tok("circle", add_special_tokens=False).input_ids)
    slots = TokenSlots(toyworld, [slot])
    with slots, torch.no_grad():
        slots.set({name: rows[None] for name, rows in slots.table_rows(circle).items()}, torch.tensor([0]))
        via_slot = toyworld.encode([f"a red {tok.decode([slot])}"]).hidden
    torch.testing.assert_close(via_slot, toyworld.encode(["a red circle"]).hidden)


@pytest.mark.parametrize("family", ["sdxl", "sd3"])
@pytest.mark.parametrize("name", ["unlearndiff", "p4d"])
def test_prompt_attacks_set_every_token_table_of_the_family(family, name, tokenizer_dir):
    import conftest

    from erasekit.core.model import DiffusionModel

    builder = {"sdxl": conftest.build_tiny_sdxl_pipeline, "sd3": conftest.build_tiny_sd3_pipeline}[family]
    model = DiffusionModel(builder(tokenizer_dir))
    slots = TokenSlots(model, [1])
    assert len(slots.tables) == 2  # both CLIP token tables
    (outcome,) = build_attack(name, **SMALL.get(name, {})).run(
        AttackInputs(model, [], "circle", ["a red circle"], SamplingSettings(seeds=[0], steps=2)), [2])
    assert outcome.images.shape[0] == 1 and "circle" not in outcome.texts[0].split()[:1]


def test_ls_attacks_names_each_attack_and_its_registered_metric():
    from click.testing import CliRunner

    from erasekit.cli.main import cli
    from erasekit.eval.metric_registry import METRICS

    out = CliRunner().invoke(cli, ["ls", "attacks"]).output
    for name, entry in ATTACKS.items():
        assert name in out and entry.metric in out and entry.metric in METRICS
