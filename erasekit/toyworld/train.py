"""Reproduce the toy world's weights from scratch: classifier, VAE, then text encoder + UNet.

Each stage is seeded, checkpoints to safetensors under a work directory and
resumes where it stopped; finished stages are skipped. The UNet stage exports
its EMA weights as a plain diffusers pipeline directory every `export_every`
steps, so intermediate weights can be committed and training resumed from them.
With `arch="mmdit"` the last stage trains an SD3-architecture world instead: two
CLIP encoders with projection and an SD3Transformer2DModel by flow matching,
exported as a StableDiffusion3Pipeline directory.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file
from transformers import CLIPTokenizer

from erasekit.core import files
from erasekit.core.noising import min_snr_weight, noised
from erasekit.core.trainer import Trainer, TrainerConfig
from erasekit.toyworld import domain
from erasekit.toyworld.models import (
    TEXT_DIM,
    AttributeClassifier,
    build_scheduler,
    build_text_encoder,
    build_unet,
    build_vae,
)
from erasekit.toyworld.tokenizer import save_tokenizer

log = logging.getLogger(__name__)

CLASSIFIER_FILE = "classifier.safetensors"


@dataclass
class ToyTrainConfig:
    seed: int = 0
    n_classifier: int = 20_000
    classifier_steps: int = 1500
    n_vae: int = 20_000
    vae_steps: int = 2500
    n_unet: int = 60_000
    unet_steps: int = 4_000  # the shipped weights: EMA at this step (export_every divides it)
    unet_batch: int = 64
    unet_lr: float = 5e-4
    ema_decay: float = 0.9995
    cond_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    export_every: int = 1000
    checkpoint_every: int = 250
    # Width of the text encoder and of the UNet's cross-attention inputs; the shipped world uses 128.
    text_dim: int = TEXT_DIM
    # What the UNet predicts: "epsilon" (SD 1.x, the shipped worlds) or "v_prediction" (SD 2.x 768).
    prediction_type: str = "epsilon"
    # The denoiser: "unet" (SD 1.x / 2.x) or "mmdit" (SD3: its own text width, MMDIT_TEXT_DIM per encoder).
    arch: str = "unet"


def _images_to_model(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(images) * 2.0 - 1.0


def _record(out_dir: Path, stage: str, seconds: float, **extra: object) -> None:
    """Accumulate wall time and facts per stage in training.json (resumed runs add up)."""
    path = out_dir / "training.json"
    record = json.loads(path.read_text()) if path.exists() else {"stages": {}}
    entry = record["stages"].setdefault(stage, {"seconds": 0.0})
    entry["seconds"] = round(entry["seconds"] + seconds, 1)
    entry.update(extra)
    record["threads"] = torch.get_num_threads()
    files.write_json(path, record)


def _record_encode(out_dir: Path, **options: object) -> None:
    """The pipeline-call options the model's prompts are encoded with (erasekit.core.model reads them)."""
    path = out_dir / "training.json"
    record = json.loads(path.read_text()) if path.exists() else {"stages": {}}
    record["encode"] = options
    files.write_json(path, record)


# ---------------------------------------------------------------- classifier
def train_classifier(cfg: ToyTrainConfig, out_path: Path, work: Path, record_dir: Path) -> AttributeClassifier:
    if out_path.exists():
        return AttributeClassifier.load(out_path)
    start = time.time()
    images, _, labels = domain.sample_dataset(cfg.n_classifier, seed=cfg.seed + 101)
    x = torch.from_numpy(images)
    y = {k: torch.from_numpy(v) for k, v in labels.items()}
    model = AttributeClassifier()
    params = {n: p for n, p in model.named_parameters()}

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(x), (128,), generator=gen)
        batch = x[idx]
        # Blur and noise so the classifier also reads VAE reconstructions and generated images.
        if step % 2:
            batch = F.avg_pool2d(F.pad(batch, (1, 1, 1, 1), mode="replicate"), 3, stride=1) * 0.5 + batch * 0.5
        batch = batch + 0.05 * torch.randn(batch.shape, generator=gen)
        logits = model(batch)
        return sum(F.cross_entropy(logits[k], y[k][idx]) for k in logits)

    trainer = Trainer(
        params,
        TrainerConfig(steps=cfg.classifier_steps, lr=2e-3, weight_decay=1e-4, warmup_steps=100,
                      checkpoint_every=cfg.checkpoint_every, seed=cfg.seed, description="classifier"),
        checkpoint_dir=work / "classifier",
    )
    trainer.fit(loss_fn)
    model.eval()
    model.save(out_path)
    _record(record_dir, "classifier", time.time() - start, steps=cfg.classifier_steps)
    return model


