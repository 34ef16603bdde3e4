"""CLIP from a local directory: CLIP score (torchmetrics) and a zero-shot detector.

No CLIP weights ship with erasekit and none are downloaded: give a local copy (e.g. a
`openai/clip-vit-large-patch14` snapshot). A missing path is one clear error.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from erasekit.errors import ErasekitError


def load_clip(path: str | os.PathLike):
    """(CLIPModel, CLIPProcessor) from a local directory holding both."""
    from transformers import CLIPModel, CLIPProcessor

    path = Path(path)
    if not (path / "config.json").exists():
        raise ErasekitError(f"no CLIP model at {path}: pass a local directory with a CLIP model and processor")
    try:
        return CLIPModel.from_pretrained(path, local_files_only=True).eval(), CLIPProcessor.from_pretrained(
            path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ErasekitError(f"cannot load CLIP from {path}: {str(exc).splitlines()[0]}") from exc


class _FeatureTensors(torch.nn.Module):
    """transformers 5 returns output objects from get_*_features; torchmetrics 1.9 expects tensors."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return _tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return _tensor(self.model.get_text_features(*args, **kwargs))


def _tensor(features) -> torch.Tensor:
    return features if torch.is_tensor(features) else features.pooler_output


def clip_score(images: torch.Tensor, prompts: Sequence[str], path: str | os.PathLike) -> float:
    """torchmetrics' CLIP score, 100 · mean max(cos(image, text), 0), with the local CLIP at `path`."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    model, processor = load_clip(path)
    metric = CLIPScore(model_name_or_path=lambda: (_FeatureTensors(model), processor))
    with torch.no_grad():
        return float(metric((images.clamp(0, 1) * 255).round().to(torch.uint8), list(prompts)))


class ClipDetector:
    """Zero-shot: for each attribute, the value whose text ('a photo of a {value}') best matches the image."""

    name = "clip"

    def __init__(self, path: str | os.PathLike, labels: dict[str, Sequence[str]],
                 template: str = "a photo of a {}") -> None:
        self.model, self.processor = load_clip(path)
        self.template = template
        self.labels = {k: list(v) for k, v in labels.items()}
        with torch.no_grad():
            self.text = {}
            for attribute, values in self.labels.items():
                tokens = self.processor.tokenizer([template.format(v) for v in values], padding=True,
                                                  return_tensors="pt")
                feats = _tensor(self.model.get_text_features(**tokens))
                self.text[attribute] = torch.nn.functional.normalize(feats, dim=-1)

    @torch.no_grad()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        arrays = [(img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for img in images.cpu()]
        pixels = self.processor.image_processor(images=arrays, return_tensors="pt")["pixel_values"]
        feats = _tensor(self.model.get_image_features(pixel_values=pixels))
        return torch.nn.functional.normalize(feats, dim=-1)

    def settings(self) -> dict:
        return {"name": self.name, "reads": "zero-shot argmax over the label texts", "template": self.template,
                "labels": self.labels}

    def detect(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        feats = self.image_features(images)
        return {a: np.asarray(self.labels[a])[(feats @ t.T).argmax(-1).numpy()] for a, t in self.text.items()}
