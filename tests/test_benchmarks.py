"""The benchmark protocol's fixed rules: anchors, seed sets, the calibration choice, summaries."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_every_concept_with_its_anchor_by_the_fixed_rule():
    import common

    cases = {c["case"]: c for c in common.concept_cases("next")}
    assert [cases[s]["anchor"] for s in common.SHAPE_ORDER] == ["square", "triangle", "cross", "diamond", "circle"]
    assert cases["striped"]["anchor"] == "solid" and cases["red"]["anchor"] == "green"
    assert cases["red"]["suite"] == "toyworld:color=red:anchor=color=green"
    assert {c["anchor"] for c in common.concept_cases("superset") if c["kind"] == "shape"} == {"thing"}
    assert all(c["anchor"] is None for c in common.concept_cases("none"))
    with pytest.raises(ValueError):
        common.concept_cases("tuned")


def test_calibration_and_evaluation_seeds_are_disjoint():
    import common

    from erasekit.api import CHECK_SEEDS, parse_seeds

    calibration = set(parse_seeds(common.CALIBRATION_SEEDS))
    evaluation = [set(s) for s in common.seed_sets(None)]
    assert len(evaluation) == 2 and not evaluation[0] & evaluation[1]
    assert all(not calibration & s and not set(CHECK_SEEDS) & s for s in evaluation)


def point(target, ssim, drop):
    return {"summary": {"target_rate_mean": sum(target) / len(target), "target_rate_worst": max(target),
                        "ssim_other_mean": ssim, "accuracy_drop_mean": drop}}


def test_calibration_choice_follows_its_written_rule():
    from calibrate_toyworld import choose

    # the strongest erasure wins only among points that preserve enough
    assert choose([point([0.2, 0.4], 0.9, 0.01), point([0.0, 0.0], 0.8, 0.01), point([0.1, 0.1], 0.86, 0.02)]) == 2
    assert choose([point([0.1, 0.3], 0.9, 0.0), point([0.2, 0.2], 0.9, 0.0)]) == 1  # equal mean: lower worst
    assert choose([point([0.0], 0.7, 0.1), point([0.5], 0.8, 0.1)]) == 1  # nothing admissible: most preserving


def test_the_robust_calibration_reads_the_attacker_s_best_over_attacks_restarts_and_budgets(monkeypatch):
    import calibrate_toyworld as cal

    curves = {  # attack seed -> {metric: rate per budget}; the best is P4D's middle budget on restart 1
        0: {"recovery_rate": [0.1, 0.0], "recovery_rate_p4d": [0.2, 0.1]},
        1: {"recovery_rate": [0.0, 0.0], "recovery_rate_p4d": [0.1, 0.4]}}
    calls = []

    def fake_evaluate(model, patches, suite, *, attack_settings, groups, **kw):
        seed = attack_settings["p4d"]["seed"]
        calls.append((seed, groups))
        details = {k: {"curve": [{"value": v} for v in vs]} for k, vs in curves[seed].items()}
        return {"metrics": {"target_rate": 0.0, "fid": 1.0, **{k: vs[-1] for k, vs in curves[seed].items()}},
                "details": {**details, "detector": {}}}

    monkeypatch.setattr(cal.api, "evaluate", fake_evaluate)
    metrics, restarts = cal.evaluate_case(None, None, {"suite": "s"}, [10], 2, ["concept-inversion", "p4d"],
                                          [50, 500], [0, 1])
    assert metrics[cal.BEST] == 0.4 and metrics["recovery_rate_p4d"] == 0.1  # the rates of restart 0 stay as read
    assert "fid" not in metrics and restarts["recovery_rate_p4d"] == {"0": [0.2, 0.1], "1": [0.1, 0.4]}
    assert calls == [(0, list(cal.GROUPS)), (1, ["target"])]  # later restarts draw the attacks alone
    assert cal.recovery_key(["p4d"], [500], [0]) == "recovery_rate_p4d"
    assert cal.recovery_key(["p4d"], [500], [0, 1]) == cal.recovery_key(["p4d"], [50, 500], [0]) == cal.BEST
    assert cal.recovery_key([], [500], [0]) is None


def test_a_joint_grid_axis_moves_its_keys_together():
    from calibrate_toyworld import parse_grid

    assert parse_grid(["pool_size+pool_refresh=64+200,32+300", "lr=1e-4"]) == [
        {"pool_size": "64", "pool_refresh": "200", "lr": "1e-4"},
        {"pool_size": "32", "pool_refresh": "300", "lr": "1e-4"}]
    assert parse_grid(["lr=1,2", "steps=3"]) == [{"lr": "1", "steps": "3"}, {"lr": "2", "steps": "3"}]
    with pytest.raises(SystemExit, match="2 parts"):
        parse_grid(["pool_size+pool_refresh=64+200,32"])


def test_the_cost_rule_takes_the_cheapest_point_that_meets_the_bars():
    from calibrate_toyworld import choose

    def timed(target, ssim, seconds):
        p = point(target, ssim, 0.0)
        p["summary"]["seconds_mean"] = seconds
        return p

    slow, cheap, cheaper_but_short = (timed([0.0, 0.1], 0.9, 200), timed([0.1, 0.15], 0.9, 90),
                                      timed([0.1, 0.4], 0.9, 60))
    assert choose([slow, cheap, cheaper_but_short], rule="cost") == 1  # worst 0.4 misses the bar
    assert choose([slow, cheap, cheaper_but_short]) == 0  # the erasure rule ignores cost
    assert choose([timed([0.1, 0.5], 0.9, 90), timed([0.0, 0.4], 0.9, 200)], rule="cost") == 1  # none meets: first rule


def test_the_reference_loop_is_timed_at_its_own_point_only_where_that_meets_the_bars(tmp_path, monkeypatch):
    import perf_pool_toyworld as perf

    def calibration(target):
        grid = {"steps": "300", "lr": "8e-4"}
        return {"chosen": grid, "runs": [{"grid": grid, **point(target, 0.9, 0.0)}]}

    monkeypatch.setattr(perf, "RESULTS", tmp_path)
    name = perf.REFERENCE_CALIBRATION["abo"]
    (tmp_path / name).write_text(json.dumps(calibration([0.0, 0.2])))
    values, why = perf.reference_values("abo")
    assert values == {**perf.REFERENCE["abo"], "steps": "300", "lr": "8e-4"} and "meets" in why
    (tmp_path / name).write_text(json.dumps(calibration([0.0, 0.4])))  # the worst concept misses the bar
    values, why = perf.reference_values("abo")
    assert values == perf.REFERENCE["abo"] and "no point" in why


def test_the_preservation_rule_takes_the_best_preserving_point_that_meets_the_bars():
    from calibrate_toyworld import choose

    erases, keeps_more, keeps_most_but_short = (point([0.0, 0.0], 0.86, 0.0), point([0.1, 0.1], 0.9, 0.0),
                                                point([0.1, 0.5], 0.95, 0.0))
    assert choose([erases, keeps_more, keeps_most_but_short], rule="preservation") == 1  # worst 0.5 misses the bar
    assert choose([erases, keeps_more, keeps_most_but_short]) == 0  # the erasure rule: the strongest erasure
    # none meets the erasure bars: the first rule
    assert choose([point([0.2, 0.4], 0.9, 0.0), point([0.4, 0.4], 0.95, 0.0)], rule="preservation") == 0


def test_the_per_kind_choice_applies_the_rule_to_each_kinds_cases_alone():
    from calibrate_toyworld import chosen_point

    def run(kind, target, recovery, ssim=0.95):
        metrics = {"target_rate": target, "ssim_other": ssim, "other_accuracy": 1.0, "other_accuracy_base": 1.0,
                   "recovery_rate": recovery}
        return {"kind": kind, "seconds": 1.0, "metrics": metrics}

    # a holds the shape and not the pattern, b the reverse; a is best on the mean over both
    a = {"grid": {"x": "a"}, "runs": [run("shape", 0.0, 0.0), run("pattern", 0.0, 0.5)]}
    b = {"grid": {"x": "b"}, "runs": [run("shape", 0.0, 0.6), run("pattern", 0.0, 0.1)]}
    assert chosen_point([a, b], "recovery_rate", "erasure", per_kind=False) == {"x": "a"}
    assert chosen_point([a, b], "recovery_rate", "erasure", per_kind=True) == {"pattern": {"x": "b"},
                                                                               "shape": {"x": "a"}}
    # admissibility too is judged on the kind's own cases
    c = {"grid": {"x": "c"}, "runs": [run("shape", 0.0, 0.0, ssim=0.5), run("pattern", 0.0, 0.0)]}
    assert chosen_point([a, b, c], "recovery_rate", "erasure", per_kind=True) == {"pattern": {"x": "c"},
                                                                                  "shape": {"x": "a"}}


def test_summary_takes_mean_and_worst_in_each_metrics_direction():
    import common

    runs = [{"metrics": {"target_rate": 0.1, "ssim_other": 0.9}}, {"metrics": {"target_rate": 0.3, "ssim_other": 0.8}}]
    s = common.summarize(runs, ("target_rate", "ssim_other"))
    assert s["target_rate_mean"] == pytest.approx(0.2) and s["target_rate_worst"] == 0.3
    assert s["ssim_other_worst"] == 0.8


def test_merge_reuses_runs_by_case_or_by_label_and_case():
    from merge_results import select_cases

    part = {"command": "x", "runs": [{"label": "abo", "case": "circle"}, {"label": "esd-x", "case": "circle"},
                                     {"label": "abo", "case": "red"}]}
    assert [r["label"] for r in select_cases(part, ["circle"])["runs"]] == ["abo", "esd-x"]
    kept = select_cases(part, ["abo:*"])
    assert [(r["label"], r["case"]) for r in kept["runs"]] == [("abo", "circle"), ("abo", "red")]
    assert kept["reused_cases"] == ["circle", "red"]


def test_a_reused_run_measured_anew_is_replaced_and_only_that_one(tmp_path, monkeypatch):
    import json

    import merge_results

    def result(name, runs):
        doc = {"benchmark": name, "git": "abc", "device": "cpu", "created": "2026-12-01T00:00:00Z",
               "command": f"python b.py --name {name}", "runs": runs}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        return path

    def run(robust, rate, attack="concept-inversion"):
        return {"label": "abo", "case": "circle", "robust": robust, "attack": attack, "metrics": {"rate": rate}}

    # the same patch under another attack (restarts_toyworld) is another run, kept
    old = result("bench", [run(False, 1.0), run(True, 0.5), run(True, 0.3, "p4d")])
    new = result("bench_new", [run(True, 0.2)])
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["merge", str(new), "--reuse", str(old), "circle", "--name", "bench",
                                      "--out", str(out)])
    merge_results.main()
    merged = json.loads(next(out.glob("bench.json")).read_text())
    assert [(r["robust"], r["metrics"]["rate"]) for r in merged["runs"]] == [(True, 0.2), (False, 1.0), (True, 0.3)]
    assert [p["runs"] for p in merged["parts"]] == [1, 2]


def test_merged_parts_keep_their_own_description_but_must_share_the_seeds(tmp_path, monkeypatch):
    import json

    import merge_results

    def result(name, case, tuned, seeds, created):
        doc = {"benchmark": name, "git": "abc", "device": "cpu", "created": created,
               "command": f"python b.py --name {name}", "runs": [{"case": case, "metrics": {}}],
               "tuned": {"anchors": tuned}, "evaluation_seeds": seeds}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(doc))
        return path

    old = result("bench", "red", "old rule", [[0]], "2026-12-01T00:00:00Z")
    new = result("bench_new", "circle", "new rule", [[0]], "2026-12-05T00:00:00Z")
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["merge", str(new), "--reuse", str(old), "red", "--name", "bench",
                                      "--out", str(out)])
    merge_results.main()
    merged = json.loads(next(out.glob("bench.json")).read_text())
    assert [r["case"] for r in merged["runs"]] == ["circle", "red"]  # the newest description, whatever the order
    assert merged["tuned"] == {"anchors": "new rule"}
    assert "tuned" not in merged["parts"][0] and merged["parts"][1]["tuned"] == {"anchors": "old rule"}

    other_seeds = result("bench_seeds", "circle", "new rule", [[20]], "2026-12-05T00:00:00Z")
    monkeypatch.setattr(sys, "argv", ["merge", str(other_seeds), "--reuse", str(old), "red", "--name", "bench",
                                      "--out", str(out)])
    with pytest.raises(SystemExit):
        merge_results.main()


def test_table1_comparison_pairs_only_runs_of_the_same_erasure():
    import table1_toyworld

    def run(anchor, seeds, rate):
        return {"label": "ca", "case": "circle", "anchors": [anchor], "seeds": seeds,
                "metrics": {"target_rate": rate, "n_target": 40, "ssim_other": 0.9}}

    reference = {"benchmark": "ref", "runs": [run("thing", [0, 1], 0.5), run("square", [0, 1], 0.0)]}
    rows = table1_toyworld.comparison([run("thing", [0, 1], 0.5), run("square", [2, 3], 0.1)], reference)["rows"]
    assert len(rows) == 1 and rows[0][2].startswith("0.500") and rows[0][4] == "yes"
    # another config is another erasure: a field the older record lacks counts at its default
    older, newer = run("thing", [0, 1], 0.5), run("thing", [0, 1], 0.4)
    older["config"], newer["config"] = {"lr": 3e-3}, {"lr": 3e-3, "retain": 0.3}
    assert table1_toyworld.comparison([newer], {"benchmark": "ref", "runs": [older]})["rows"] == []
    newer["config"]["retain"] = 0.0
    assert len(table1_toyworld.comparison([newer], {"benchmark": "ref", "runs": [older]})["rows"]) == 1


def test_a_stopped_benchmark_resumes_only_the_cases_it_measured_with_the_same_config(monkeypatch):
    import dataclasses
    from types import SimpleNamespace

    import common

    from erasekit import api
    from erasekit.request import EraseRequest

    model = SimpleNamespace(profile="toyworld", family=SimpleNamespace(name="sd"), source="toyworld")
    request = EraseRequest(concepts=["circle"], anchors=["square"])
    resolved = api.resolve_config("abo", "toyworld", request, {}, family="sd")
    config = common.as_json(dataclasses.asdict(resolved.config))
    earlier = [{"method": "abo", "concepts": ["circle"], "anchors": ["square"], "config": config,
                "model": "toyworld", "suite": "S", "seeds": seeds, "seed_set": i, "case": "circle",
                "metrics": {"target_rate": 0.1 * i}, "measured_at": "abc"} for i, seeds in enumerate([[0], [20]])]

    class Erased(Exception):
        pass

    def erase_timed(*args, **kwargs):
        raise Erased

    monkeypatch.setattr(common, "erase_timed", erase_timed)
    runs = common.run_case(model, "abo", request, {}, "S", [[0], [20]], 35, label={"case": "circle"}, earlier=earlier)
    assert runs == earlier
    # another setting, another seed set or an attack the earlier run lacks is measured anew
    for config, sets, attack in (({"lr": 1e-3}, [[0], [20]], 0), ({}, [[0], [30]], 0), ({}, [[0], [20]], 50)):
        with pytest.raises(Erased):
            common.run_case(model, "abo", request, config, "S", sets, 35, label={"case": "circle"},
                            earlier=earlier, attack_steps=attack)


def test_a_record_made_before_a_config_field_existed_matches_only_with_that_field_at_its_default():
    import dataclasses

    import common

    from erasekit import api
    from erasekit.request import EraseRequest

    request = EraseRequest(concepts=["circle"], anchors=["thing"])
    config = api.resolve_config("ca", "toyworld", request, {}, family="sd").config
    recorded = common.as_json(dataclasses.asdict(config))
    older = {k: v for k, v in recorded.items() if k != "concept_templates"}  # measured before the field
    assert common.same_config(recorded, config) and common.same_config(older, config)
    with_templates = dataclasses.replace(config, concept_templates=[["a {}"]])
    assert not common.same_config(older, with_templates)
    as_stored = common.as_json(common.config_key(config))  # a plain erase is stored without robust fields
    assert common.same_config(as_stored, config) and common.same_config(recorded, config)
    unset_as_none = {**as_stored, "concept_templates": None}  # recorded when the field's default was None
    assert common.same_config(unset_as_none, config) and not common.same_config(unset_as_none, with_templates)
    assert not common.same_config({**older, "lr": older["lr"] * 2}, config)
    assert not common.same_config({**recorded, "gone": 1}, config)  # a field the method no longer has
    robust = dataclasses.replace(config, robust=True, robust_retain_prompts=[])
    before_retain = {k: v for k, v in common.as_json(dataclasses.asdict(robust)).items() if k != "robust_retain"}
    assert not common.same_config(before_retain, robust)  # it ran without the retain term
    assert common.same_config(before_retain, dataclasses.replace(robust, robust_retain=0.0))


def test_the_cost_curve_has_as_many_distinct_concepts_as_it_asks_for():
    from types import SimpleNamespace

    from perf_concepts import ANCHORS, concept_words

    vocab = {"thing</w>": 0, "b</w>": 3, "a</w>": 2, "c": 1, "x1</w>": 4}  # whole words a, b (by id), no anchor
    model = SimpleNamespace(tokenizer=SimpleNamespace(get_vocab=lambda: dict(vocab)))
    assert concept_words(model, 1) == ["a"]
    assert concept_words(model, 4) == ["a", "b", "a b", "b a"]  # past the whole words: phrases of them
    assert not set(concept_words(model, 4)) & set(ANCHORS)


def test_merged_parts_get_their_scripts_views_by_name_or_stem():
    from merge_results import _script

    assert _script("table1_toyworld-mmdit").__name__ == "table1_toyworld-mmdit"  # the script before the '-'
    quality = _script("perf_concepts_quality").tables  # perf_concepts.py's second result
    runs = [{"label": "abo", "mode": m, "case": "circle", "metrics": {"target_rate": r, "seconds": 2.0}}
            for m, r in (("joint", 0.5), ("alone", 0.0))]
    rows = quality(runs, None)[0]["rows"]
    assert rows[0][:4] == ["abo", 1, 0.0, 0.5]
    assert _script("perf_concepts_quality").chosen_of(runs) is None  # not a calibration
    assert _script("no_such_benchmark") is None


def test_a_merged_joint_calibration_recomputes_its_choice():
    from merge_results import _script
    from perf_concepts import KEPT, QUALITY_CONCEPTS

    def runs(scale, rate):
        config = {"steps": int(150 * scale)}
        joint = [{"label": "abo", "steps_scale": scale, "mode": "joint", "case": c, "config": config,
                  "metrics": {"target_rate": rate, "target_rate_base": 1.0, "seconds": 1.0}} for c in QUALITY_CONCEPTS]
        kept = [{"label": "abo", "steps_scale": scale, "mode": "kept", "case": c, "config": config,
                 "metrics": {"target_rate": 1.0, "target_rate_base": 1.0, "seconds": 1.0}} for c in KEPT.values()]
        return joint + kept

    script = _script("calibration_joint_toyworld")  # written by perf_concepts.py
    assert script.chosen_of(runs(4.0, 0.5) + runs(8.0, 0.0))["abo"]["steps_scale"] == 8.0
    assert script.chosen_of(runs(4.0, 0.0) + runs(8.0, 0.0))["abo"]["steps_scale"] == 4.0


def test_the_attack_table_reads_the_largest_budget_and_shows_a_higher_weaker_one():
    from robust_toyworld import recovery_cell

    def run(values):
        curve = [{"budget": b, "value": v, "ci95": [max(v - 0.15, 0.0), min(v + 0.15, 1.0)]}
                 for b, v in zip((50, 150, 500), values, strict=True)]
        return {"metrics": {"recovery_rate": values[-1]}, "attacks": {"recovery_rate": {"curve": curve}}}

    assert recovery_cell(run([0.1, 0.44, 0.19]), "recovery_rate") == "0.190 (0.44 at 150)"
    assert recovery_cell(run([0.1, 0.2, 0.19]), "recovery_rate") == 0.19  # within the largest budget's interval
    assert recovery_cell(run([0.0, 0.1, 0.6]), "recovery_rate") == "0.600 ↑"
    assert recovery_cell(run([0.0, 0.1, 0.6]), "recovery_p4d") == ""


def test_only_curves_still_rising_below_a_rate_of_one_and_the_new_budget_are_extended():
    from robust_toyworld import rising_attacks

    def detail(name, values, budgets=(50, 150, 500)):
        curve = [{"budget": b, "value": v, "ci95": [max(v - 0.15, 0.0), min(v + 0.15, 1.0)]}
                 for b, v in zip(budgets, values, strict=True)]
        return {"attack": name, "curve": curve}

    row = {"attacks": {"a": detail("concept-inversion", [0.0, 0.1, 0.6]), "b": detail("p4d", [0.1, 0.44, 0.19]),
                       "c": detail("hard-prompt", [0.0, 0.3, 1.0]),
                       "d": detail("unlearndiff", [0.0, 0.1, 0.6], (150, 500, 1500))}}
    assert rising_attacks(row, 1500) == ["concept-inversion"]  # p4d stopped; 1.0 cannot rise; d reached 1500
    assert rising_attacks(row, 4500) == ["concept-inversion", "unlearndiff"]


def test_a_file_several_resumed_runs_wrote_keeps_each_command_without_its_output_folder():
    from merge_results import split_parts

    doc = {"git": "abc", "device": "cpu", "created": "2026-12-01T00:00:00Z", "runs": [{"case": "circle"}],
           "command": "python b.py --methods abo --out out/x && python b.py --methods 'uce' --out out/x"}
    assert split_parts(doc)[0]["command"] == "python b.py --methods abo && python b.py --methods uce"
