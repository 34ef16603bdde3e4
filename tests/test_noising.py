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
