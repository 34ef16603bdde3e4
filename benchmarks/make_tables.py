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


def table(doc: dict) -> str:
    runs = doc["runs"]
    keys: list[str] = []
    for run in runs:
        keys += [k for k, v in run["metrics"].items() if k not in keys and isinstance(v, (int, float))]
    label = [f"{run.get('method') or '—'} {run.get('case', '')} {_config_note(run)}".strip() for run in runs]
    lines = [f"### {doc['benchmark']}", "",
             f"`{doc['command']}` at `{doc['git'][:12]}` on {doc['device']} ({doc['created']})", ""]
    if len(runs) == 1:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(runs[0]['metrics'][k])} |" for k in keys]
    else:
        lines += ["| run | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for name, run in zip(label, runs, strict=True):
            lines.append(f"| {name} | " + " | ".join(_fmt(run["metrics"].get(k, "")) for k in keys) + " |")
    return "\n".join(lines)


def _config_note(run: dict) -> str:
    cfg = run.get("config") or {}
    parts = [f"{k}={cfg[k]}" for k in ("scope", "lam", "delta") if k in cfg]
    return f"({', '.join(parts)})" if parts else ""


def render_readme(text: str) -> str:
    """The README text with its results block regenerated from benchmarks/results/*.json."""
    docs = [json.loads(p.read_text()) for p in sorted((ROOT / "benchmarks" / "results").glob("*.json"))]
    body = "\n\n".join(table(d) for d in docs) or "_No results yet._"
    return re.sub(f"{re.escape(START)}.*?{re.escape(END)}", lambda _: f"{START}\n{body}\n{END}", text, flags=re.S)


def main() -> None:
    readme = ROOT / "README.md"
    readme.write_text(render_readme(readme.read_text()))
    print("README tables regenerated from benchmarks/results/*.json")


if __name__ == "__main__":
    main()
