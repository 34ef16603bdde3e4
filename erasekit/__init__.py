"""erasekit: erase concepts from text-to-image diffusion models and measure what is left."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # erasekit.apply / erasekit.remove on a user's own pipeline; imported on first use, so that
    # `import erasekit` (the CLI's first step) stays free of torch and diffusers.
    if name in ("apply", "remove"):
        from erasekit import api

        return getattr(api, name)
    raise AttributeError(f"module 'erasekit' has no attribute {name!r}")
