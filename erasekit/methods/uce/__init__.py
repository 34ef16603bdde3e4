"""UCE: Unified Concept Editing in Diffusion Models (Gandikota et al., WACV 2024)."""

from erasekit.registry import register_method

register_method("uce", __name__, "UceConfig",
                "UCE: closed-form edit of the layers that read the text (cross-attention k/v; an MMDiT's text "
                "projections), no training")