# ----------------------------------------------------------------------- VAE
def train_vae(cfg: ToyTrainConfig, out_dir: Path, work: Path) -> None:
    if (out_dir / "vae" / "config.json").exists():
        return
    start = time.time()
    images, _, _ = domain.sample_dataset(cfg.n_vae, seed=cfg.seed + 202)
    x = _images_to_model(images)
    vae = build_vae()
    params = {n: p for n, p in vae.named_parameters()}

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        batch = x[torch.randint(0, len(x), (32,), generator=gen)]
        posterior = vae.encode(batch).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        kl = posterior.kl().mean() / z[0].numel()
        return F.mse_loss(recon, batch) + 0.1 * F.l1_loss(recon, batch) + 1e-4 * kl

    trainer = Trainer(
        params,
        TrainerConfig(steps=cfg.vae_steps, lr=1e-3, warmup_steps=200, checkpoint_every=cfg.checkpoint_every,
                      seed=cfg.seed, description="vae"),
        checkpoint_dir=work / "vae",
    )
    trainer.fit(loss_fn)
    vae.eval()
    with torch.no_grad():
        sample = x[:4000]
        z = torch.cat([vae.encode(sample[i : i + 500]).latent_dist.sample() for i in range(0, len(sample), 500)])
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    _save_component(vae, out_dir / "vae")
    _record(out_dir, "vae", time.time() - start, steps=cfg.vae_steps, scaling_factor=vae.config.scaling_factor)


def _save_component(model: torch.nn.Module, directory: Path) -> None:
    if directory.exists():
        shutil.rmtree(directory)  # a re-trained component replaces the old one
    with files.atomic_directory(directory) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)


# --------------------------------------------------------------------- latents
def encode_latents(cfg: ToyTrainConfig, out_dir: Path, work: Path) -> Path:
    """Posterior mean/std of every UNet training image, plus token ids of its caption."""
    path = work / "latents.safetensors"
    if path.exists():
        return path
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(out_dir / "vae").eval()
    tokenizer = CLIPTokenizer.from_pretrained(out_dir / "tokenizer")
    means, stds = [], []
    captions: list[str] = []
    chunk = 5000
    for c0 in range(0, cfg.n_unet, chunk):
        n = min(chunk, cfg.n_unet - c0)
        images, caps, _ = domain.sample_dataset(n, seed=cfg.seed * 7919 + 303 + c0)
        captions += caps
        with torch.no_grad():
            for i in range(0, n, 500):
                post = vae.encode(_images_to_model(images[i : i + 500])).latent_dist
                means.append(post.mean)
                stds.append(post.std)
        log.info("encoded %d / %d", c0 + n, cfg.n_unet)
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    uncond = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                       return_tensors="pt").input_ids
    tensors = {"mean": torch.cat(means).contiguous(), "std": torch.cat(stds).contiguous(), "ids": ids, "uncond": uncond}
    # Latents of the whole training set (hundreds of MB): written by safetensors, not doubled in memory.
    with files.atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return path


