import pytest

from erasekit.errors import ErasekitError
from erasekit.request import EraseRequest, parse_overrides


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


def test_overrides_are_typed():
    assert parse_overrides(["lam=5", "scope=xattn", "grad_clip=null", "flag=true"]) == {
        "lam": 5, "scope": "xattn", "grad_clip": None, "flag": True}
    with pytest.raises(ErasekitError, match="KEY=VALUE"):
        parse_overrides(["lam"])
