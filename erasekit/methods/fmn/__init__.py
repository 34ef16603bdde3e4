"""Forget-Me-Not: attention re-steering (Zhang et al. 2023)."""

from erasekit.registry import register_method

register_method("fmn", __name__, "FmnConfig", "Forget-Me-Not: minimise cross-attention on the concept's tokens",
                needs=("text-attention-map",), shared_steps=True)
