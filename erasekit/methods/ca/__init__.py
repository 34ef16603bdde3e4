"""Ablating Concepts in Text-to-Image Diffusion Models (Kumari et al., ICCV 2023)."""

from erasekit.registry import register_method

register_method("ca", __name__, "CaConfig",
                "Ablating Concepts: map the target prompt onto an anchor concept's images", needs_anchor=True,
                check="check_request", shared_steps=True)
