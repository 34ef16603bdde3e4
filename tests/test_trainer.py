import pytest
import torch

from erasekit.core.trainer import Trainer, TrainerConfig, TrainingDiverged


def _problem(seed=0):
    torch.manual_seed(999)
    target = torch.nn.Linear(4, 1)  # the task is the same whatever the init seed
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def loss_fn(step, gen):
        x = torch.randn(16, 4, generator=gen)
        return (model(x) - target(x).detach()).pow(2).mean()

    return model, loss_fn


def _params(model):
    return {n: p for n, p in model.named_parameters()}


def test_training_reduces_loss():
    model, loss_fn = _problem()
    state = Trainer(_params(model), TrainerConfig(steps=200, lr=1e-2, progress=False)).fit(loss_fn)
    assert sum(state.losses[-20:]) < 0.2 * sum(state.losses[:20])


def test_nan_loss_aborts_and_keeps_last_good_weights():
    model, loss_fn = _problem()

    def poisoned(step, gen):
        loss = loss_fn(step, gen)
        return loss * float("nan") if step == 5 else loss

    trainer = Trainer(_params(model), TrainerConfig(steps=10, lr=1e-2, progress=False))
    with pytest.raises(TrainingDiverged, match="step 5"):
        trainer.fit(poisoned)
    assert trainer.step == 5
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    cfg = dict(steps=30, lr=1e-2, checkpoint_every=10, warmup_steps=5, ema_decay=0.9, progress=False)
    model, loss_fn = _problem()
    Trainer(_params(model), TrainerConfig(**cfg), checkpoint_dir=tmp_path / "full").fit(loss_fn)
    reference = {n: p.detach().clone() for n, p in model.named_parameters()}

    class Killed(Exception):
        pass

    model, loss_fn = _problem()

    def dies_at_17(step, gen):
        if step == 17:
            raise Killed
        return loss_fn(step, gen)

    with pytest.raises(Killed):
        Trainer(_params(model), TrainerConfig(**cfg), checkpoint_dir=tmp_path / "cut").fit(dies_at_17)
    fresh, loss_fn = _problem(seed=123)  # different init: everything must come from the checkpoint
    state = Trainer(_params(fresh), TrainerConfig(**cfg), checkpoint_dir=tmp_path / "cut").fit(loss_fn)
    assert state.step == 30
    for n, p in fresh.named_parameters():
        assert torch.equal(p.detach(), reference[n]), n


def test_an_unreadable_checkpoint_is_dropped_and_training_starts_afresh(tmp_path):
    from erasekit.core.trainer import CHECKPOINT_NAME

    cfg = dict(steps=12, lr=1e-2, checkpoint_every=5, progress=False)
    model, loss_fn = _problem()
    Trainer(_params(model), TrainerConfig(**cfg), checkpoint_dir=tmp_path / "a").fit(loss_fn)
    reference = {n: p.detach().clone() for n, p in model.named_parameters()}
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / CHECKPOINT_NAME).write_bytes(b"truncated")
    model, loss_fn = _problem()
    state = Trainer(_params(model), TrainerConfig(**cfg), checkpoint_dir=tmp_path / "b").fit(loss_fn)
    assert state.step == 12 and len(state.losses) == 12
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), reference[n]), n


def test_callback_can_stop_early():
    model, loss_fn = _problem()
    cfg = TrainerConfig(steps=100, lr=1e-2, callback_every=10, progress=False)
    state = Trainer(_params(model), cfg, callback=lambda step, tr: step >= 30).fit(loss_fn)
    assert state.stopped_early and state.step == 30


@pytest.mark.parametrize("bad", [dict(steps=-1), dict(steps=1, lr=float("nan")), dict(steps=1, ema_decay=1.5)])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        TrainerConfig(**bad)


def test_accelerate_two_processes_give_the_one_process_patch(tiny_dir, tmp_path):
    """`accelerate launch --num_processes 2 -m erasekit erase`: both processes draw the same batch and
    train on their halves, gradients are averaged, one process writes the patch, and the patch equals
    the one-process run with the same (global) batch to float tolerance; a batch that does not split
    is one clear error."""
    import os
    import subprocess
    import sys

    from erasekit.core.patch import Patch

    settings = ["steps=3", "sampling_steps=3", "t_warmup=0", "pool_size=2", "lr=1e-3", "batch_size=2"]
    erase = ["erase", "--model", str(tiny_dir), "--method", "abo", "--concept", "circle", "--anchor", "square",
             *[x for s in settings for x in ("--set", s)]]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "-m",
              "erasekit"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for name, prefix in (("one", [sys.executable, "-m", "erasekit"]), ("two", launch)):
        out = tmp_path / f"{name}.safetensors"
        done = subprocess.run([*prefix, *erase, "--out", str(out)], capture_output=True, text=True, env=env,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.count("patch written to") == 1
        runs[name] = Patch.load(out)
    one, two = runs["one"], runs["two"]
    assert "data_parallel" not in one.info
    assert two.info["data_parallel"] == {"processes": 2, "examples_per_step": 2}
    assert one.deltas.keys() == two.deltas.keys()
    # Tolerance: float reduction order (one batch of 2 against two halves averaged), which Adam's
    # per-element normalisation magnifies where a gradient is near zero: 0.1 % of the patch's norm.
    diff = sum(float((two.deltas[n] - one.deltas[n]).pow(2).sum()) for n in one.deltas) ** 0.5
    norm = sum(float(d.pow(2).sum()) for d in one.deltas.values()) ** 0.5
    assert norm > 0 and diff <= 1e-3 * norm, (diff, norm)
    odd = subprocess.run([*launch, *erase, "--set", "batch_size=3", "--out", str(tmp_path / "q.safetensors")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert odd.returncode != 0 and "does not split over 2 processes" in odd.stderr
    assert not (tmp_path / "q.safetensors").exists()
