"""Ablating Concepts in Text-to-Image Diffusion Models (Kumari et al., ICCV 2023)."""
