"""Robust erasure for any method whose student reads the concept's condition (AdvUnlearn's bi-level
scheme, as a core option; the settings: core.robust_options.RobustOptions).

    min_θ  L_method(θ; [δ*; c])   with   δ* = argmin_δ ‖ε_θ(x_t, t, E([δ; c])) − ε*(x_t, t, E(c))‖²

The inner problem is AdvUnlearn's attack (../shared/papers/attacks-reference-notes.md §5): prefix
embeddings δ (`robust_attack=replace`: δ in the concept word's place, the rest of the prompt kept; their
`replace_k` replaces the whole prompt, the same for a one-word prompt such as abo's or ESD's) under
which the *current* student predicts what the frozen model predicts for the concept, i.e. the embedding
that brings the concept back. It runs on the method's own batch (x_t, t)
of that step, every `robust_every` steps, `robust_steps` Adam steps from the previous δ (their
`latest` init; the first δ is a random vocabulary token's row, their `random`); the outer step is the
method's own loss with E([δ; c]) where the student read E(c), its preservation terms untouched. The
first `robust_warmup` share of steps trains plainly (theirs: 200 of 1,000).

Their z_t are the concept prompt's (partial DDIM walks on c), which is also ESD's, SDD's and FMN's own
batch. abo's batch is the anchor's trajectories and CA's noised anchor images, on which the concept
never forms; `robust_latents=concept` moves the inner attack onto the concept's own latents, as
Concept Inversion learns its embedding: forward-noised latents (t uniform) of 32 or more images the
frozen model drew once for the adversary's prompts (drawn as the retain images below), the outer step
staying on the method's batch.

While the adversary is on, AdvUnlearn's utility-retain term γ·ℓ_r is added to the method's loss
(RetainTerm): ℓ_r = ‖ε_θ(z_r, t, E_θ(c_r)) − ε*(z_r, t, E*(c_r))‖² over a batch of 5 retain prompts
c_r, γ `robust_retain` (0.3, their README). Without it the outer step on [δ; c] is free to move
every other prompt's prediction, which the method's own preservation terms do not all watch (abo's
reads ε(∅) alone).

Where we differ: δ lives in every token table of the family (SDXL: both CLIP tables) through the
attacks' slot hook, and only δ's gradient is taken in the inner loop (theirs accumulates without
zeroing, a quirk we do not copy). Their z_r is a partial DDIM walk on the retain prompt at each
iteration; ours is a forward-noised latent of one of 32 images (at least one per prompt) the frozen
model drew once for the retain prompts (25 DDIM steps, guidance 7.5: the images Ablating Concepts trains
on are drawn the same way), the same distribution at a fraction of the cost. Their retain set is 243
"a photo of <COCO object>" rows; ours is the request's `robust_retain_prompts`, the model's own set
(the toy world: its other shapes, and in a robust run every word of its world) or the 80 COCO categories
(erasekit/data/retain_prompts.yaml), less any prompt that names an erased concept. The term is on from
the end of the warm-up (theirs: every iteration), so the warm-up stays the plain method.

The same term serves a plain erase as a preservation term (`retain` > 0, off in every paper's layer): on
from the first step, without any adversary, for a method whose own loss leaves other prompts free to move
(Ablating Concepts' next-shape edits on the toy world: docs/methods/ca.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from importlib import resources

import torch
import torch.nn.functional as F
import yaml

from erasekit.core.conditioning import Conditioning
from erasekit.core.data import concept_latents
from erasekit.core.distributed import processes
from erasekit.core.noising import add_noise
from erasekit.core.robust_options import RobustOptions
from erasekit.core.tokens import TokenSlots, decode, free_placeholders, word_vocabulary
from erasekit.errors import ErasekitError


class AdversarialPrefix:
    """The adversary of one training run: `condition(...)` gives the student's condition for a step."""

    def __init__(self, model, teacher: dict[str, torch.Tensor] | None, prompts: Sequence[str],
                 options: RobustOptions, total_steps: int, seed: int = 0, concepts: Sequence[str] = (),
                 latents: torch.Tensor | None = None) -> None:
        """latents: where the attack runs when not on the method's batch (`robust_latents=concept`): clean
        latents, image i of prompt i mod len(prompts), an equal number per prompt."""
        self.model, self.teacher, self.options = model, teacher, options
        if latents is not None and len(latents) % len(prompts):
            raise ValueError("the attack's latents must hold the same number of images for every prompt")
        self.latents, self.n_prompts = latents, len(prompts)
        self.noise_gen = torch.Generator().manual_seed(seed + 11)
        self.context_gen = torch.Generator().manual_seed(seed + 13)
        # prompt p in context j is variant p·C + j (C = 1 without robust_contexts: the prompt itself)
        contexts = list(options.robust_contexts) or ["{}"]
        self.contexts, self.n_contexts = contexts, len(contexts)
        self.last_variants: torch.Tensor | None = None  # the variants the last active step read
        variants = [context.replace("{}", p) for p in prompts for context in contexts]
        tok = model.tokenizer
        self.slot_ids = free_placeholders(tok, options.robust_tokens, variants)
        self.texts = attacked_texts(variants, decode(tok, self.slot_ids), concepts, options.robust_attack)
        self.frozen = None
        if options.robust_contexts:
            with torch.no_grad():  # E*(c in its context): what the attack brings the student's prediction to
                self.frozen = model.encode(variants)
        self.slots = TokenSlots(model, self.slot_ids)
        self.start = int(options.robust_warmup * total_steps)
        gen = torch.Generator().manual_seed(seed + 7)
        vocab = torch.tensor(word_vocabulary(tok, set()))
        first = vocab[torch.randint(len(vocab), (options.robust_tokens,), generator=gen)].to(model.device)
        self.delta = {name: rows.float().clone().requires_grad_(True)
                      for name, rows in self.slots.table_rows(first).items()}
        self.optimizer = torch.optim.Adam(list(self.delta.values()), lr=options.robust_lr)
        self.attacks = 0
        self.last_loss: float | None = None

    def active(self, step: int) -> bool:
        return self.options.robust and step >= self.start

    def _encode(self, variants: torch.Tensor, delta: dict[str, torch.Tensor]) -> Conditioning:
        with self.slots:
            self.slots.set({name: d[None] for name, d in delta.items()},
                           torch.zeros(len(variants), dtype=torch.long))
            return self.model.encode([self.texts[int(v)] for v in variants])

    def _concept_batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, t): for each row (a prompt), one of its prompt's images noised to a uniform timestep."""
        per_prompt = len(self.latents) // self.n_prompts
        k = torch.randint(per_prompt, (len(rows),), generator=self.noise_gen)
        return forward_noised(self.model, self.latents[(rows.cpu() + self.n_prompts * k).to(self.latents.device)],
                              self.noise_gen)

    def _attack(self, x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor, variants: torch.Tensor,
                frozen: Conditioning, student: dict[str, torch.Tensor] | None) -> None:
        if self.latents is not None:
            x, t = self._concept_batch(rows)
        with torch.no_grad():
            wanted = self.model.eps(x, t, frozen[None], self.teacher)[0]
        params = list(self.delta.values())
        for _ in range(self.options.robust_steps):
            loss = F.mse_loss(self.model.eps(x, t, self._encode(variants, self.delta)[None], student)[0], wanted)
            grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            self.optimizer.step()
            self.last_loss = float(loss.detach())
        self.attacks += 1

    def condition(self, step: int, x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor,
                  plain: Conditioning, student: dict[str, torch.Tensor] | None = None,
                  frozen: Conditioning | None = None) -> Conditioning:
        """What the student reads for the concept prompts `rows` at this step: `plain` (E(c) of those
        rows) before the warm-up ends, E([δ; c]) after it, δ re-attacked on (x, t) every robust_every steps;
        with robust_contexts, [δ; c] in a context drawn per row each step (the attack then brings the
        student to the frozen model's prediction for c in that context).
        student: the student's denoiser tensors where they are not the live ones (SepME's increments);
        frozen: E*(c), what the frozen model reads, where the trained text encoder's `plain` is not it."""
        if not self.active(step):
            return plain
        rows = rows.cpu()
        variants = rows * self.n_contexts
        if self.n_contexts > 1:
            variants = variants + torch.randint(self.n_contexts, (len(rows),), generator=self.context_gen)
        self.last_variants = variants
        if (step - self.start) % self.options.robust_every == 0:
            wanted = self.frozen[variants.to(self.frozen.device)] if self.frozen is not None else (
                plain if frozen is None else frozen)
            self._attack(x.detach(), t, rows, variants, wanted, student)
        # δ is fixed for the outer step; the encoder stays in the graph for methods that train it (CA's rows)
        return self._encode(variants, {name: d.detach() for name, d in self.delta.items()})

    def variant_texts(self, words: Sequence[str]) -> list[str]:
        """Every variant's sentence with prompt p's place taken by words[p] (e.g. the anchors in the sentences
        the adversary draws), in variant order."""
        return [context.replace("{}", w) for w in words for context in self.contexts]

    def summary(self) -> dict:
        return {"attacks": self.attacks, "inner_loss": self.last_loss, "warmup_steps": self.start}


