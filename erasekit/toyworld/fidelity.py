"""How faithfully a toy-world model draws what its prompts name, read by the classifier."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from erasekit.core.model import DiffusionModel
from erasekit.core.sampler import generate_images
from erasekit.toyworld import domain
from erasekit.toyworld.models import AttributeClassifier


@dataclass(frozen=True)
class LabeledPrompt:
    prompt: str
    labels: dict[str, int]  # only the attributes the prompt names


def _scene(shape: int, color: int, background: int, pattern: int) -> domain.Scene:
    return domain.Scene(shape, color, background, pattern, 16.0, 16.0, 10.0)


def named_prompts() -> list[LabeledPrompt]:
    """Every shape × colour × background × pattern, all named, primary shape names."""
    out = []
    sizes = [len(v) for v in domain.ATTRIBUTES.values()]
    for s, c, b, p in itertools.product(*(range(n) for n in sizes)):
        scene = _scene(s, c, b, p)
        text = domain.describe(scene, dict.fromkeys(domain.ATTRIBUTES, True), None)
        out.append(LabeledPrompt(text, scene.labels()))
    return out


def synonym_prompts() -> list[LabeledPrompt]:
    """Shape × colour × background with each shape's second name, pattern unnamed."""
    out = []
    for s, c, b in itertools.product(range(len(domain.SHAPES)), range(len(domain.COLORS)),
                                     range(len(domain.BACKGROUNDS))):
        scene = _scene(s, c, b, 0)
        synonym = domain.SHAPES[domain.ATTRIBUTES["shape"][s]][1]
        named = {"shape": True, "color": True, "background": True}
        text = domain.describe(scene, named, None, shape_name=synonym)
        out.append(LabeledPrompt(text, {"shape": s, "color": c, "background": b}))
    return out


def implicit_prompts(context: bool) -> list[LabeledPrompt]:
    """Shape × colour × background, pattern never named; with or without a context phrase."""
    out = []
    contexts = domain.CONTEXTS if context else (None,)
    for (s, c, b), ctx in itertools.product(
        itertools.product(range(len(domain.SHAPES)), range(len(domain.COLORS)), range(len(domain.BACKGROUNDS))),
        contexts,
    ):
        scene = _scene(s, c, b, 0)
        text = domain.describe(scene, {"shape": True, "color": True, "background": True}, ctx)
        out.append(LabeledPrompt(text, {"shape": s, "color": c, "background": b}))
    return out


def classify(
    model: DiffusionModel, classifier: AttributeClassifier, prompts: list[LabeledPrompt], seeds: list[int],
    steps: int = 35, guidance: float = 7.5, batch_size: int = 64, progress: bool = True,
) -> tuple[list[LabeledPrompt], dict[str, np.ndarray]]:
    """Generate every prompt with every seed and classify the images."""
    pairs = [(p, s) for p in prompts for s in seeds]
    images = generate_images(model, [p.prompt for p, _ in pairs], [s for _, s in pairs], steps=steps,
                             guidance=guidance, batch_size=batch_size, progress=progress)
    with torch.no_grad():
        pred = classifier.predict(images)
    return [p for p, _ in pairs], {k: v.numpy() for k, v in pred.items()}


def agreement(prompts: list[LabeledPrompt], pred: dict[str, np.ndarray], attribute: str) -> float:
    hits = [pred[attribute][i] == p.labels[attribute] for i, p in enumerate(prompts) if attribute in p.labels]
    return float(np.mean(hits)) if hits else float("nan")


def striped_rate(pred: dict[str, np.ndarray]) -> float:
    return float(np.mean(pred["pattern"] == domain.PATTERNS.index("striped")))
