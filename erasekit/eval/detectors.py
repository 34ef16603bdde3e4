"""Detectors: read concepts from images behind one interface."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class Detector(Protocol):
    name: str

    def detect(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """Per attribute, the detected value name of every image (N, 3, H, W) in [0, 1]."""
        ...


class ToyworldDetector:
    """The toy world's ground-truth classifier: every attribute of every image."""

    name = "toyworld-classifier"
    # FID/KID on the classifier's penultimate features: a stand-in for Inception, not comparable
    # to published FID.
    feature_network = "toyworld-classifier penultimate (128-d)"

    def __init__(self, classifier=None) -> None:
        from erasekit.toyworld.models import AttributeClassifier, classifier_path

        self.classifier = classifier or AttributeClassifier.load(classifier_path())

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.embed(images.float().cpu())

    @torch.no_grad()
    def detect(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        from erasekit.toyworld.domain import ATTRIBUTES

        pred = self.classifier.predict(images.float().cpu())
        return {name: np.asarray(ATTRIBUTES[name])[pred[name].numpy()] for name in pred}


DETECTORS = {"toyworld-classifier": ToyworldDetector}


def get_detector(name: str) -> Detector:
    from erasekit.errors import ErasekitError
    from erasekit.registry import suggest

    if name not in DETECTORS:
        raise ErasekitError(f"unknown detector {name!r}{suggest(name, DETECTORS)}")
    return DETECTORS[name]()
