"""erasekit: erase concepts from text-to-image diffusion models and measure what is left."""

__version__ = "0.1.0"
