"""The forward process and the training target follow the scheduler's prediction type."""

import pytest
import torch
from diffusers import DDIMScheduler

from erasekit.core.noising import min_snr_weight, noised, training_target


def scheduler(kind: str) -> DDIMScheduler:
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type=kind)


def test_v_target_equals_the_hand_computed_velocity():
    x0 = torch.tensor([[[[1.0, -2.0]]]])
    noise = torch.tensor([[[[0.5, 3.0]]]])
    t = torch.tensor([600])
    a = scheduler("v_prediction").alphas_cumprod[600]
    x_t, target = noised(scheduler("v_prediction"), x0, noise, t)
    assert torch.allclose(x_t, a.sqrt() * x0 + (1 - a).sqrt() * noise)
    assert torch.allclose(target, a.sqrt() * noise - (1 - a).sqrt() * x0)
    assert torch.equal(training_target(scheduler("epsilon"), x0, noise, t), noise)
    assert torch.equal(training_target(scheduler("sample"), x0, noise, t), x0)


def test_noise_target_loss_is_zero_at_v_on_a_v_model_and_not_at_eps():
    from erasekit.methods.ca.method import ca_loss

    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    t = torch.tensor([100, 900])
    _, target = noised(scheduler("v_prediction"), x0, noise, t)
    assert ca_loss(target, None, target).item() == 0.0
    assert ca_loss(noise, None, target).item() > 0.1


def test_min_snr_weight_per_prediction_type():
    t = torch.tensor([10, 500, 990])
    eps, v = scheduler("epsilon"), scheduler("v_prediction")
    a = eps.alphas_cumprod[t]
    snr = a / (1 - a)
    assert torch.allclose(min_snr_weight(eps, t, 5.0), torch.clamp(snr, max=5.0) / snr)
    assert torch.allclose(min_snr_weight(v, t, 5.0), torch.clamp(snr, max=5.0) / (snr + 1))


def test_unknown_prediction_type_is_a_clear_error():
    from erasekit.errors import ErasekitError

    s = scheduler("epsilon")
    s.register_to_config(prediction_type="flow")
    with pytest.raises(ErasekitError, match="prediction_type 'flow'"):
        training_target(s, torch.zeros(1), torch.zeros(1), torch.tensor([1]))


def test_flow_matching_noises_linearly_and_targets_the_velocity():
    from diffusers import FlowMatchEulerDiscreteScheduler

    from erasekit.core.noising import is_flow_matching, noised

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    assert is_flow_matching(scheduler) and not is_flow_matching(DDIMScheduler())
    x0, noise = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    x_t, target = noised(scheduler, x0, noise, torch.tensor([250, 1000]))
    torch.testing.assert_close(x_t[0], 0.75 * x0[0] + 0.25 * noise[0])
    torch.testing.assert_close(x_t[1], noise[1])  # σ = 1: pure noise
    torch.testing.assert_close(target, noise - x0)
    # the velocity carries x_t to x_0 at σ = 0: x_0 = x_t − σ·v
    torch.testing.assert_close(x_t[0] - 0.25 * target[0], x0[0])