def forward_noised(model, z0: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, t): clean latents z0 noised to uniform timesteps (t, then the noise, drawn from gen)."""
    n_train = model.scheduler.config.num_train_timesteps
    t = torch.randint(0, n_train, (len(z0),), generator=gen).to(z0.device)
    noise = torch.randn(z0.shape, generator=gen).to(z0.device, z0.dtype)
    return add_noise(model.scheduler, z0, noise, t), t


def attacked_texts(prompts: Sequence[str], slots: str, concepts: Sequence[str], where: str) -> list[str]:
    """The prompts as the adversary writes them: its slot tokens before each (prefix) or in the place of each
    erased concept's word (replace)."""
    if where == "prefix":
        return [f"{slots} {p}" for p in prompts]
    named = re.compile("|".join(rf"\b{re.escape(c)}\b" for c in concepts), re.IGNORECASE) if concepts else None
    texts = [named.sub(slots, p) if named else p for p in prompts]
    missing = [p for p, t in zip(prompts, texts, strict=True) if t == p]
    if missing:
        raise ErasekitError(f"robust_attack=replace puts the adversary in the concept word's place, but the training "
                            f"prompt {missing[0]!r} does not name it; use --set robust_attack=prefix")
    return texts


def adversary(model, session, config, prompts: Sequence[str], total_steps: int,
              concepts: Sequence[str], run) -> AdversarialPrefix | None:
    """The run's adversary when `config.robust` is set (the frozen model: the session's teacher; without a
    session, the live weights, which a method that passes its student's tensors leaves frozen). concepts: the
    erased concepts whose words `robust_attack=replace` replaces in `prompts`; run: the RunOptions (where the
    frozen model's images of `prompts` are cached, for `robust_latents=concept`). Built before any step trains,
    so the live weights that draw those images are still the frozen model's."""
    if not getattr(config, "robust", False):
        return None
    if processes().num_processes > 1:
        # each process would attack its own share of the batch and keep its own δ: not the one-process run
        raise ErasekitError("robust erasure runs in one process (each process would keep its own adversary)")
    latents = None
    if config.robust_latents == "concept":
        n_images = len(prompts) * -(-RETAIN_IMAGES // len(prompts))  # an equal number per prompt
        latents = concept_latents(model, prompts, n_images, RETAIN_IMAGE_STEPS, RETAIN_IMAGE_GUIDANCE, config.seed,
                                  run.cache_dir, run.progress)
    return AdversarialPrefix(model, _teacher(session), prompts, config, total_steps, config.seed, concepts, latents)


def _teacher(session) -> dict[str, torch.Tensor] | None:
    return session.teacher_denoiser() if session is not None else None


def robust_info(adv: AdversarialPrefix | None, retain: RetainTerm | None = None) -> dict:
    """What a patch's info records of its adversary and retain term (under "robust"), or of a plain run's
    retain term (under "retain"); nothing without either."""
    extra = {"retain_prompts": len(retain.prompts), "retain_loss": retain.last_loss} if retain else {}
    if retain is not None and retain.encoding_weight:
        extra["retain_encoding_loss"] = retain.last_encoding_loss
    if adv is None:
        return {"retain": extra} if extra else {}
    return {"robust": {**adv.summary(), **extra}}


RETAIN_BATCH = 5  # AdvUnlearn's retain batch
RETAIN_IMAGES = 32
RETAIN_IMAGE_STEPS = 25
RETAIN_IMAGE_GUIDANCE = 7.5


def default_retain_prompts() -> list[str]:
    """'a photo of a <object>' over the 80 COCO categories (erasekit/data/retain_prompts.yaml)."""
    data = yaml.safe_load(resources.files("erasekit").joinpath("data/retain_prompts.yaml").read_text("utf-8"))
    return [data["template"].format(name) for name in data["objects"]]


def retain_prompts(given: Sequence[str], concepts: Sequence[str]) -> list[str]:
    """The retain prompts of a run: `given` (else the COCO set) less those naming an erased concept (as a word)."""
    named = re.compile("|".join(rf"\b{re.escape(c)}\b" for c in concepts), re.IGNORECASE)
    kept = [p for p in (list(given) or default_retain_prompts()) if not (concepts and named.search(p))]
    if not kept:
        raise ErasekitError("every robust_retain_prompts prompt names an erased concept; give prompts of other "
                            "things to keep (or --set robust_retain=0)")
    return kept


class RetainTerm:
    """AdvUnlearn's utility-retain term γ·ℓ_r: the student keeps the frozen model's prediction for retain
    prompts on noised latents of the frozen model's own images of them (module docstring); and, where a text
    encoder trains, γ_e·‖E_θ(c_r) − E*(c_r)‖² on the same prompts (`retain_encoding`, ours). latents: None
    when γ is 0 (the encoding term alone needs no images). session: the run's (None: SepME, whose student is
    the `student` tensors and whose encoder stays frozen)."""

    def __init__(self, model, session, prompts: Sequence[str], latents: torch.Tensor | None, weight: float,
                 start: int, student: Callable[[], dict[str, torch.Tensor]] | None = None,
                 encoding_weight: float = 0.0) -> None:
        self.model, self.session, self.teacher, self.prompts = model, session, _teacher(session), list(prompts)
        self.latents, self.weight, self.start = latents, weight, start
        self.encoding_weight = encoding_weight
        self.student = student  # the student's denoiser tensors where they are not the live ones
        with torch.no_grad():  # E*(c_r): the text encoder before any step trained it
            self.frozen = model.encode(self.prompts)
        self.last_loss: float | None = None
        self.last_encoding_loss: float | None = None

    def __call__(self, step: int, gen: torch.Generator) -> torch.Tensor | float:
        if step < self.start:
            return 0.0
        # image i was drawn from prompt i mod P; without images, prompts are drawn directly
        idx = torch.randint(len(self.prompts if self.latents is None else self.latents), (RETAIN_BATCH,),
                            generator=gen)
        rows = idx % len(self.prompts)
        frozen = self.frozen[rows.to(self.model.device)]
        texts = [self.prompts[int(r)] for r in rows]
        encoded = self.session.student_condition(texts, frozen) if self.session is not None else frozen
        total = 0.0
        if self.latents is not None:
            total = self.weight * self._prediction_loss(idx, frozen, encoded, gen)
        if self.encoding_weight:
            total = total + self.encoding_weight * self._encoding_loss(frozen, encoded)
        return total

    def _prediction_loss(self, idx: torch.Tensor, frozen, encoded, gen: torch.Generator) -> torch.Tensor:
        x, t = forward_noised(self.model, self.latents[idx], gen)
        with torch.no_grad():
            wanted = self.model.eps(x, t, frozen[None], self.teacher)[0]
        weights = self.student() if self.student is not None else None
        student = self.model.eps(x, t, encoded[None], weights)[0]
        loss = F.mse_loss(student.float(), wanted.float())
        self.last_loss = float(loss.detach())
        return loss

    def _encoding_loss(self, frozen, encoded) -> torch.Tensor:
        # the pooled extras (SDXL, SD3) come from the trained encoder too; time ids are constant
        loss = F.mse_loss(encoded.hidden.float(), frozen.hidden.float()) + sum(
            F.mse_loss(v.float(), frozen.extras[k].float()) for k, v in encoded.extras.items())
        self.last_encoding_loss = float(loss.detach())
        return loss


def retain_term(model, session, config, concepts: Sequence[str], run, total_steps: int | None = None,
                student: Callable[[], dict[str, torch.Tensor]] | None = None) -> RetainTerm | None:
    """The run's utility-retain term: a robust run's (`robust_retain`, on from the end of the warm-up), else a
    plain run's (`retain`, on from the first step), with `retain_encoding` beside either; None when both
    weights are 0. total_steps: the run's steps when the config's are not `steps`; student: as for
    AdversarialPrefix.condition, a callable."""
    total = config.steps if total_steps is None else total_steps
    weight, start = ((config.robust_retain, int(config.robust_warmup * total)) if config.robust
                     else (config.retain, 0))
    encoding = config.retain_encoding
    if weight == 0 and encoding == 0:
        return None
    if encoding and not (session is not None and session.encoder_trains):
        raise ErasekitError("retain_encoding keeps a trained text encoder's outputs, but this run trains no text "
                            "encoder (e.g. --set scope=text-encoder), or --set retain_encoding=0")
    prompts = retain_prompts(config.robust_retain_prompts, concepts)
    # image i is drawn from prompt i mod P: at least one image per prompt, or the later prompts are never held
    n_images = max(RETAIN_IMAGES, len(prompts))
    latents = (concept_latents(model, prompts, n_images, RETAIN_IMAGE_STEPS, RETAIN_IMAGE_GUIDANCE, config.seed,
                               run.cache_dir, run.progress) if weight else None)
    return RetainTerm(model, session, prompts, latents, weight, start, student, encoding)


def with_retain(retain: RetainTerm | None, loss_fn):
    """`loss_fn` plus the retain term of the step (loss_fn itself when there is none)."""
    if retain is None:
        return loss_fn
    return lambda step, gen: loss_fn(step, gen) + retain(step, gen)
