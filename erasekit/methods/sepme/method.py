"""SepME: separable multi-concept erasure (G-CiRs + weight decoupling).

Per concept k and projection W_l that reads the text tokens (a UNet's cross-attention to_k / to_v; an
MMDiT's context_embedder, the family's `readers`), the increment is
ΔW_{k,l} = β P_{k,l} S_k, where the rows of S_k are an orthonormal basis of the null space
of the per-token text embeddings of ∅, of every other erased concept and of any protected
prompt: by construction ΔW_{k,l} leaves their keys and values unchanged. Only P_k trains
(from zero), minimising the correlation of the edited and original concept representations

    L_cor = mean[(ε′(x_t, c) − ε′(x_t, ∅)) ⊙ (ε(x_t, c) − ε(x_t, ∅))]

on noised latents of the base model's own images of c, plus λ·(1/M) Σ_l ‖ΔW_{k,l}‖₁, until
the momentum-smoothed L_cor falls below τ. Each concept's increment is its own Patch, so
removing one restores that concept and leaves the others erased.

Robust erasure (core.robust, not in the paper): after the warm-up (robust_warmup × max_steps, trained plainly)
the concept prompt of L_cor is [δ; c], δ the adversarial prefix re-attacked against the edited model on the
step's (x_t, t); the base side of L_cor keeps the plain c, so the increment learns to decorrelate whatever
the prefix brings back from the concept's own direction. Early stopping reads the loss under the adversary only
(it is not checked during the warm-up), so a robust increment stops once even the attacked prompt is erased.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from erasekit.core import patch as patching
from erasekit.core import robust
from erasekit.core.data import concept_latents
from erasekit.core.edit import RunOptions
from erasekit.core.model import DiffusionModel
from erasekit.core.noising import add_noise
from erasekit.core.patch import Patch
from erasekit.core.scopes import named_parameters
from erasekit.core.trainer import Trainer, TrainerConfig
from erasekit.errors import ErasekitError
from erasekit.methods.sepme.config import SepmeConfig
from erasekit.request import EraseRequest

log = logging.getLogger(__name__)


def null_space_basis(constraints: torch.Tensor, rank_tol: float) -> torch.Tensor:
    """Orthonormal rows spanning {v : constraints · v = 0}, from the SVD (float64)."""
    _, sigma, vh = torch.linalg.svd(constraints.double(), full_matrices=True)
    rank = int((sigma > rank_tol * sigma.max()).sum()) if sigma.numel() else 0
    return vh[rank:].to(constraints.dtype)


def training_pairs(concept: str, templates: list[str], phrase_null: bool) -> list[tuple[str, str]]:
    """(concept prompt, its ∅) per template: ∅ is "" or, with phrase_null, the template without the concept."""
    return [(t.format(concept), " ".join(t.format("").split()) if phrase_null else "") for t in templates]


def correlation_loss(edited_cond, edited_uncond, base_cond, base_uncond) -> torch.Tensor:
    return ((edited_cond - edited_uncond) * (base_cond - base_uncond)).mean()


def balance_weights(scales: dict[int, float]) -> dict[int, float]:
    """η_i = max_k |L_k| / |L_i| from each concept's calibrated loss scale. The extended paper divides by
    the current |L_i|; with a negative τ the losses cross zero, where that ratio explodes and the spike
    in Adam's second moment all but stops the concept's training, so the scale is taken once."""
    largest = max(abs(v) for v in scales.values())
    return {k: largest / max(abs(v), 1e-12) for k, v in scales.items()}


class MomentumStopper:
    """L_mom⁰ = L_0, L_mom ← m·L_mom + (1 − m)·L; stop once past warm-up with L_mom < τ."""

    def __init__(self, momentum: float, warmup: int, tau: float) -> None:
        self.momentum, self.warmup, self.tau = momentum, warmup, tau
        self.value: float | None = None
        self.steps = 0

    def update(self, loss: float) -> bool:
        self.value = loss if self.value is None else self.momentum * self.value + (1 - self.momentum) * loss
        self.steps += 1
        return self.steps > self.warmup and self.value < self.tau


def relative_kv_change(model: DiffusionModel, patches: list[Patch], prompt: str) -> float:
    """max over the text-reading layers of |Σ ΔW e| / max |W e| for the prompt's token embeddings e:
    how far the patches move that prompt's keys and values (0 when it lies in their null spaces)."""
    names = sorted({n for p in patches for n in p.deltas})
    with torch.no_grad():
        tokens = model.encode([prompt]).hidden[0].float().cpu()
        base = patching.base_tensors(model, names)
        worst = 0.0
        for name in names:
            delta = sum(p.deltas[name].float() for p in patches if name in p.deltas)
            moved = (tokens @ delta.T).abs().max() / (tokens @ base[name].float().cpu().T).abs().max()
            worst = max(worst, float(moved))
    return worst


