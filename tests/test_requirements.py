"""Release gates (`erasekit eval --require`): parsed against the metric registry, checked honestly."""

import subprocess
import sys

import pytest

from erasekit.errors import ErasekitError
from erasekit.eval.requirements import failures, parse_requirement


@pytest.mark.parametrize(("text", "metric", "op", "bound"), [
    ("target_rate<=0.05", "target_rate", "<=", 0.05),
    (" ssim_other >= .9 ", "ssim_other", ">=", 0.9),
    ("recovery_rate<1E-1", "recovery_rate", "<", 0.1),
    ("other_accuracy>0", "other_accuracy", ">", 0.0),
    ("target_rate==0", "target_rate", "==", 0.0),
])
def test_requirement_forms(text, metric, op, bound):
    req = parse_requirement(text)
    assert (req.metric, req.op, req.bound) == (metric, op, bound)


@pytest.mark.parametrize(("text", "fragment"), [
    ("target_rate", "expected METRIC<=VALUE"),
    ("target_rate=<0.1", "expected METRIC<=VALUE"),
    ("taget_rate<=0.1", "did you mean 'target_rate'"),
    ("target_rate<=low", "'low' is not a number"),
    ("target_rate<=inf", "finite"),
    ("target_rate<=nan", "finite"),
])
def test_bad_requirements_are_one_line(text, fragment):
    with pytest.raises(ErasekitError, match=fragment) as exc:
        parse_requirement(text)
    assert "\n" not in str(exc.value)


def test_failures_name_the_value_and_the_unmeasured():
    reqs = [parse_requirement(t) for t in ("target_rate<=0.05", "ssim_other>=0.9", "clip_score>=0.2")]
    assert failures(reqs, {"target_rate": 0.05, "ssim_other": 0.95, "clip_score": 0.3}) == []
    failed = failures(reqs, {"target_rate": 0.12, "ssim_other": 0.95, "clip_score": float("nan")})
    assert failed == ["target_rate = 0.12, required target_rate<=0.05",
                      "clip_score not measured (required clip_score>=0.2)"]


def test_a_bad_gate_exits_2_before_anything_heavy_loads(tmp_path):
    code = ("import sys\nfrom erasekit.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('heavy' if {'torch', 'diffusers'} & set(sys.modules) else 'light', e.code)\n")
    out = subprocess.run([sys.executable, "-c", code, "eval", "--model", "toyworld", "--suite", "toyworld:shape=circle",
                          "--require", "ssim<=1", "--out", str(tmp_path / "ev")], capture_output=True, text=True)
    assert out.stdout.split() == ["light", "2"]
    assert out.stderr.count("\n") == 1 and "unknown metric 'ssim'" in out.stderr
    assert not (tmp_path / "ev").exists()
