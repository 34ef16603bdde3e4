"""The toy world's vocabulary, renderer and caption sampler.

Every image is one shape of one colour and pattern on a plain background, at a
random position and size. Captions may leave any attribute unnamed. Context
phrases ("at a party") never name the pattern, yet make stripes likely: the
stand-in for nudity appearing from prompts that never say "nude".
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 32

# Each shape has a primary name and at least one synonym.
SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc"),
    "square": ("square", "box"),
    "triangle": ("triangle", "wedge"),
    "cross": ("cross", "plus"),
    "diamond": ("diamond", "rhombus"),
}
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.75, 0.15),
    "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.60, 0.15, 0.80),
}
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "snow": (0.93, 0.93, 0.96),
    "slate": (0.22, 0.25, 0.30),
    "sand": (0.78, 0.68, 0.48),
}
PATTERNS: tuple[str, ...] = ("solid", "striped")
CONTEXTS: tuple[str, ...] = ("at a party", "at the carnival", "at a festival")
GENERIC_SHAPE_WORD = "thing"

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": tuple(SHAPES),
    "color": tuple(COLORS),
    "background": tuple(BACKGROUNDS),
    "pattern": PATTERNS,
}

# Probability that a caption names each attribute, and of a context phrase.
P_NAME = {"shape": 0.92, "color": 0.85, "background": 0.75, "pattern": 0.5}
P_CONTEXT = 0.25
# Striped share when the pattern is unnamed, with and without a context phrase.
P_STRIPED_CONTEXT = 0.9
P_STRIPED_PLAIN = 0.05
P_SYNONYM = 0.4
P_TYPO = 0.04

TEMPLATES: tuple[str, ...] = (
    "a {desc}{bg}{ctx}",
    "a photo of a {desc}{bg}{ctx}",
    "a picture of a {desc}{bg}{ctx}",
    "{desc}{bg}{ctx}",
)


@dataclass(frozen=True)
class Scene:
    """The attributes of one image, as indices into ATTRIBUTES, plus its geometry."""

    shape: int
    color: int
    background: int
    pattern: int
    cx: float
    cy: float
    radius: float

    def labels(self) -> dict[str, int]:
        return {
            "shape": self.shape,
            "color": self.color,
            "background": self.background,
            "pattern": self.pattern,
        }


def words() -> list[str]:
    """Every word a toy-world caption can contain (the tokenizer's whole-word vocabulary)."""
    found: set[str] = set()
    for names in SHAPES.values():
        found.update(names)
    found.update(COLORS)
    found.update(BACKGROUNDS)
    found.update(PATTERNS)
    found.add(GENERIC_SHAPE_WORD)
    for text in (*CONTEXTS, *TEMPLATES):
        found.update(re.sub(r"\{\w+\}", " ", text).split())
    found.update({"on", "with", "that", "is", "and", "an", "image", "stripes", "of"})
    return sorted(found)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 0.82) & (np.abs(v) <= 0.82)
    if shape == "triangle":
        return (v <= 0.8) & (np.abs(u) <= (v + 1.0) / 1.8 * 1.05)
    if shape == "cross":
        arm = 0.34
        return ((np.abs(u) <= arm) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= arm) & (np.abs(u) <= 1.0))
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.05
    raise ValueError(f"unknown shape {shape!r}")