def reader_layers(model: DiffusionModel) -> dict[str, torch.nn.Parameter]:
    """The denoiser's weights that read the per-token text embeddings (the family's "hidden" readers, by
    their names inside the denoiser): a UNet's attn2 to_k / to_v; an MMDiT's context_embedder, through
    which the tokens enter every block, so an increment in the others' null space leaves their whole
    path unchanged."""
    prefix = model.family.denoiser
    return {n.removeprefix(f"{prefix}."): p for n, p in named_parameters({prefix: model.denoiser}).items()
            if model.family.reader_field(n) == "hidden"}


def _token_embeddings(model: DiffusionModel, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return model.encode(texts).hidden.reshape(-1, model.context_dim) if texts else None


def erase(
    model: DiffusionModel, request: EraseRequest, config: SepmeConfig, run: RunOptions | None = None
) -> list[Patch]:
    run = run or RunOptions()
    concepts = request.concepts
    unknown = sorted(set(config.captions) - set(concepts))
    if unknown:
        raise ErasekitError(f"captions given for {unknown}, which are not among the concepts {concepts}")
    stages = config.stages or [list(concepts)]
    if sorted(c for stage in stages for c in stage) != sorted(concepts):
        raise ErasekitError(f"stages {stages} must name every concept of {concepts} exactly once")
    if len(concepts) == 1 and not request.preserve and not config.protect:
        log.warning("sepme with one concept: only the empty prompt constrains its increment")
    layers = reader_layers(model)
    bases = null_spaces(model, concepts, list(request.preserve) + list(config.protect), config)
    patches: dict[str, Patch] = {}
    for i, stage in enumerate(stages):
        # A later stage trains on the model that carries the earlier stages' increments.
        with patching.applied_temporarily(model, [patches[c] for done in stages[:i] for c in done]):
            patches.update(train_stage(model, stage, [bases[c] for c in stage], layers, config, run))
    return [patches[c] for c in concepts]


def null_spaces(model: DiffusionModel, concepts: list[str], fixed: list[str],
                config: SepmeConfig) -> dict[str, torch.Tensor]:
    """S_k per concept: the null space of the token embeddings of ∅, the fixed prompts and the other concepts."""
    prompts = [config.template.format(c) for c in concepts]
    embeds = _token_embeddings(model, prompts).reshape(len(concepts), -1, model.context_dim)
    constraints = _token_embeddings(model, [""] + fixed)
    bases = {}
    for k, concept in enumerate(concepts):
        others = [embeds[j] for j in range(len(concepts)) if j != k]
        basis = null_space_basis(torch.cat([constraints, *others]), config.rank_tol)
        if basis.shape[0] == 0:
            raise ErasekitError(
                f"the embeddings of ∅ and the other concepts span the whole text space: {concept!r} has an "
                "empty null space (erase fewer concepts at once)")
        bases[concept] = basis
    return bases


def train_stage(model: DiffusionModel, concepts: list[str], bases: list[torch.Tensor],
                layers: dict[str, torch.nn.Parameter], config: SepmeConfig, run: RunOptions) -> dict[str, Patch]:
    """Train the increments of `concepts` (null-space bases in the same order) on the model as it stands,
    jointly or separately per config.mode."""
    # Image i of concept k comes from its training prompt i mod P and is paired with that prompt's ∅.
    prompt_pairs = [training_pairs(c, config.captions.get(c, [config.template]), config.phrase_null)
                    for c in concepts]
    with torch.no_grad():
        pairs = [torch.stack([model.encode([c for c, _ in pp]), model.encode([n for _, n in pp])], dim=1)
                 for pp in prompt_pairs]
    latents = [concept_latents(model, [c for c, _ in pp], config.n_images, config.image_steps,
                               config.image_guidance, config.seed, run.cache_dir, run.progress)
               for pp in prompt_pairs]
    coeffs = {
        f"{k}/{name}": torch.nn.Parameter(torch.zeros(w.shape[0], bases[k].shape[0], device=w.device))
        for k in range(len(concepts)) for name, w in layers.items()
    }

    def increment(k: int, name: str) -> torch.Tensor:
        return config.beta * coeffs[f"{k}/{name}"] @ bases[k]

    def edited_weights(ks) -> dict[str, torch.Tensor]:
        return {name: w.detach() + sum(increment(k, name) for k in ks) for name, w in layers.items()}

    # the adversary's prompts: every concept's training prompts, concept k's from offsets[k] on
    offsets = [sum(len(pp) for pp in prompt_pairs[:k]) for k in range(len(concepts))]
    adversary_prompts = [c for pp in prompt_pairs for c, _ in pp]

    def concept_loss(k: int, step: int, gen: torch.Generator, ks, adv=None) -> torch.Tensor:
        index = step % len(latents[k])  # each image once per pass, as the authors
        z0 = latents[k][index][None]
        t = torch.randint(0, model.scheduler.config.num_train_timesteps, (1,), generator=gen).to(model.device)
        noise = torch.randn(z0.shape, generator=gen).to(z0.device, z0.dtype)
        x = add_noise(model.scheduler, z0, noise, t)
        pair = pairs[k][index % len(pairs[k])]
        with torch.no_grad():
            base = model.eps(x, t, pair)
        weights = edited_weights(ks)
        if adv is not None and adv.active(step):
            row = torch.tensor([offsets[k] + index % len(pairs[k])])
            student = {name: w.detach() for name, w in weights.items()}
            pair = torch.cat([adv.condition(step, x, t, row, pair[0:1], student), pair[1:2]])
        edited = model.eps(x, t, pair, weights)
        return correlation_loss(edited[0], edited[1], base[0], base[1])

    def l1(k: int) -> torch.Tensor:
        return sum(increment(k, name).abs().sum() for name in layers) / len(layers)

    # Each concept's loss scale: the mean of L_cor = mean(r²) at the base model over several images and
    # noise draws (one draw's loss spreads over two orders of magnitude). It calibrates τ = tau_rel · scale
    # and the balance weights η.
    gen = torch.Generator().manual_seed(config.seed + 1)
    with torch.no_grad():
        scales = {k: sum(float(concept_loss(k, i * len(latents[k]) // config.calibration_samples, gen, []))
                         for i in range(config.calibration_samples)) / config.calibration_samples
                  for k in range(len(concepts))}
    stoppers = {k: MomentumStopper(config.momentum, config.warmup,
                                   config.tau if config.tau is not None else config.tau_rel * scales[k])
                for k in range(len(concepts))}
    stopped: dict[int, int] = {}
    groups = [list(range(len(concepts)))] if config.mode == "joint" else [[k] for k in range(len(concepts))]
    guards: dict[int, dict] = {}  # concept -> what its group's adversary and retain term record
    for group in groups:
        latest: dict[int, float] = {}
        weights = balance_weights({k: scales[k] for k in group})
        adv = robust.adversary(model, None, config, adversary_prompts, config.max_steps, concepts, run)
        retain = robust.retain_term(model, None, config, concepts, run, config.max_steps,
                                    student=lambda group=group: edited_weights(group))

        def loss_fn(step: int, gen: torch.Generator, group=group, latest=latest, weights=weights,
                    adv=adv) -> torch.Tensor:
            active = [k for k in group if k not in stopped]
            losses = {k: concept_loss(k, step, gen, group, adv) for k in active}
            latest.clear()
            latest.update({k: float(v.detach()) for k, v in losses.items()})
            # η weighs each concept's whole objective, its L1 term included.
            return sum(weights[k] * (loss + config.reg * l1(k)) for k, loss in losses.items())

        def check(step: int, trainer: Trainer, group=group, latest=latest, adv=adv) -> bool:
            if adv is not None and not adv.active(step - 1):  # `latest` is step − 1's (step: steps done)
                return False  # the warm-up's plain losses say nothing of the attacked prompt
            for k, value in latest.items():
                if k not in stopped and stoppers[k].update(value):
                    stopped[k] = step  # frozen: its coefficients leave the loss and get no more updates
            return all(k in stopped for k in group)

        params = {n: p for n, p in coeffs.items() if int(n.split("/")[0]) in group}
        trainer = Trainer(params, TrainerConfig(steps=config.max_steps, lr=config.lr, grad_clip=None,
                                                seed=config.seed, callback_every=1, progress=run.progress,
                                                description=f"sepme {', '.join(concepts[k] for k in group)}"),
                          callback=check)
        trainer.fit(robust.with_retain(retain, loss_fn))
        guards.update({k: robust.robust_info(adv, retain) for k in group})

    prefix = model.family.denoiser
    base_print = patching.base_fingerprint(model, [f"{prefix}.{n}" for n in layers])
    made_on = patching.made_on(model)
    patches = {}
    with torch.no_grad():
        for k, concept in enumerate(concepts):
            deltas = {f"{prefix}.{name}": increment(k, name).detach().float().cpu().contiguous() for name in layers}
            info = {**made_on, "stopped_at": stopped.get(k), "tau": stoppers[k].tau,
                    "loss_scale": scales[k], "l_mom": stoppers[k].value, "null_space_dim": int(bases[k].shape[0]),
                    "trainable_params": sum(coeffs[f"{k}/{n}"].numel() for n in layers),
                    **guards[k]}
            patches[concept] = Patch(deltas, "sepme", dataclasses.asdict(config), [concept], base_print, info=info,
                                     family=model.family.name)
    return patches
