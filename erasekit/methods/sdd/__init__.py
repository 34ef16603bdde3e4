"""SDD: Towards Safe Self-Distillation of Internet-Scale Text-to-Image Diffusion Models (Kim et al. 2023)."""

from erasekit.registry import register_method

register_method("sdd", __name__, "SddConfig", "SDD: self-distil ε(c) onto the model's own ε(∅), keep the EMA teacher",
                needs=("unconditional-branch",), shared_steps=True)