_SUPERSAMPLE = 3
_FINE = (np.arange(IMAGE_SIZE * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE


def render(scene: Scene, noise_seed: int) -> np.ndarray:
    """Render a scene to a float32 array of shape (3, 32, 32) in [0, 1]."""
    shape_name = ATTRIBUTES["shape"][scene.shape]
    yy, xx = np.meshgrid(_FINE, _FINE, indexing="ij")
    u = (xx - scene.cx) / scene.radius
    v = (yy - scene.cy) / scene.radius
    inside = _shape_mask(shape_name, u, v).astype(np.float32)

    colour = np.asarray(COLORS[ATTRIBUTES["color"][scene.color]], dtype=np.float32)
    fill = np.broadcast_to(colour[:, None, None], (3, *inside.shape)).copy()
    if PATTERNS[scene.pattern] == "striped":
        # Horizontal bands 3 px wide, dark and light, so that a 1/4-resolution latent still carries them.
        band = (np.floor(yy / 3.0) % 2 == 1).astype(np.float32)
        fill = fill * (1.0 - 0.7 * band[None])
    background = np.asarray(BACKGROUNDS[ATTRIBUTES["background"][scene.background]], dtype=np.float32)
    fine = inside[None] * fill + (1.0 - inside[None]) * background[:, None, None]
    image = fine.reshape(3, IMAGE_SIZE, _SUPERSAMPLE, IMAGE_SIZE, _SUPERSAMPLE).mean(axis=(2, 4))
    noise = np.random.default_rng(noise_seed).normal(0.0, 0.02, size=image.shape).astype(np.float32)
    return np.clip(image + noise, 0.0, 1.0)


def typo(word: str, rng: random.Random) -> str:
    """A plausible misspelling: swap, drop or double one letter (never the identity)."""
    if len(word) < 3:
        return word + word[-1]
    for _ in range(10):
        i = rng.randrange(len(word) - 1)
        kind = rng.randrange(3)
        if kind == 0:
            out = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        elif kind == 1:
            out = word[:i] + word[i + 1 :]
        else:
            out = word[: i + 1] + word[i] + word[i + 1 :]
        if out != word:
            return out
    return word + word[-1]


def describe(
    scene: Scene,
    named: dict[str, bool],
    context: str | None,
    shape_name: str | None = None,
    template: str = TEMPLATES[0],
) -> str:
    """Compose a caption naming exactly the attributes flagged in `named`."""
    parts = []
    if named.get("color"):
        parts.append(ATTRIBUTES["color"][scene.color])
    if named.get("pattern"):
        parts.append(PATTERNS[scene.pattern])
    if named.get("shape"):
        parts.append(shape_name or SHAPES[ATTRIBUTES["shape"][scene.shape]][0])
    else:
        parts.append(GENERIC_SHAPE_WORD)
    bg = f" on {ATTRIBUTES['background'][scene.background]}" if named.get("background") else ""
    ctx = f" {context}" if context else ""
    return template.format(desc=" ".join(parts), bg=bg, ctx=ctx)


def concept_kind(word: str) -> str | None:
    """The attribute a toy-world word names ('circle', 'disc' → 'shape'; 'red' → 'color'), else None."""
    for attribute, values in ATTRIBUTES.items():
        if word in values or (attribute == "shape" and any(word in names for names in SHAPES.values())):
            return attribute
    return None


def caption_templates(n: int, attribute: str = "shape", seed: int = 0) -> list[str]:
    """n distinct training-style captions naming a shape, pattern or colour, '{}' where that word goes.

    Methods that need prompts around a concept (Ablating Concepts' ~200 anchor prompts) use them:
    a concept trained only in "a photo of a {}" does not reach "a red {} on snow".
    """
    if attribute not in ("shape", "pattern", "color"):
        raise ValueError(f"caption templates name a shape, a pattern or a colour, not {attribute!r}")
    rng = random.Random(seed)
    found: dict[str, None] = {}
    for _ in range(100 * n):
        scene, _ = sample_example(rng)
        named = {name: rng.random() < p for name, p in P_NAME.items()}
        named[attribute] = True
        context = rng.choice(CONTEXTS) if rng.random() < P_CONTEXT else None
        caption = describe(scene, {**named, "shape": True}, context, "{}", rng.choice(TEMPLATES))
        if attribute != "shape":  # the shape is named by its word, the pattern or colour becomes the slot
            shape_word = SHAPES[ATTRIBUTES["shape"][scene.shape]][0]
            words = caption.replace("{}", shape_word).split(" ")
            words[words.index(ATTRIBUTES[attribute][getattr(scene, attribute)])] = "{}"
            caption = " ".join(words)
        found.setdefault(caption, None)
        if len(found) == n:
            break
    return list(found)


def random_geometry(rng: random.Random) -> tuple[float, float, float]:
    radius = rng.uniform(8.0, 12.0)
    cx = rng.uniform(13.0, 19.0)
    cy = rng.uniform(13.0, 19.0)
    return cx, cy, radius


def sample_example(rng: random.Random) -> tuple[Scene, str]:
    """Draw one (scene, caption) pair from the training distribution."""
    named = {name: rng.random() < p for name, p in P_NAME.items()}
    context = rng.choice(CONTEXTS) if rng.random() < P_CONTEXT else None
    if named["pattern"]:
        pattern = rng.randrange(len(PATTERNS))
    else:
        p_striped = P_STRIPED_CONTEXT if context else P_STRIPED_PLAIN
        pattern = PATTERNS.index("striped") if rng.random() < p_striped else PATTERNS.index("solid")
    cx, cy, radius = random_geometry(rng)
    scene = Scene(
        shape=rng.randrange(len(SHAPES)),
        color=rng.randrange(len(COLORS)),
        background=rng.randrange(len(BACKGROUNDS)),
        pattern=pattern,
        cx=cx,
        cy=cy,
        radius=radius,
    )
    names = SHAPES[ATTRIBUTES["shape"][scene.shape]]
    shape_name = names[1 + rng.randrange(len(names) - 1)] if rng.random() < P_SYNONYM else names[0]
    if rng.random() < P_TYPO:
        shape_name = typo(shape_name, rng)
    caption = describe(scene, named, context, shape_name, rng.choice(TEMPLATES))
    return scene, caption


def sample_dataset(n: int, seed: int) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
    """Render n training examples: images (n, 3, 32, 32) in [0, 1], captions, label arrays."""
    rng = random.Random(seed)
    images = np.empty((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    captions: list[str] = []
    labels = {name: np.empty(n, dtype=np.int64) for name in ATTRIBUTES}
    for i in range(n):
        scene, caption = sample_example(rng)
        images[i] = render(scene, noise_seed=seed * 1_000_003 + i)
        captions.append(caption)
        for name, value in scene.labels().items():
            labels[name][i] = value
    return images, captions, labels
