"""The toy world's layer of method defaults: what replaces the papers' SD settings on its tiny model.

The papers' settings are for SD 1.x at 512 px; a 1e-5 step barely moves the toy UNet. Each value
here was chosen on calibration seeds (benchmarks/calibrate_toyworld.py, seeds 10–13), never on the
evaluation seeds the tables report; docs/methods/ say how. Settings may depend on the kind of concept
erased (a shape, the implicit pattern, a colour), which the toy world's vocabulary tells.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from erasekit.toyworld import domain

# method -> {"*": for every concept, kind: for concepts of that kind (shape / pattern / color)}
METHOD_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    # lr and steps: benchmarks/results/calibration_abo_toyworld.json (every concept, seeds 10–13).
    # θ*'s trajectories from one pool of 24 for the whole run, 4 examples a step: the cost rule's choice over
    # two pools of 64 (calibration_abo_toyworld_pool32.json: same bars met, half the erase seconds), then over
    # one of 32 or 16 (calibration_abo_toyworld_pool16.json: 16 leaves the stripes in 0.32 of the images, over
    # the 0.30 worst bar; 24 meets the bars in fewer seconds than 32), same objective as the paper's fresh
    # walk per step (docs/methods/abo.md). Batch 4 over 2 by the same rule
    # (calibration_abo_toyworld_batch.json: 2 leaves the stripes in 0.34 of the images, over the 0.30 worst bar).
    # 300 steps over 200 / 150 at the same lr by the same rule (calibration_abo_toyworld_steps.json: stripes 0.40 /
    # 0.48); then steps with the lr scaled up, by the same rule (calibration_abo_toyworld_steps-lr.json: 300 / 4e-4,
    # 200 / 6e-4, 150 / 8e-4, 150 / 1.2e-3 all meet the bars; 150 / 8e-4 takes 14.6 s against 34.5 s, stripes
    # 0.27 worst, mean ssim_other 0.898 against 0.910).
    "abo": {"*": {"lr": 8e-4, "steps": 150, "pool_size": 24, "pool_refresh": 300, "batch_size": 4}},
    # lr and steps: benchmarks/results/calibration_ca_toyworld.json (lr 1e-3 / 200 steps, the earlier toy
    # setting, left square and triangle in 0.49 / 0.67 of the calibration images: docs/methods/ca.md).
    # retain: calibration_ca_toyworld_retain.json (0 / 0.3 / 1, every concept, the preservation rule): 0.3 keeps
    # the other images (mean ssim_other 0.919 against 0.861 without it) at mean target 0.000.
    "ca": {"*": {"lr": 3e-3, "steps": 300, "n_images": 200, "retain": 0.3}},
    # lr: benchmarks/results/calibration_esd-x_toyworld.json (1e-4 / 1.5e-4, every concept, seeds 10–13): 1.5e-4
    # (mean target 0.29 vs 0.48, ssim 0.89, accuracy drop 0.029 ≤ 0.03); no one rate erases the stripes.
    "esd": {"*": {"steps": 200, "lr": 1.5e-4}},
    # lr: benchmarks/results/calibration_sdd_toyworld.json (3e-5 / 5e-5 / 1e-4, every concept, seeds 10–13): 5e-5,
    # the only admissible point that erases at all (mean target 0.95, ssim 0.958); 1e-4 erases more (0.43) but
    # moves the other images (ssim 0.69) and their labels (accuracy drop 0.078). No one rate does both on the toy.
    "sdd": {"*": {"steps": 300, "lr": 5e-5}},
    # lr: benchmarks/results/calibration_fmn_toyworld.json (1e-5 / 3e-5, every concept, seeds 10–13): the only
    # point within the ssim bar, which erases next to nothing (mean target 0.995; 3e-5: 0.93 at ssim 0.82).
    # FMN's attention re-steering moves the toy images before it moves the concept (docs/methods/baselines.md).
    "fmn": {"*": {"steps": 35, "lr": 1e-5, "n_images": 32}},
    "sepme": {"*": {"n_images": 200, "max_steps": 800, "lr": 0.05, "beta": 1e-2, "tau_rel": -1.5}},
}
# A joint erase's steps: the library's exponent 1 (erasekit.defaults.JOINT_STEPS_EXPONENT, N × one concept's steps)
# holds here, so the toy world sets none of its own. benchmarks/results/calibration_joint_toyworld.json (the eight
# concepts of perf_concepts --quality at 2 / 4 / 8 × the steps, seeds 10–13): abo meets the every-concept bars only
# at 8× (4×: triangle 0.50); ca meets them at no scale (mean target 0.59 / 0.46 / 0.46: its shape and colour
# objectives pull the same captions towards different anchor images), so the rule took the largest.
# family -> method -> values over METHOD_DEFAULTS, for the toy worlds of another architecture (toyworld-mmdit is an
# SD3 pipeline): the UNet world's rates were chosen on a UNet and need not suit joint attention.
# Chosen on the MMDiT's calibration seeds over its Table-1 cases (circle, striped), by calibrate_toyworld.py's
# rule; where no point kept mean ssim_other ≥ 0.85 the rule takes the best-preserving one, which erases little.
FAMILY_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {"sd3": {
    # calibration_abo_toyworld-mmdit.json (scope to_out / xattn × lr 1e-3 / 3e-4 / 1e-4), _retain.json (xattn,
    # retain 0 / 1 / 10) and _xattn-kv.json (xattn-kv, retain 1, the same rates): none admissible, so the
    # best-preserving point, xattn-kv at lr 1e-4 (mean ssim_other 0.77 against xattn's best 0.76), which leaves the
    # circle in 0.79 of the calibration images; the rates that erase it (1e-3: 0.00–0.03) keep 0.65–0.76 on
    # either scope (xattn-kv 0.67). Re-measured on the shipped (annealed) weights: the same points. All at 300 steps.
    "abo": {"scope": "xattn-kv", "lr": 1e-4, "retain": 1.0, "steps": 300},
    # calibration_ca_toyworld-mmdit.json (3e-3 / 1e-3 / 3e-4): none admissible (mean ssim_other 0.782 / 0.783 /
    # 0.795), so 3e-4 (mean target 0.08).
    "ca": {"lr": 3e-4},
    # calibration_esd-x / sdd / fmn_toyworld-mmdit.json: the UNet's rates kept (1.5e-4, 5e-5, 1e-5), the only
    # admissible points; the higher ones (to 1.5e-3 / 5e-4 / 1e-3) move the other images before the target.
}}
# ESD-u trains every non-cross-attention weight: its own rate. lr: benchmarks/results/calibration_esd-u_toyworld.json
# (5e-5 / 1e-4, every concept, seeds 10–13): 1e-4 by the fixed rule (mean target 0.57 vs 0.86, mean ssim_other
# 0.850 at the bar, accuracy drop 0.007); no one rate erases most shapes without moving the other images.
VARIANT_DEFAULTS: dict[tuple[str, str, str], dict[str, Any]] = {("esd", "variant", "u"): {"lr": 1e-4}}
# family -> variant values over FAMILY_DEFAULTS (ESD-u's rate on the MMDiT)
# calibration_esd-u_toyworld-mmdit.json (3e-5 / 1e-4): none admissible, 3e-5 (mean ssim_other 0.76).
FAMILY_VARIANT_DEFAULTS: dict[str, dict[tuple[str, str, str], dict[str, Any]]] = {
    "sd3": {("esd", "variant", "u"): {"lr": 3e-5}}}
# Robust erasure's inner attack on the toy world, applied only when a request turns `robust` on (so the
# plain settings, and the patches made with them, stay as they are). Sized by cost, not by any rate:
# 10 inner steps every 10 outer steps is one extra forward + backward per step on average, about twice a
# plain erase (AdvUnlearn's 30 every step would be 31×, hours per toy patch on the CPU). The inner lr,
# warm-up and prefix length stay AdvUnlearn's: the toy token rows (mean norm 0.29) are on SD's scale.
# The retain weight γ stays AdvUnlearn's 0.3: benchmarks/results/calibration_ca_toyworld_robust_retain.json (robust ca,
# γ 0.3 / 1 / 3, circle and stripes, Concept Inversion at 500 steps, seeds 10–13) admits no point (mean ssim_other
# 0.873 / 0.809 / 0.817 against the robust rule's 0.90), so the rule takes the best-preserving one, 0.3; a larger γ
# takes the recovery down (0.23 / 0.08 / 0.03) but moves the other images more, not less.
ADVERSARY_SIZE = {"robust_every": 10, "robust_steps": 10}
# Which module a robust abo trains, by the robust rule (seeds 10–13, circle and stripes, Concept Inversion, 500 steps).
# With "a <colour> <shape>" alone held (retain_prompts without backgrounds), no grid was admissible:
# calibration_abo_toyworld_robust_retain.json (to_out, γ 0.3 / 1 / 3: mean ssim_other 0.70–0.71, recovery 0.19–0.22),
# _robust_text-encoder.json (AdvUnlearn's module, lr 1e-4 / 1e-3: 0.771 / 0.405), _robust_retain-encoding.json and
# _robust_replace.json (the text encoder at 1e-3 holding the retain prompts' encodings, retain_encoding 10 / 100, and
# 100 with the adversary in the word's place: 0.856 / 0.878 / 0.846; the circle's other images on snow moved most).
# With every word held (a robust run's retain set), _robust_retain-words.json (the text encoder at 1e-3,
# retain_encoding 0.3 / 0.5 / 1 re-attacked every 10 steps, 0.3 every step): admissible 0.3 / 0.5 / 1 (mean ssim_other
# 0.961 / 0.970 / 0.963, recovery 0.53 / 0.56 / 0.63); every step moves the stripes' other images (0.746). The lowest
# recovery among the admissible: retain_encoding 0.3, which holds the circle (0.06) and not the stripes (1.00).
# The circle wants a light hold and the stripes a strong one, so the rule is applied per kind
# (_robust_per-kind.json: the same runs and _robust_every-step.json, retain_encoding 1 / 3 re-attacked every
# step): the shapes keep 0.3 every 10 steps (circle 0.06 at 0.938); the stripes take 3 re-attacked every step
# (0.125 at 0.968; 1 every step: 0.00 at 0.891, under the bar). Every step with a strong hold leaves the
# circle (0.91 / 0.78). Those ran before the cache-layout fix (8ef76a0); after it the circle's 0.06 was 0.94 on the
# evaluation seeds (robust_toyworld.json) and 0.75–0.94 over four attack seeds (restarts_toyworld.json).
# Then the adversary in sentences (robust_contexts: the kind's 50 caption styles, the outer target the anchor's
# guidance in the same sentence; abo's own prompt is the bare word, Concept Inversion's are sentences):
# _robust_contexts.json (retain_encoding / re-attack 0.3 / 10, 3 / 1, 1 / 10): circle 0.00 / 0.62 / 0.72, stripes
# 0.38 / 0.00 / 0.12; 0.3 / 10 moves the other images (circle's ssim_other 0.854, accuracy 0.953), so by the rule,
# over both cases and per kind alike, 3 re-attacked every step (mean recovery 0.31 at ssim_other 0.967).
# _robust_concept-latents.json (the attack on the concept's own images, without sentences): circle 0.78 / 0.94 at
# 0.3 / 10 and 3 / 1, so not taken. _robust_contexts-replace.json (the adversary in the concept word's place in
# those sentences, Concept Inversion's own form, at 3 / 1): circle 0.22 at ssim_other 0.861 and accuracy 0.917,
# stripes 0.00: not admissible (mean accuracy drop 0.04), so not taken.
# Chosen on the UNet world; the MMDiT world's robust runs take the same (not calibrated there).
# Shapes, as ca's (below): that point left the circle to Concept Inversion (0.62 on the calibration seeds, 0.16 on
# the evaluation seeds, up to 0.88 over restarts), so the adversary's size was searched on the circle alone (the
# robust rule, Concept Inversion at 500): _robust_circle-tokens.json, 4 prefix tokens × 10 inner steps → 0.03 at
# ssim_other 0.958; _robust_circle-tokens-steps.json, 4 × 30 → 0.00 at 0.961. The rule takes 4 × 30.
ROBUST_ABO = {"*": {"scope": "text-encoder", "lr": 1e-3, "steps": 300, "retain_encoding": 3.0, "robust_every": 1},
              "shape": {"robust_tokens": 4, "robust_steps": 30}}
# A robust ca, by the same rule over its robust grids: calibration_ca_toyworld_robust_retain.json (xattn-kv, none
# admissible, above), _robust_text-encoder.json and _robust_text-encoder_strong.json (the text encoder at lr 1e-4 /
# 1e-3 / 3e-3, re-attacked every 10 or every step), with "a <colour> <shape>" alone held. Admissible: 1e-4 / every 10
# (mean recovery 0.95, ssim_other 0.970), 1e-3 / every 10 (0.36, 0.955), 1e-3 / every step (0.19, 0.917); 3e-3 erases
# the recovery (≤ 0.09) but moves the other images (0.82 / 0.77). With every word held: _robust_retain-words.json
# (1e-3 every step: 0.19 at 0.951; retain_encoding 1 on the circle: 0.72) and _robust_retain-words2.json (3e-3 every 10:
# 0.02 at 0.714; 2e-3 every step on the circle: 0.782), so the same point: the text encoder at 1e-3, re-attacked
# every step (10 inner steps each: about 3× a plain erase's time).
# Shapes, by the rule per kind (_robust_per-kind.json, the circle: the point above and _robust_circle*.json):
# 2e-3 holding the retain prompts' encodings at 0.3 (0.22 at 0.991); 30 inner steps close the circle (0.00) but
# move the other images (0.852), and with the encodings held they come back (0.59 / 0.66).
# That point held the circle against Concept Inversion on the evaluation seeds but not against P4D (0.78), whose
# prompts are 16 free tokens; so the adversary's size for shapes was searched against P4D (500 steps, the robust
# rule, seeds 10–13, circle): _robust_p4d.json, prefix tokens × inner steps 1 × 10 / 4 × 10 / 8 × 10 / 4 × 30 →
# 0.41 / 0.25 / 0.09 / 0.06 at ssim_other 0.98–0.99, and 4 tokens in the concept word's place 0.16 at 0.882 (not
# admissible). The rule took 4 prefix tokens with AdvUnlearn's 30 inner steps (about 3× the 10-step erase's time).
# That point met the bars at the table's attack seed but not over restarts (Concept Inversion 0.41 at one of four),
# so the size was searched again against the attacker's best over Concept Inversion and P4D, 4 restarts and budgets
# 50 / 150 / 500 (_robust_restarts.json): 4 × 30 / 8 × 30 / 16 × 30 / 8 × 30 for 600 outer steps → 0.72 / 0.22 /
# 0.19 / 0.81 at ssim_other 0.986 / 0.983 / 0.965 / 0.976. The rule takes 16 prefix tokens × 30 inner steps.
ROBUST_CA = {"*": {"scope": "text-encoder", "lr": 1e-3, "robust_every": 1},
             "shape": {"lr": 2e-3, "retain_encoding": 0.3, "robust_tokens": 16, "robust_steps": 30}}
# method -> kind of concept ("*": every kind) -> a robust run's values, as METHOD_DEFAULTS
ROBUST_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    **{m: {"*": ADVERSARY_SIZE} for m in ("esd", "sdd", "fmn", "sepme")},
    "abo": {"*": {**ADVERSARY_SIZE, **ROBUST_ABO["*"]}, "shape": ROBUST_ABO["shape"]},
    "ca": {"*": {**ADVERSARY_SIZE, **ROBUST_CA["*"]}, "shape": ROBUST_CA["shape"]}}
# Methods that train on prompts around the concept get the toy world's caption styles (its stand-in for
# Ablating Concepts' ~200 generated prompts): "a photo of a {}" alone does not reach "a red {} on snow".
# method -> (templates shared by every concept, templates per concept: concepts of different kinds at once)
CAPTION_FIELDS: dict[str, tuple[str, str]] = {"ca": ("prompt_templates", "concept_templates")}
CAPTION_KINDS = ("shape", "pattern", "color")
N_CAPTIONS = 50
# Robust runs of methods that train on the bare concept word put the adversary in the same caption styles too
# (robust_contexts): Concept Inversion's and the prompt attacks' tokens sit in sentences.
ROBUST_CONTEXT_METHODS = ("abo",)


def concepts_kind(concepts: Sequence[str]) -> str | None:
    """The one toy-world kind every concept shares ('shape', 'pattern', 'color'), else None."""
    kinds = {domain.concept_kind(c) for c in concepts}
    return kinds.pop() if len(kinds) == 1 else None


def method_defaults(method: str, concepts: Sequence[str], requested: Mapping[str, Any],
                    family: str | None = None) -> dict[str, Any]:
    """The toy world's values for `method` erasing `concepts` on a world of `family` (requested: the user's
    own values, which pick variant-specific settings such as ESD-u's rate)."""
    table = METHOD_DEFAULTS.get(method, {})
    kind = concepts_kind(concepts)
    values = {**table.get("*", {}), **table.get(kind or "", {})}
    values.update(_variant_values(VARIANT_DEFAULTS, method, requested))
    # a family's values override the UNet world's, its variant values most specifically
    values.update(FAMILY_DEFAULTS.get(family or "", {}).get(method, {}))
    values.update(_variant_values(FAMILY_VARIANT_DEFAULTS.get(family or "", {}), method, requested))
    robust_run = str(requested.get("robust", "")).lower() in ("true", "1", "yes")
    if method in ROBUST_DEFAULTS and robust_run:
        robust = ROBUST_DEFAULTS[method]
        values.update({**robust.get("*", {}), **robust.get(kind or "", {})})
        # a δ term has no sentence to follow (the config refuses both): such a run keeps the bare word
        with_delta = str(requested.get("delta", "none")) != "none" or any(
            requested.get(k) for k in ("preset", "instructions"))
        if method in ROBUST_CONTEXT_METHODS and kind in CAPTION_KINDS and not with_delta:
            values["robust_contexts"] = domain.caption_templates(N_CAPTIONS, kind)
    retained = any(_positive(requested.get(k, values.get(k))) for k in ("retain", "retain_encoding"))
    if method in ROBUST_DEFAULTS and (robust_run or retained):
        values["robust_retain_prompts"] = retain_prompts(concepts, with_backgrounds=robust_run)
    if method in CAPTION_FIELDS:
        shared, per_concept = CAPTION_FIELDS[method]
        kinds = [domain.concept_kind(c) for c in concepts]
        if kind in CAPTION_KINDS:
            values[shared] = domain.caption_templates(N_CAPTIONS, kind)
        elif all(k in CAPTION_KINDS for k in kinds) and not {shared, per_concept} & set(requested):
            values[per_concept] = [domain.caption_templates(N_CAPTIONS, k) for k in kinds]
    return values


