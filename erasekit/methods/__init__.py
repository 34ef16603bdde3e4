"""Erasure methods: one package each (config.py + method.py), registered on import."""
