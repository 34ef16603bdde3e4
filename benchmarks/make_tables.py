"""Regenerate the README's results tables from benchmarks/results/*.json (never edit them by hand)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


# The columns of a multi-run table, in this order (every other metric stays in the JSON).
COLUMNS = ("target_rate", "synonym_rate", "misspelling_rate", "implicit_rate", "anchor_rate", "recovery_rate",
           "other_accuracy", "other_accuracy_base", "ssim_other", "fid_other", "kid_other", "seconds",
           "trainable_params", "examples", "seconds_per_example", "ratio_to_floor")


# Columns that are a benchmark's own cost measurements rather than evaluation metrics.
COST_COLUMNS = ("trainable_params", "examples", "seconds_per_example", "ratio_to_floor")


def _check_registered() -> None:
    from erasekit.eval.metric_registry import METRICS

    unknown = [c for c in COLUMNS if c not in METRICS and c not in COST_COLUMNS]
    if unknown:
        raise SystemExit(f"README columns not in the metric registry: {unknown}")


def table(doc: dict) -> str:
    # a run's measured cost (perf benchmarks) shows beside its metrics
    runs = [{**r, "metrics": {**r.get("metrics", {}), **r.get("cost", {})}} if "cost" in r else r for r in doc["runs"]]
    lines = [f"### {doc['benchmark']}", "",
             f"`{doc['command']}` at `{doc['git'][:12]}` on {doc['device']} ({doc['created']})", ""]
    if "calibration_seeds" in doc:
        lines += [f"Settings chosen on calibration seeds {_seed_text(doc['calibration_seeds'])}"
                  + (f"; reported on evaluation seeds {', '.join(_seed_text(s) for s in doc['evaluation_seeds'])}"
                     if "evaluation_seeds" in doc else "") + ".", ""]
    if "tables" in doc:  # the benchmark's own views of its runs (every run stays in the JSON)
        for view in doc["tables"] + _comparisons(doc):
            lines += [f"{view['title']}:", "", "| " + " | ".join(view["columns"]) + " |",
                      "|---" * len(view["columns"]) + "|"]
            lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in view["rows"]] + [""]
        return "\n".join(lines).rstrip()
    if all("summary" in r for r in runs):  # a calibration: one row per grid point
        keys = list(dict.fromkeys(k for r in runs for k in r["summary"]))
        lines += ["| grid | " + " | ".join(keys) + " | chosen |", "|---" * (len(keys) + 2) + "|"]
        for r in runs:
            grid = ", ".join(f"{k}={v}" for k, v in r["grid"].items()) or "defaults"
            mark = _chosen_mark(r["grid"], doc.get("chosen"))
            lines.append(f"| {grid} | " + " | ".join(_fmt(r["summary"].get(k, "")) for k in keys) + f" | {mark} |")
        cases = list(dict.fromkeys(c["case"] for r in runs for c in r["per_concept"]))
        lines += ["", "target_rate / ssim_other per concept:", "", "| grid | " + " | ".join(cases) + " |",
                  "|---" * (len(cases) + 1) + "|"]
        for r in runs:
            found = {c["case"]: c["metrics"] for c in r["per_concept"]}
            cells = [f"{_fmt(found[c]['target_rate'])} / {_fmt(found[c]['ssim_other'])}" if c in found else ""
                     for c in cases]
            lines.append("| " + (", ".join(f"{k}={v}" for k, v in r["grid"].items()) or "defaults") + " | "
                         + " | ".join(cells) + " |")
        if not doc.get("complete", True):
            lines += ["", "(grid not completed: the points not listed were not run)"]
        return "\n".join(lines)
    varying = _varying(runs)
    if len({tuple(r.get("seeds") or ()) for r in runs if r.get("seeds")}) > 1:
        varying.append("seeds")  # runs on several evaluation seed sets say which row is which
    standard = [r for r in runs if len(runs) > 1 and any(k in r["metrics"] for k in COLUMNS)
                and not any(" " in k for k in r["metrics"])]  # runs with per-setting metrics get their own
    if standard:
        keys = [k for k in COLUMNS if any(k in r["metrics"] for r in standard)]
        lines += ["| run | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for run in standard:
            cells = " | ".join(_fmt(run["metrics"].get(k, "")) for k in keys)
            lines.append(f"| {_label(run, varying)} | {cells} |")
    for run in (r for r in runs if not any(r is s for s in standard)):  # runs with metrics of their own
        if run.get("status") not in (None, "ok"):  # a run that could not measure says why
            lines += ["", f"{_label(run, varying)}: {run['status']}"]
            continue
        if standard or len(runs) > 1:
            lines += ["", f"{_label(run, varying)}:", ""]
        lines += _metric_table(run["metrics"])
    return "\n".join(lines)


def _comparisons(doc: dict) -> list[dict]:
    """A Table-1 file that names another (`compare_to`) gets the view of its runs against that file's."""
    if "compare_to" not in doc:
        return []
    import importlib.util
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("table1_toyworld", ROOT / "benchmarks" / "table1_toyworld.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reference = json.loads((ROOT / "benchmarks" / "results" / f"{doc['compare_to']}.json").read_text())
    return [module.comparison(doc["runs"], reference)]


def _chosen_mark(grid: dict, chosen: dict | None) -> str:
    """'yes' for the chosen point; with a choice per kind of concept (--per-kind), the kinds that chose it."""
    if chosen and all(isinstance(v, dict) for v in chosen.values()):
        return ", ".join(kind for kind, point in chosen.items() if point == grid)
    return "yes" if grid == chosen else ""


def _seed_text(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ",".join(map(str, seeds))


def _metric_table(metrics: dict) -> list[str]:
    """Plain metrics one per row; metrics named '<name> <setting>' pivoted: a row per setting."""
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    plain = {k: v for k, v in numbers.items() if " " not in k}
    lines = ["| metric | value |", "|---|---|"] if plain else []
    lines += [f"| {k} | {_fmt(v)} |" for k, v in plain.items()]
    keyed = [k.split(" ", 1) for k in numbers if " " in k]
    names = list(dict.fromkeys(n for n, _ in keyed))
    settings = list(dict.fromkeys(s for _, s in keyed))
    if keyed:
        lines += ([""] if plain else []) + ["| setting | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {s} | " + " | ".join(_fmt(numbers.get(f"{n} {s}", "")) for n in names) + " |"
                  for s in settings]
    return lines


def _label(run: dict, varying: list[str]) -> str:
    parts = ("label", "case", "export", "loop", "family", "precision", "measured")
    text = " ".join(str(run[k]) for k in parts if run.get(k))
    return f"{'' if run.get('label') else run.get('method') or '—'} {text} {_config_note(run, varying)}".strip()


def _config_note(run: dict, varying: list[str]) -> str:
    cfg = {**(run.get("config") or {}), **({"seeds": _seed_text(run["seeds"])} if run.get("seeds") else {})}
    parts = [f"{k}={cfg[k]}" for k in varying if k in cfg]
    return f"({', '.join(parts)})" if parts else ""


def _varying(runs: list[dict]) -> list[str]:
    """Scalar config keys whose value differs between runs of the same method (what the rows compare)."""
    keys: list[str] = []
    for method in dict.fromkeys(r.get("method") for r in runs):  # run order, not hash order
        cfgs = [r.get("config") or {} for r in runs if r.get("method") == method]
        for key in dict.fromkeys(k for c in cfgs for k in c):
            # A key a run does not have (another kind of run, e.g. purification) does not make it vary.
            present = [c[key] for c in cfgs if key in c]
            if len({repr(v) for v in present}) > 1 and all(isinstance(v, (int, float, str, type(None)))
                                                           for v in present):
                keys += [key] if key not in keys and key not in ("seed", "checkpoint_every") else []
    return keys


def render_readme(text: str) -> str:
    """The README text with its results block regenerated from benchmarks/results/*.json."""
    _check_registered()
    docs = [json.loads(p.read_text()) for p in sorted((ROOT / "benchmarks" / "results").glob("*.json"))]
    body = "\n\n".join(table(d) for d in docs) or "_No results yet._"
    return re.sub(f"{re.escape(START)}.*?{re.escape(END)}", lambda _: f"{START}\n{body}\n{END}", text, flags=re.S)


METRICS_DOC = ROOT / "docs" / "metrics.md"


def render_metrics_doc() -> str:
    """docs/metrics.md from the one metric registry (erasekit/eval/metric_registry.py)."""
    from erasekit.eval.metric_registry import METRICS

    direction = {True: "higher", False: "lower", None: "reference"}
    lines = ["# Metrics", "",
             "Generated by `python benchmarks/make_tables.py` from `erasekit/eval/metric_registry.py`, "
             "the one list of metrics: the evaluation computes no other (a test checks), the HTML report shows every "
             "one a run has, and the README tables' metric columns must be registered. Rates come with their "
             "sample count (the `count` key of a result) and a 95% Wilson interval in `details`.", "",
             "| metric | better | aggregate | count | meaning |", "|---|---|---|---|---|"]
    lines += [f"| {m.name} | {direction[m.higher_is_better]} | {m.aggregate} | {m.count or ''} | {m.description} |"
              for m in METRICS.values()]
    return "\n".join(lines) + "\n"


TRADEOFF = ROOT / "docs" / "table1_tradeoff.svg"


def render_tradeoff() -> str:
    """Table 1 in one picture: per method, the mean target_rate over the toy shapes (evaluation seeds
    0-3) against the mean ssim_other, the bar spanning its best to its worst shape."""
    from erasekit.eval.report import tradeoff_svg

    doc = json.loads((ROOT / "benchmarks" / "results" / "table1_toyworld.json").read_text())
    shapes, per_concept = doc["tables"][0], doc["tables"][1]
    col = {name: i for i, name in enumerate(shapes["columns"])}
    shape_names = [c for c in per_concept["columns"][1:] if c not in ("striped", "red")]
    best = {row[0]: min(v for c, v in zip(per_concept["columns"], row, strict=True) if c in shape_names)
            for row in per_concept["rows"]}
    runs = [{"name": row[col["method"]],
             "metrics": {"target_rate": row[col["target_rate mean"]], "ssim_other": row[col["ssim_other mean"]]},
             "details": {"target_rate": {"ci95": [best[row[col["method"]]], row[col["target_rate worst"]]]}}}
            for row in shapes["rows"] if row[col["seeds"]] == "0-3"]
    return tradeoff_svg(runs, bars="bars: best to worst shape") + "\n"


ROBUST_TRADEOFF = ROOT / "docs" / "robust_tradeoff.svg"


def render_robust_tradeoff() -> str | None:
    """The attack table in one picture: per row of robust_toyworld.json, the strongest attack's rate at
    the largest budget (its 95 % interval as the bar) against ssim_other; None before the file exists."""
    from erasekit.eval.report import tradeoff_svg

    path = ROOT / "benchmarks" / "results" / "robust_toyworld.json"
    if not path.exists():
        return None
    runs = []
    for run in json.loads(path.read_text())["runs"]:
        strongest = max(run["attacks"].values(), key=lambda a: a["curve"][-1]["value"])["curve"][-1]
        runs.append({"name": f"{run['label']}{' +robust' if run['robust'] else ''} {run['case']}",
                     "metrics": {"recovery (strongest attack)": strongest["value"],
                                 "ssim_other": run["metrics"]["ssim_other"]},
                     "details": {"recovery (strongest attack)": {"ci95": strongest["ci95"]}}})
    return tradeoff_svg(runs, rate="recovery (strongest attack)", rate_text="↓ held") + "\n"


def main() -> None:
    readme = ROOT / "README.md"
    readme.write_text(render_readme(readme.read_text()))
    METRICS_DOC.write_text(render_metrics_doc())
    TRADEOFF.write_text(render_tradeoff())
    robust = render_robust_tradeoff()
    if robust is not None:
        ROBUST_TRADEOFF.write_text(robust)
    print("README tables, docs/metrics.md and docs/table1_tradeoff.svg regenerated")


if __name__ == "__main__":
    main()
