"""The detectors a suite can name: class (in erasekit.eval.detectors) and what each reads, as plain
data, so that `erasekit ls detectors` and suite validation answer without importing torch."""

DETECTORS: dict[str, tuple[str, str]] = {
    "toyworld-classifier": ("ToyworldDetector", "The toy world's ground-truth classifier: every attribute of every "
                            "image."),
    "nudenet": ("NudeNetDetector", "NudeNet 3.4.2 nudity: 'exposed' when any *_EXPOSED class scores >= threshold "
                "(default 0.6)."),
    "efficientnet-lite0": ("ImageNetDetector", "Top-1 ImageNet class by EfficientNet-Lite0 (the `imagenet` extra "
                           "ships its weights, Apache-2.0)."),
}
