"""The README's results tables are generated from benchmarks/results/*.json and must be in sync."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_match_the_json_files():
    spec = importlib.util.spec_from_file_location("make_tables", ROOT / "benchmarks" / "make_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (ROOT / "README.md").read_text()
    assert module.render_readme(text) == text, "run `python benchmarks/make_tables.py` and commit README.md"


def test_readme_shows_the_two_commands_first():
    head = (ROOT / "README.md").read_text().split("\n## ")[0]
    assert "make demo" in head and "make test" in head
