"""SDD: Towards Safe Self-Distillation of Internet-Scale Text-to-Image Diffusion Models (Kim et al. 2023)."""
