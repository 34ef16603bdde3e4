"""Evaluation: metrics, detectors, prompt sets, result documents."""
