import pytest

from erasekit.errors import ErasekitError
from erasekit.request import EraseRequest, build_config, parse_overrides


def test_request_from_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("concepts: [circle, cross]\nanchors: square\nmethod: abo\nconfig: {lam: 1.0}\n")
    request, extra = EraseRequest.from_yaml(path)
    assert request.concepts == ["circle", "cross"] and request.anchor_list() == ["square", "square"]
    assert extra == {"method": "abo", "config": {"lam": 1.0}}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("concepts: [a\nanchors: b", "line"),
        ("concepts: [a]\ncolour: red", "unknown key 'colour'"),
        ("concepts: []", "names no concept"),
        ("concepts: [a, b, c]\nanchors: [x, y]", "one anchor for all"),
        ("concepts: [a, a]", "named twice"),
        ("concepts: [a]\npreserve: [a]", "both erased and preserved"),
    ],
)
def test_bad_request_files(tmp_path, text, fragment):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ErasekitError, match=fragment):
        EraseRequest.from_yaml(path)


def test_overrides_are_text_until_typed_by_the_config():
    assert parse_overrides(["lam=5", "scope=xattn", " lr = 2e-4"]) == {"lam": "5", "scope": "xattn", "lr": "2e-4"}
    with pytest.raises(ErasekitError, match="KEY=VALUE"):
        parse_overrides(["lam"])


@pytest.mark.parametrize(("text", "expected"), [
    ("lr=2e-4", {"lr": 2e-4}), ("lr=1E-5", {"lr": 1e-5}), ("lr=.5", {"lr": 0.5}), ("lr=3", {"lr": 3.0}),
    ("steps=12", {"steps": 12}), ("suppress_eos=true", {"suppress_eos": True}),
    ("suppress_eos=no", {"suppress_eos": False}), ("grad_clip=none", {"grad_clip": None}),
    ("grad_clip=0.5", {"grad_clip": 0.5}), ("preset=null", {"preset": None}), ("scope=xattn", {"scope": "xattn"}),
    ("instructions=[{text: solid, guidance: 6.5}]", {"instructions": [{"text": "solid", "guidance": 6.5}]}),
])
def test_each_override_form_is_typed_against_its_field(text, expected):
    from erasekit.methods.abo.config import AboConfig

    config = build_config(AboConfig, parse_overrides([text]))
    assert {k: getattr(config, k) for k in expected} == expected


@pytest.mark.parametrize(("text", "fragment"), [
    ("lr=inf", "lr must be a finite number, got inf"), ("lr=nan", "lr must be a finite number, got nan"),
    ("lr=fast", "lr must be float, got 'fast'"), ("steps=2.5", "steps must be int, got '2.5'"),
    ("suppress_eos=maybe", "suppress_eos must be bool"), ("instructions=3", "instructions must be list"),
])
def test_bad_override_values_are_one_clear_error(text, fragment):
    from erasekit.methods.abo.config import AboConfig

    with pytest.raises(ErasekitError, match=fragment):
        build_config(AboConfig, parse_overrides([text]))


def test_lists_of_lists_and_yaml_text_values_are_typed():
    from erasekit.methods.sepme.config import SepmeConfig

    config = build_config(SepmeConfig, parse_overrides(["stages=[[circle, cross], [striped]]", "tau=1e-4"]))
    assert config.stages == [["circle", "cross"], ["striped"]] and config.tau == 1e-4
    # A request file's YAML reads 2e-4 as text too (YAML 1.1): typed the same way.
    assert build_config(SepmeConfig, {"lr": "2e-4"}).lr == 2e-4
