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
    assert module.METRICS_DOC.read_text() == module.render_metrics_doc(), "regenerate docs/metrics.md"
    assert module.TRADEOFF.read_text() == module.render_tradeoff(), "regenerate docs/table1_tradeoff.svg"
    robust = module.render_robust_tradeoff()
    assert robust is None or module.ROBUST_TRADEOFF.read_text() == robust, "regenerate docs/robust_tradeoff.svg"


def test_readme_shows_the_two_commands_first():
    head = (ROOT / "README.md").read_text().split("\n## ")[0]
    assert "make demo" in head and "make test" in head


def test_git_commit_ignores_result_files_but_not_code(tmp_path):
    import subprocess

    from erasekit.eval.results import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "x.json").write_text("{}")
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "README.md").write_text("# readme\n")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    (tmp_path / "benchmarks" / "results" / "x.json").write_text('{"runs": []}')
    (tmp_path / "README.md").write_text("# changed prose\n")
    assert not git_commit(tmp_path).endswith("+dirty")
    (tmp_path / "code.py").write_text("a = 2\n")
    assert git_commit(tmp_path).endswith("+dirty")
