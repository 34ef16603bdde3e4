"""Stable Diffusion 1.x and 2.x: one CLIP text encoder, a UNet with cross-attention (attn2), ε or v."""

from erasekit.core.families import Family, register_family

register_family(Family(
    name="sd",
    description="Stable Diffusion 1.x / 2.x (UNet, CLIP text encoder; ε- or v-prediction)",
    pipeline="StableDiffusionPipeline",
    class_names=("StableDiffusionPipeline",),
    components=("unet", "text_encoder"),
    native_resolution=512,
))
