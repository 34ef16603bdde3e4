import torch

from erasekit.core.sampler import DDIMSampler, StepHook, generate_images, guidance_term, guided_eps


def test_same_seed_same_images(tiny_model):
    a = generate_images(tiny_model, ["a red circle", "a blue box"], [3, 4], steps=3, progress=False)
    b = generate_images(tiny_model, ["a red circle", "a blue box"], [3, 4], steps=3, progress=False)
    c = generate_images(tiny_model, ["a red circle", "a blue box"], [5, 4], steps=3, progress=False)
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], c[0])
    assert torch.equal(a[1], c[1])  # batch composition does not change an image


def test_cfg_composition():
    u, c = torch.zeros(2), torch.ones(2)
    assert torch.equal(guided_eps(u, c, 7.5), torch.full((2,), 7.5))
    assert torch.equal(guidance_term(u, c), c)


def test_trajectory_and_stop_at(tiny_model):
    sampler = DDIMSampler(tiny_model, steps=4, guidance=3.0)
    cond = tiny_model.encode(["a red circle"])
    uncond = tiny_model.encode([""])
    x_T = tiny_model.initial_noise([0])
    with torch.no_grad():
        full = sampler.sample(x_T, cond, uncond, return_trajectory=True)
        part = sampler.sample(x_T, cond, uncond, stop_at=2)
    assert len(full.trajectory) == 5 and torch.equal(full.trajectory[0], x_T)
    assert torch.equal(full.trajectory[-1], full.latents)
    torch.testing.assert_close(part.latents, full.trajectory[2])
    assert part.timesteps == full.timesteps[:2]


class _ZeroEps(StepHook):
    def __init__(self):
        self.seen = []

    def on_eps(self, ctx):
        self.seen.append(int(ctx.timestep))
        ctx.eps = torch.zeros_like(ctx.eps)


def test_hooks_read_and_replace_eps(tiny_model):
    sampler = DDIMSampler(tiny_model, steps=3, guidance=7.5)
    cond, uncond = tiny_model.encode(["a red circle"]), tiny_model.encode([""])
    x_T = tiny_model.initial_noise([1])
    hook = _ZeroEps()
    with torch.no_grad():
        out = sampler.sample(x_T, cond, uncond, hooks=[hook])
    assert hook.seen == out.timesteps
    # With ε ≡ 0 DDIM only rescales: x_0 = x_T · sqrt(ᾱ_0 / ᾱ_T) along the way.
    a = tiny_model.scheduler.alphas_cumprod
    ratio = 1.0
    ts = out.timesteps
    for i, t in enumerate(ts):
        prev = ts[i + 1] if i + 1 < len(ts) else None
        a_prev = a[prev] if prev is not None else tiny_model.scheduler.final_alpha_cumprod
        ratio *= float((a_prev / a[t]).sqrt())
    torch.testing.assert_close(out.latents, x_T * ratio, atol=1e-5, rtol=1e-4)


def _inversion_error(model, steps):
    sampler = DDIMSampler(model, steps=steps, guidance=1.0)
    cond = model.encode(["a red circle"])
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    with torch.no_grad():
        x_T = sampler.invert(x0, cond).latents
        back = sampler.sample(x_T, cond, cond).latents
    return float((back - x0).norm() / x0.norm()), float((x_T - x0).norm() / x0.norm())


def test_ddim_inversion_converges_with_steps(tiny_model, monkeypatch):
    # A random UNet is far from smooth in x, so the inversion's ε(x_{t-1}) ≈ ε(x_t) assumption
    # breaks; a smooth ε isolates the scheduler arithmetic. Measured: 0.18 / 0.049 / 0.013
    # relative error at 10 / 50 / 200 steps (first order in the step size).
    def smooth_eps(x, t, cond, weights=None):
        return (0.5 * torch.tanh(x)).expand(cond.shape[0], *x.shape)

    monkeypatch.setattr(tiny_model, "eps", smooth_eps)
    errors = [_inversion_error(tiny_model, n)[0] for n in (10, 50, 200)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02, errors


def test_partial_inversion_meets_sampling_at_the_same_timestep(tiny_model, monkeypatch):
    def smooth_eps(x, t, cond, weights=None):
        return (0.5 * torch.tanh(x)).expand(cond.shape[0], *x.shape)

    monkeypatch.setattr(tiny_model, "eps", smooth_eps)
    sampler = DDIMSampler(tiny_model, steps=200, guidance=1.0)
    cond = tiny_model.encode(["a red circle"])
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    with torch.no_grad():
        half = sampler.invert(x0, cond, stop_at=100)
        back = sampler.sample(half.latents, cond, cond, start_at=100)
        full = sampler.invert(x0, cond)
    assert half.timesteps[-1] == back.timesteps[0] == sampler.timesteps()[100]
    assert half.timesteps == full.timesteps[:100]
    assert float((back.latents - x0).norm() / x0.norm()) < 0.02
    assert float((half.latents - x0).norm()) < float((full.latents - x0).norm())


def test_ddim_inversion_on_toyworld():
    # A trained denoiser on its own data is smooth enough for 50-step inversion. Measured on
    # latents of rendered toy images: 0.086 / 0.038 / 0.020 relative error at 20 / 50 / 100 steps.
    import pytest

    from erasekit.core.model import DiffusionModel
    from erasekit.core.sources import toyworld_dir
    from erasekit.toyworld import domain

    if not (toyworld_dir() / "model_index.json").exists():
        pytest.skip("toy-world model not present")
    model = DiffusionModel.load("toyworld", device="cpu")
    images, captions, _ = domain.sample_dataset(4, seed=5)
    x0 = model.encode_images(torch.from_numpy(images))
    sampler = DDIMSampler(model, steps=50, guidance=1.0)
    cond = model.encode(captions)
    with torch.no_grad():
        x_T = sampler.invert(x0, cond).latents
        back = sampler.sample(x_T, cond, cond).latents
    assert float((x_T - x0).norm() / x0.norm()) > 0.5
    assert float((back - x0).norm() / x0.norm()) < 0.1


def test_cached_images_are_the_same_tensor_whether_drawn_or_read_back(tiny_model, tmp_path):
    """A run must not depend on a warm cache: drawn and cached images match bitwise, in layout, and
    through the VAE (a channels-last tensor encodes to last-bit different latents)."""
    from erasekit.core.data import SamplingSettings, cached_images

    settings = SamplingSettings(seeds=[0, 1], steps=2, guidance=7.5)
    drawn = cached_images(tiny_model, ["a red circle", "a blue square"], settings, tmp_path, progress=False)
    read = cached_images(tiny_model, ["a red circle", "a blue square"], settings, tmp_path, progress=False)
    assert torch.equal(drawn, read) and drawn.stride() == read.stride()
    assert torch.equal(tiny_model.encode_images(drawn), tiny_model.encode_images(read))
