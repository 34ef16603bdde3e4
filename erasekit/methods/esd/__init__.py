"""ESD: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023)."""

from erasekit.registry import register_method

register_method("esd", __name__, "EsdConfig", "ESD: negative guidance as the teacher (variants x, u, x-strict)",
                needs=("unconditional-branch",), shared_steps=True)
