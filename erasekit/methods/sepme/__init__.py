"""SepME: Separable Multi-Concept Erasure from Diffusion Models (Zhao et al.)."""

from erasekit.registry import register_method

register_method("sepme", __name__, "SepmeConfig",
                "SepME: one null-space increment per concept, restorable one by one", multi_patch=True)
