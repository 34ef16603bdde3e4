"""SepME: Separable Multi-Concept Erasure from Diffusion Models (Zhao et al.)."""