def _variant_values(table: Mapping[tuple[str, str, str], dict[str, Any]], method: str,
                    requested: Mapping[str, Any]) -> dict[str, Any]:
    """The values `table` gives the variant `requested` picks of `method` (e.g. ESD-u's rate)."""
    values: dict[str, Any] = {}
    for (name, key, choice), extra in table.items():
        if name == method and requested.get(key) == choice:
            values.update(extra)
    return values


def _positive(value: Any) -> bool:
    """Whether a requested or layered value reads as a number > 0 (a bad one is the config's to refuse)."""
    try:
        return float(value) > 0
    except (TypeError, ValueError):
        return False


def retain_prompts(concepts: Sequence[str], with_backgrounds: bool = False) -> list[str]:
    """What the retain term (robust or plain) keeps on the toy world: "a <colour> <shape>" for every shape and
    colour the request does not erase (a shape's synonyms count as the shape; no pattern or context words,
    so erasing the stripes keeps their implicit prompts out); with_backgrounds (robust runs): also "a <shape>
    on <background>" and "a <pattern> <shape>" (patterns not erased), so that every word of the world's prompts
    is held in its place. A robust run's outer step reads an adversarial condition that can move what any word
    reads: held on "a <colour> <shape>" alone, the robust abo circle patch moved the other shapes on snow most,
    the robust ca stripes patch the solid blue square (docs/attacks.md). No retain prompt is an evaluation
    prompt: those name a colour and a background together."""
    erased = set(concepts)
    shapes = [shape for shape, words in domain.SHAPES.items() if not erased & set(words)]
    plain = [f"a {color} {shape}" for shape in shapes for color in domain.COLORS if color not in erased]
    if not with_backgrounds:
        return plain
    patterns = [p for p in domain.PATTERNS if p not in erased]
    return (plain + [f"a {shape} on {bg}" for shape in shapes for bg in domain.BACKGROUNDS]
            + [f"a {pattern} {shape}" for shape in shapes for pattern in patterns])


def check_suite(concept: str) -> str | None:
    """The generated suite that measures `concept` (a synonym counts as its shape), for the post-erase check."""
    kind = domain.concept_kind(concept)
    if kind is None or kind == "background":
        return None
    if kind == "shape":
        concept = next(name for name, words in domain.SHAPES.items() if concept in words)
    return f"toyworld:{kind}={concept}"
