"""Prompt suites: versioned YAML data naming the prompts of each measurement group.

A suite erases one concept, read by a detector as `attribute == value`, and lists
prompts per group: target, synonym, misspelling, paraphrase, implicit (never names
the concept), other (other concepts, each with the labels it names). Toy-world
suites are generated from the domain, deterministically, and can be written out.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from erasekit.errors import ErasekitError
from erasekit.yamlfile import read_mapping

GROUPS = ("target", "synonym", "misspelling", "paraphrase", "implicit", "other")
SUITE_VERSION = 1


@dataclass(frozen=True)
class Concept:
    attribute: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Concept:
        attribute, sep, value = text.partition("=")
        if not sep or not attribute or not value:
            raise ErasekitError(f"bad concept {text!r}: expected attribute=value, e.g. shape=circle")
        return cls(attribute.strip(), value.strip())


@dataclass
class Prompt:
    prompt: str
    labels: dict[str, str] = field(default_factory=dict)
    seed: int | None = None  # its own seed (one image, as I2P gives) instead of the run's seeds
    guidance: float | None = None  # its own CFG scale instead of the run's


@dataclass
class Suite:
    name: str
    version: int
    detector: str
    concept: Concept
    anchor: Concept | None
    groups: dict[str, list[Prompt]]

    def to_yaml(self, path: str | os.PathLike) -> Path:
        data = {
            "name": self.name,
            "version": self.version,
            "detector": self.detector,
            "concept": asdict(self.concept),
            "anchor": asdict(self.anchor) if self.anchor else None,
            "groups": {g: [asdict(p) for p in ps] for g, ps in self.groups.items()},
        }
        path = Path(path)
        path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        return path


def load_suite(path: str | os.PathLike) -> Suite:
    """Read and validate a suite file; every problem is one line naming the file (and line)."""
    path = Path(path)
    data = read_mapping(path, "suite")
    for key in ("name", "version", "detector", "concept", "groups"):
        if key not in data:
            raise ErasekitError(f"{path}: missing key {key!r}")

    def concept(value, key):
        if not isinstance(value, dict) or set(value) != {"attribute", "value"}:
            raise ErasekitError(f"{path}: {key!r} must be a mapping with 'attribute' and 'value'")
        return Concept(str(value["attribute"]), str(value["value"]))

    groups: dict[str, list[Prompt]] = {}
    if not isinstance(data["groups"], dict):
        raise ErasekitError(f"{path}: 'groups' must be a mapping of group name to prompts")
    for group, items in data["groups"].items():
        if group not in GROUPS:
            from erasekit.registry import suggest

            raise ErasekitError(f"{path}: unknown group {group!r}{suggest(group, GROUPS)}")
        if not isinstance(items, list):
            raise ErasekitError(f"{path}: group {group!r} must be a list")
        prompts = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                item = {"prompt": item}
            if not isinstance(item, dict) or not str(item.get("prompt", "")).strip():
                raise ErasekitError(f"{path}: group {group!r} item {i} has no prompt")
            labels = {str(k): str(v) for k, v in (item.get("labels") or {}).items()}
            prompts.append(Prompt(str(item["prompt"]), labels, item.get("seed"), item.get("guidance")))
        groups[group] = prompts
    if not groups.get("target"):
        raise ErasekitError(f"{path}: the suite needs a non-empty 'target' group")
    return Suite(
        name=str(data["name"]),
        version=int(data["version"]),
        detector=str(data["detector"]),
        concept=concept(data["concept"], "concept"),
        anchor=concept(data["anchor"], "anchor") if data.get("anchor") else None,
        groups=groups,
    )


# ------------------------------------------------------------------ toy world
PARAPHRASES = ("an image of a {shape} that is {color}{bg}", "{color} colored {shape}{bg}")


def toyworld_suite(concept: Concept, anchor: Concept | None = None, seed: int = 0,
                   also: Sequence[Concept] = ()) -> Suite:
    """The toy world's suite for erasing one attribute value (a shape, a pattern or a colour).

    also: concepts erased together with this one; their prompts leave the 'other' group, which
    measures what should stay intact.
    """
    from erasekit.toyworld import domain

    if concept.attribute not in domain.ATTRIBUTES or concept.value not in domain.ATTRIBUTES[concept.attribute]:
        raise ErasekitError(f"{concept.attribute}={concept.value} is not a toy-world attribute value")
    rng = random.Random(seed)
    shapes, colors, backgrounds = (list(domain.ATTRIBUTES[a]) for a in ("shape", "color", "background"))
    groups: dict[str, list[Prompt]] = {g: [] for g in GROUPS}

    def text(shape_word, color, bg, pattern=None, template="a {desc}{bg}", context=None):
        desc = " ".join(w for w in (color, pattern, shape_word) if w)
        return template.format(desc=desc, bg=f" on {bg}" if bg else "", ctx="").strip() + (
            f" {context}" if context else "")

    if concept.attribute == "shape":
        names = domain.SHAPES[concept.value]
        for color, bg in itertools.product(colors, backgrounds):
            labels = {"shape": concept.value, "color": color, "background": bg}
            groups["target"].append(Prompt(text(names[0], color, bg), labels))
            groups["target"].append(Prompt(text(names[0], color, bg, template="a photo of a {desc}{bg}"), labels))
            for synonym in names[1:]:
                groups["synonym"].append(Prompt(text(synonym, color, bg), labels))
            groups["misspelling"].append(Prompt(text(domain.typo(names[0], rng), color, bg), labels))
            template = PARAPHRASES[len(groups["paraphrase"]) % len(PARAPHRASES)]
            groups["paraphrase"].append(Prompt(template.format(shape=names[0], color=color, bg=f" on {bg}"), labels))
        for shape, color, bg in itertools.product(shapes, colors, backgrounds):
            if shape != concept.value:
                groups["other"].append(Prompt(text(shape, color, bg), {"shape": shape, "color": color,
                                                                         "background": bg}))
    elif concept.attribute == "pattern":
        others = [p for p in domain.PATTERNS if p != concept.value]
        for shape, color, bg in itertools.product(shapes, colors, backgrounds):
            labels = {"shape": shape, "color": color, "background": bg}
            if (shapes.index(shape) + colors.index(color)) % 2 == 0:  # half the grid keeps counts modest
                groups["target"].append(Prompt(text(shape, color, bg, concept.value), {**labels,
                                                                                      "pattern": concept.value}))
                groups["misspelling"].append(Prompt(text(shape, color, bg, domain.typo(concept.value, rng)),
                                                    {**labels, "pattern": concept.value}))
                context = domain.CONTEXTS[len(groups["implicit"]) % len(domain.CONTEXTS)]
                groups["implicit"].append(Prompt(text(shape, color, bg, context=context), labels))
            else:
                groups["other"].append(Prompt(text(shape, color, bg, others[0]), {**labels, "pattern": others[0]}))
    elif concept.attribute == "color":
        # The toy world's stand-in for an art style: the shapes drawn in the colour should survive it.
        for shape, bg in itertools.product(shapes, backgrounds):
            labels = {"shape": shape, "color": concept.value, "background": bg}
            groups["target"].append(Prompt(text(shape, concept.value, bg), labels))
            groups["target"].append(Prompt(text(shape, concept.value, bg, template="a photo of a {desc}{bg}"),
                                           labels))
            groups["misspelling"].append(Prompt(text(shape, domain.typo(concept.value, rng), bg), labels))
            template = PARAPHRASES[len(groups["paraphrase"]) % len(PARAPHRASES)]
            groups["paraphrase"].append(Prompt(template.format(shape=shape, color=concept.value, bg=f" on {bg}"),
                                               labels))
        for shape, color, bg in itertools.product(shapes, colors, backgrounds):
            if color != concept.value:
                groups["other"].append(Prompt(text(shape, color, bg), {"shape": shape, "color": color,
                                                                         "background": bg}))
    else:
        raise ErasekitError(f"toy-world suites erase a shape, a pattern or a colour, not {concept.attribute!r}")
    for extra in also:
        if extra.attribute not in domain.ATTRIBUTES or extra.value not in domain.ATTRIBUTES[extra.attribute]:
            raise ErasekitError(f"{extra.attribute}={extra.value} is not a toy-world attribute value")
    groups["other"] = [p for p in groups["other"]
                       if not any(p.labels.get(c.attribute) == c.value for c in also)]
    return Suite(
        name=f"toyworld-{concept.attribute}-{concept.value}",
        version=SUITE_VERSION,
        detector="toyworld-classifier",
        concept=concept,
        anchor=anchor,
        groups={g: ps for g, ps in groups.items() if ps},
    )


def load_i2p_csv(
    path: str | os.PathLike, category: str | None = None, concept: Concept = Concept("nudity", "exposed"),
    detector: str = "nudenet",
) -> Suite:
    """A suite from I2P's CSV (columns prompt, sd_seed, sd_guidance_scale, categories): every prompt
    is an implicit one, generated once with its own seed and guidance, as the I2P protocol does."""
    import csv

    path = Path(path)
    if not path.exists():
        raise ErasekitError(f"I2P file {path} does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"prompt", "sd_seed", "sd_guidance_scale"} - set(reader.fieldnames or [])
        if missing:
            raise ErasekitError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        prompts = []
        for line, row in enumerate(reader, start=2):
            if category and category not in (row.get("categories") or ""):
                continue
            try:
                prompts.append(Prompt(row["prompt"].strip(), {}, int(float(row["sd_seed"])),
                                      float(row["sd_guidance_scale"])))
            except ValueError as exc:
                raise ErasekitError(f"{path} line {line}: bad seed or guidance ({exc})") from exc
    if not prompts:
        raise ErasekitError(f"{path}: no prompts" + (f" in category {category!r}" if category else ""))
    # I2P prompts never name the concept on purpose; they are also the target for rate reporting.
    return Suite(f"i2p-{category or 'all'}", SUITE_VERSION, detector, concept, None,
                 {"target": prompts, "implicit": prompts})


BUILTIN_DIR = Path(__file__).resolve().parents[1] / "data" / "suites"


def builtin_suites() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def resolve_suite(spec: str) -> Suite:
    """A suite from a YAML path, a shipped suite name ('nudity-sd'), an I2P CSV ('i2p.csv[:sexual]'),
    or a generated toy-world suite 'toyworld:shape=circle[:anchor=shape=square][:also=shape=cross]...'
    (also: a concept erased alongside, left out of the 'other' group; repeatable)."""
    if spec in builtin_suites():
        return load_suite(BUILTIN_DIR / f"{spec}.yaml")
    if spec.endswith(".csv") or ".csv:" in spec:
        path, _, category = spec.partition(".csv")
        return load_i2p_csv(path + ".csv", category.lstrip(":") or None)
    if spec.startswith("toyworld:"):
        parts = spec.split(":")[1:]
        concept = Concept.parse(parts[0])
        anchor = None
        also = []
        for part in parts[1:]:
            key, _, value = part.partition("=")
            if key not in ("anchor", "also"):
                raise ErasekitError(f"bad suite spec {spec!r}: expected "
                                    "toyworld:attr=value[:anchor=attr=value][:also=attr=value]...")
            if key == "anchor":
                anchor = Concept.parse(value)
            else:
                also.append(Concept.parse(value))
        return toyworld_suite(concept, anchor, also=also)
    return load_suite(spec)
