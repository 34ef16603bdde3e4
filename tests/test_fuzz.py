"""Property-based: random bad input to the CLI's parsers and the YAML loaders never ends in a traceback,
and never leaves anything in --out. A small example budget keeps this inside `make test`."""

import os
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erasekit.api import parse_seeds
from erasekit.cli.main import main
from erasekit.errors import ErasekitError
from erasekit.eval.attack_names import parse_attacks, parse_budgets
from erasekit.eval.requirements import parse_requirement
from erasekit.eval.suites import load_suite
from erasekit.request import EraseRequest

# ERASEKIT_FUZZ_EXAMPLES raises the budget for a longer hunt outside CI.
BUDGET = settings(max_examples=int(os.environ.get("ERASEKIT_FUZZ_EXAMPLES", "40")), deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
text = st.text(alphabet=string.printable + "λé∅", max_size=40)
# YAML documents shaped like requests and suites, with random keys, values and nesting
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), text)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                      max_leaves=8)
request_keys = st.sampled_from(["method", "concepts", "anchors", "preserve", "config", "concept", "extra"])
suite_keys = st.sampled_from(["name", "version", "detector", "concept", "groups", "target", "other", "x"])


def _exits_cleanly(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return exc.value.code, err


@BUDGET
@given(method=st.sampled_from(["abo", "ca", "esd", "uce", "abx", ""]) | text,
       concept=text, sets=st.lists(st.tuples(text, text).map("=".join) | text, max_size=3),
       seeds=text)
def test_erase_with_random_input_is_one_line_and_writes_nothing(method, concept, sets, seeds, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["erase", "--model", str(tmp_path / "no-such-model"), "--method", method, "--concept", concept,
            *[a for s in sets for a in ("--set", s)], "--out", str(out)]
    code, err = _exits_cleanly(args, capsys)
    assert code == 2 and err.startswith("erasekit: error:") and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@BUDGET
@given(args=st.lists(st.sampled_from(["--seeds", "--steps", "--guidance", "--require", "--suite", "--device",
                                      "--dtype", "--attack", "--attack-steps"]) | text, min_size=1, max_size=6))
def test_eval_with_random_options_is_one_line_and_writes_nothing(args, tmp_path, capsys):
    out = tmp_path / "ev"
    code, err = _exits_cleanly(["eval", "--model", str(tmp_path / "none"), *args, "--out", str(out)], capsys)
    assert code == 2 and err.startswith("erasekit: error:") and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@BUDGET
@given(document=st.dictionaries(request_keys, values, max_size=5) | values)
def test_request_files_load_or_fail_in_one_line(document, tmp_path):
    path = tmp_path / "request.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    try:
        EraseRequest.from_yaml(path)
    except ErasekitError as exc:
        assert "\n" not in str(exc).strip()


@BUDGET
@given(document=st.dictionaries(suite_keys, values, max_size=6) | values, raw=st.booleans(), junk=text)
def test_suite_files_load_or_fail_in_one_line(document, raw, junk, tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(junk if raw else yaml.safe_dump(document, allow_unicode=True))
    try:
        load_suite(path)
    except ErasekitError as exc:
        assert str(exc).strip()


@BUDGET
@given(spec=text)
def test_seed_requirement_and_attack_parsers_accept_or_refuse(spec):
    for parse in (parse_seeds, parse_requirement, parse_attacks, parse_budgets):
        try:
            parse(spec)
        except ErasekitError as exc:
            assert "\n" not in str(exc)