def _training_batch(cfg: ToyTrainConfig, data: dict[str, torch.Tensor], scale: float, gen: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_0 latents, caption tokens with cond_dropout of them emptied, noise) for one denoiser step."""
    b = cfg.unet_batch
    idx = torch.randint(0, len(data["mean"]), (b,), generator=gen)
    z0 = (data["mean"][idx] + data["std"][idx] * torch.randn(data["mean"][idx].shape, generator=gen)) * scale
    tokens = data["ids"][idx].clone()
    tokens[torch.rand(b, generator=gen) < cfg.cond_dropout] = data["uncond"][0]
    return z0, tokens, torch.randn(z0.shape, generator=gen)


# ------------------------------------------------------------------------ UNet
def assemble_pipeline(out_dir: Path, unet, text_encoder, prediction_type: str = "epsilon"
                      ) -> StableDiffusionPipeline:
    from diffusers import AutoencoderKL

    return StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(out_dir / "vae"),
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(out_dir / "tokenizer"),
        unet=unet,
        scheduler=build_scheduler(prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _load_components(source: Path, modules: dict[str, torch.nn.Module]) -> None:
    """Start each module from the same-named component of a saved pipeline (a fine-tune's init)."""
    for name, module in modules.items():
        (weights,) = (source / name).glob("*.safetensors")  # diffusers' and transformers' file names differ
        module.load_state_dict({**module.state_dict(), **load_file(str(weights))})  # unsaved buffers as built
    log.info("initialised %s from %s", ", ".join(modules), source)


def train_unet(cfg: ToyTrainConfig, out_dir: Path, work: Path, classifier: AttributeClassifier,
               init_from: Path | None = None) -> None:
    data = load_file(str(encode_latents(cfg, out_dir, work)))
    scale = float(json.loads((out_dir / "vae" / "config.json").read_text())["scaling_factor"])
    tokenizer = CLIPTokenizer.from_pretrained(out_dir / "tokenizer")
    torch.manual_seed(cfg.seed)
    unet, text_encoder = build_unet(cfg.text_dim), build_text_encoder(tokenizer, cfg.text_dim)
    if init_from is not None:
        _load_components(init_from, {"unet": unet, "text_encoder": text_encoder})
    params = {f"unet.{n}": p for n, p in unet.named_parameters()}
    params.update({f"text_encoder.{n}": p for n, p in text_encoder.named_parameters()})
    scheduler = build_scheduler(cfg.prediction_type)

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        z0, tokens, noise = _training_batch(cfg, data, scale, gen)
        t = torch.randint(0, 1000, (cfg.unet_batch,), generator=gen)
        zt, target = noised(scheduler, z0, noise, t)
        hidden = text_encoder(tokens).last_hidden_state
        pred = unet(zt, t, hidden).sample
        weight = min_snr_weight(scheduler, t, cfg.min_snr_gamma)
        return (weight * (pred - target).pow(2).mean(dim=(1, 2, 3))).mean()

    def save_and_probe(trainer: Trainer) -> dict[str, float]:
        ema = trainer.ema_state()
        u, te = build_unet(cfg.text_dim), build_text_encoder(tokenizer, cfg.text_dim)
        u.load_state_dict({k[5:]: v for k, v in ema.items() if k.startswith("unet.")})
        te.load_state_dict({k[13:]: v for k, v in ema.items() if k.startswith("text_encoder.")})
        _save_component(u, out_dir / "unet")
        _save_component(te, out_dir / "text_encoder")
        pipe = assemble_pipeline(out_dir, u.eval(), te.eval(), cfg.prediction_type)
        if not (out_dir / "model_index.json").exists():
            pipe.save_config(out_dir)
            build_scheduler(cfg.prediction_type).save_pretrained(out_dir / "scheduler")
        return quick_fidelity(pipe, classifier, seed=cfg.seed)

    _fit_denoiser(cfg, "unet", params, loss_fn, work, out_dir, save_and_probe)


def _fit_denoiser(cfg: ToyTrainConfig, stage: str, params, loss_fn, work: Path, out_dir: Path, save_and_probe) -> None:
    """Train the denoiser stage; every export_every steps (and at the end) save_and_probe(trainer) writes
    the EMA weights as a pipeline and returns its fidelity probe, logged to training_progress.jsonl."""
    progress_path = out_dir / "training_progress.jsonl"
    last_time = [time.time()]

    def export(step: int, trainer: Trainer) -> bool:
        entry = {"step": step, "loss": float(np.mean(trainer.losses[-cfg.export_every:])), **save_and_probe(trainer)}
        with progress_path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        now = time.time()
        _record(out_dir, stage, now - last_time[0], steps=step, batch=cfg.unet_batch, config=asdict(cfg))
        last_time[0] = now
        log.info("step %d: %s", step, entry)
        return False

    trainer = Trainer(
        params,
        TrainerConfig(steps=cfg.unet_steps, lr=cfg.unet_lr, warmup_steps=500, weight_decay=0.01,
                      ema_decay=cfg.ema_decay, checkpoint_every=cfg.checkpoint_every,
                      callback_every=cfg.export_every, seed=cfg.seed, description=stage),
        checkpoint_dir=work / stage,
        callback=export,
    )
    state = trainer.fit(loss_fn)
    if state.step % cfg.export_every:
        export(state.step, trainer)


@torch.no_grad()
def quick_fidelity(pipe: StableDiffusionPipeline, classifier: AttributeClassifier, seed: int,
                   every: int = 5, steps: int = 20) -> dict[str, float]:
    """A training probe: the fidelity benchmark's measurement on every `every`-th named prompt, 2 seeds."""
    from erasekit.core.model import DiffusionModel
    from erasekit.toyworld import fidelity

    pipe.set_progress_bar_config(disable=True)
    prompts, pred = fidelity.classify(DiffusionModel(pipe), classifier, fidelity.named_prompts()[::every],
                                      [seed, seed + 1], steps=steps, progress=False)
    return {f"fidelity_{name}": fidelity.agreement(prompts, pred, name) for name in domain.ATTRIBUTES}


# --------------------------------------------------------------------- MMDiT
# The toy MMDiT's `max_sequence_length`: without T5, StableDiffusion3Pipeline appends that many zero tokens.
# SD3's 256 would make 256 of the toy's 344 tokens zeros (4× the cost of a step); 8 keeps the CLIP + T5
# layout at 96 tokens. Recorded in training.json ("encode"), which erasekit reads when it loads the model.
T5_TOKENS = 8


def sd3_conditioning(encoders, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sequence, pooled) as StableDiffusion3Pipeline.encode_prompt builds them with no T5: both CLIPs'
    penultimate hidden states side by side, then T5_TOKENS zero tokens; pooled: both projections."""
    outs = [encoder(ids, output_hidden_states=True) for encoder in encoders]
    clip = torch.cat([o.hidden_states[-2] for o in outs], dim=-1)
    zeros = clip.new_zeros(clip.shape[0], T5_TOKENS, clip.shape[-1])
    return torch.cat([clip, zeros], dim=1), torch.cat([o[0] for o in outs], dim=-1)


def flow_sigmas(scheduler, u: torch.Tensor) -> torch.Tensor:
    """SD3's training σ for u in (0, 1): the scheduler's timestep shift σ = s·u / (1 + (s − 1)·u)."""
    shift = scheduler.config.shift
    return shift * u / (1 + (shift - 1) * u)


def assemble_sd3_pipeline(out_dir: Path, transformer, encoders):
    from diffusers import AutoencoderKL, StableDiffusion3Pipeline

    from erasekit.toyworld.models import build_flow_scheduler

    tokenizer = CLIPTokenizer.from_pretrained(out_dir / "tokenizer")
    vae = AutoencoderKL.from_pretrained(out_dir / "vae")
    vae.register_to_config(shift_factor=0.0)  # SD3's decode adds shift_factor; the toy VAE has none
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=build_flow_scheduler(), vae=vae, text_encoder=encoders[0],
        tokenizer=tokenizer, text_encoder_2=encoders[1], tokenizer_2=tokenizer, text_encoder_3=None, tokenizer_3=None,
    )


def train_mmdit(cfg: ToyTrainConfig, out_dir: Path, work: Path, classifier: AttributeClassifier,
                init_from: Path | None = None) -> None:
    from erasekit.toyworld.models import build_flow_scheduler, build_mmdit, build_text_encoder_with_projection

    data = load_file(str(encode_latents(cfg, out_dir, work)))
    scale = float(json.loads((out_dir / "vae" / "config.json").read_text())["scaling_factor"])
    tokenizer = CLIPTokenizer.from_pretrained(out_dir / "tokenizer")
    torch.manual_seed(cfg.seed)

    def build():
        return build_mmdit(), [build_text_encoder_with_projection(tokenizer) for _ in range(2)]

    transformer, encoders = build()
    names = ("transformer", "text_encoder", "text_encoder_2")
    if init_from is not None:
        _load_components(init_from, dict(zip(names, [transformer, *encoders], strict=True)))
    params = {f"{name}.{n}": p for name, module in zip(names, [transformer, *encoders], strict=True)
              for n, p in module.named_parameters()}
    scheduler = build_flow_scheduler()

    def loss_fn(step: int, gen: torch.Generator) -> torch.Tensor:
        z0, tokens, noise = _training_batch(cfg, data, scale, gen)
        u = torch.sigmoid(torch.randn(cfg.unet_batch, generator=gen))  # logit-normal, as SD3 samples it
        sigma = flow_sigmas(scheduler, u)
        s = sigma.view(-1, 1, 1, 1)
        hidden, pooled = sd3_conditioning(encoders, tokens)
        x = (1 - s) * z0 + s * noise
        pred = transformer(hidden_states=x, timestep=sigma * scheduler.config.num_train_timesteps,
                           encoder_hidden_states=hidden, pooled_projections=pooled).sample
        return F.mse_loss(pred, noise - z0)  # the velocity dx/dσ of x_σ = (1 − σ)·x_0 + σ·ε

    def save_and_probe(trainer: Trainer) -> dict[str, float]:
        ema = trainer.ema_state()
        t, encs = build()
        for name, module in zip(names, [t, *encs], strict=True):
            weights = {k[len(name) + 1:]: v for k, v in ema.items() if k.startswith(f"{name}.")}
            module.load_state_dict({**module.state_dict(), **weights})  # buffers (pos_embed) as built
            _save_component(module.eval(), out_dir / name)
        pipe = assemble_sd3_pipeline(out_dir, t, encs)
        if not (out_dir / "model_index.json").exists():
            _record_encode(out_dir, max_sequence_length=T5_TOKENS)
            pipe.tokenizer_2.save_pretrained(out_dir / "tokenizer_2")  # the same vocabulary, as SD3 ships it
            pipe.save_config(out_dir)
            pipe.scheduler.save_pretrained(out_dir / "scheduler")
            _save_component(pipe.vae, out_dir / "vae")  # with its shift_factor
        return quick_pipeline_fidelity(pipe, classifier, seed=cfg.seed)

    _fit_denoiser(cfg, "mmdit", params, loss_fn, work, out_dir, save_and_probe)


@torch.no_grad()
def quick_pipeline_fidelity(pipe, classifier: AttributeClassifier, seed: int, every: int = 5, steps: int = 20,
                            guidance: float = 7.0) -> dict[str, float]:
    """quick_fidelity through the diffusers pipeline's own sampler (for families erasekit's DDIM sampler
    does not draw): every `every`-th named prompt, 2 seeds."""
    from erasekit.toyworld import fidelity

    pipe.set_progress_bar_config(disable=True)
    prompts = fidelity.named_prompts()[::every]
    images = []
    for s in (seed, seed + 1):
        for i in range(0, len(prompts), 64):
            chunk = [p.prompt for p in prompts[i : i + 64]]
            gen = [torch.Generator().manual_seed(s * 100_003 + i + j) for j in range(len(chunk))]
            images.append(pipe(chunk, num_inference_steps=steps, guidance_scale=guidance, generator=gen,
                               height=domain.IMAGE_SIZE, width=domain.IMAGE_SIZE, output_type="pt",
                               max_sequence_length=T5_TOKENS).images)
    pred = classifier.predict(torch.cat(images).float().clamp(0, 1))
    labelled = prompts * 2
    pred = {k: v.numpy() for k, v in pred.items()}
    return {f"fidelity_{name}": fidelity.agreement(labelled, pred, name) for name in domain.ATTRIBUTES}


def train_all(out_dir: Path, work: Path, cfg: ToyTrainConfig, init_from: Path | None = None,
              vae_from: Path | None = None) -> None:
    """vae_from: a trained toy world whose tokenizer, VAE and classifier are reused (only the text
    encoder and UNet train), e.g. for a variant with another text width."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if vae_from is not None:
        for part in ("tokenizer", "vae"):
            if not (out_dir / part).exists():
                shutil.copytree(vae_from / part, out_dir / part)
    if not (out_dir / "tokenizer" / "vocab.json").exists():
        save_tokenizer(out_dir / "tokenizer")
    source = vae_from or out_dir
    classifier = train_classifier(cfg, source.parent / f"{source.name}-{CLASSIFIER_FILE}", work, out_dir)
    train_vae(cfg, out_dir, work)
    # Which worlds it started from, as given (relative paths stay relative): part of how to reproduce it.
    origins = {k: str(v) for k, v in (("init_from", init_from), ("vae_from", vae_from)) if v is not None}
    if origins:
        _record(out_dir, "unet", 0.0, **origins)
    if cfg.arch == "mmdit":
        train_mmdit(cfg, out_dir, work, classifier, init_from=init_from)
    else:
        train_unet(cfg, out_dir, work, classifier, init_from=init_from)
    log.info("toy world trained into %s", out_dir)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("models/toyworld"))
    parser.add_argument("--work", type=Path, default=Path(".cache/toyworld-train"))
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--unet-steps", type=int, default=ToyTrainConfig.unet_steps)
    parser.add_argument("--init-from", type=Path, default=None)
    parser.add_argument("--text-dim", type=int, default=ToyTrainConfig.text_dim)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    train_all(args.out, args.work, ToyTrainConfig(unet_steps=args.unet_steps, text_dim=args.text_dim), args.init_from)
