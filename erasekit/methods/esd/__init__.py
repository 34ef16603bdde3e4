"""ESD: Erasing Concepts from Diffusion Models (Gandikota et al., ICCV 2023)."""
