"""`erasekit` command line: a thin shell over erasekit.api.

Bad input exits with status 2 and one readable line; bugs still show a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import click

import erasekit
from erasekit.errors import ErasekitError

# transformers warns at import about optional image backends the CLI never uses.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SEEDS_HELP = "seeds: '0-7', '1,5,9' or a mix"


DEVICE_FORM = re.compile(r"^(cpu|cuda|mps|xpu)(:\d+)?$")


def _device(ctx, param, value: str | None) -> str | None:
    """A torch device name, checked by form here (no torch import) and for presence when the model loads."""
    if value is not None and not DEVICE_FORM.match(value):
        raise click.BadParameter(f"{value!r} is not a device: use cpu, cuda, cuda:N, mps or xpu", param=param)
    return value


DEVICE_HELP = "torch device: cpu, cuda, cuda:N, mps (default: cuda when available, else cpu)."


def _fail(message: str) -> None:
    # One line whatever the input held: a user's '\r' or '\n' is shown escaped, not obeyed.
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message.strip())
    click.echo(f"erasekit: error: {line}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(erasekit.__version__, prog_name="erasekit")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Erase concepts from text-to-image diffusion models, and measure what is erased and what is kept.

    Models are given as a diffusers directory, a hub id from the local hub cache, a single
    .safetensors checkpoint, or `toyworld` (the built-in toy model).
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------- ls
@cli.group("ls")
def ls() -> None:
    """List what erasekit knows: methods, parameter scopes, prompt suites, detectors, attacks."""


@ls.command("methods")
def ls_methods() -> None:
    """Registered erasure methods and the model families each serves."""
    from erasekit.core.families import list_families
    from erasekit.registry import list_methods

    for spec in list_methods():
        served = [f.name for f in list_families() if set(spec.needs) <= f.capabilities]
        click.echo(f"{spec.name:8s} {spec.summary} [{', '.join(served)}]")


@ls.command("suites")
def ls_suites() -> None:
    """Prompt suites: the shipped ones, and how to name generated toy-world and I2P suites."""
    from erasekit.eval.suites import builtin_suites

    for name in builtin_suites():
        click.echo(f"{name:28s} shipped")
    click.echo(f"{'toyworld:shape=circle':28s} generated; any shape, pattern or colour, optional :anchor=shape=square")
    click.echo(f"{'path/to/i2p.csv[:sexual]':28s} I2P's CSV (prompt, sd_seed, sd_guidance_scale), optional category")
    click.echo(f"{'path/to/suite.yaml':28s} your own suite file")


@ls.command("detectors")
def ls_detectors() -> None:
    """Detectors a suite can name, with what each reads from an image."""
    from erasekit.eval.detector_names import DETECTORS

    for name, (_, summary) in DETECTORS.items():
        click.echo(f"{name:20s} {summary}")
    click.echo(f"{'clip (--clip PATH)':20s} CLIP zero-shot and clip_score from a local CLIP directory")


@ls.command("attacks")
def ls_attacks() -> None:
    """Attacks `erasekit eval --attack` runs, with the metric each reports."""
    from erasekit.eval.attack_names import ATTACKS

    for name, entry in ATTACKS.items():
        click.echo(f"{name:18s} {entry.metric:26s} {entry.description}")


@ls.command("config")
@click.argument("method")
@click.option("--model", default=None, help="model whose family's and own defaults layers apply (e.g. toyworld); "
              "none: the paper's.")
@click.option("--concept", "concepts", multiple=True, help="concept to erase (the toy world's defaults depend on "
              "its kind: shape, pattern or colour).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override, as `erasekit erase` takes.")
def ls_config(method, model, concepts, overrides):
    """The effective config of METHOD: every field, its value, the layer it comes from
    (paper < family:<family> < model:<profile> < request < set) and what it means."""
    from erasekit.defaults import family_name_of, profile_of, resolve
    from erasekit.request import parse_overrides

    layers = [("set", parse_overrides(overrides))] if overrides else []
    resolved = resolve(method, profile_of(model), list(concepts), layers, family=family_name_of(model))
    from erasekit.methods.field_help import field_help

    config_class = type(resolved.config)
    for name, value, layer in resolved.rows():
        shown = json.dumps(value) if not isinstance(value, list) or len(value) <= 4 else f"[{len(value)} items]"
        click.echo(f"{name:20s} {shown:28s} {layer:16s} {field_help(config_class, name)}")


@ls.command("families")
def ls_families() -> None:
    """Model families erasekit serves: their pipeline class, trainable components and native resolution."""
    from erasekit.core.families import list_families

    for f in list_families():
        click.echo(f"{f.name:6s} {f.description}; {f.pipeline}, components {', '.join(f.components)}, "
                   f"{f.native_resolution} px")


@ls.command("scopes")
@click.option("--family", default=None, help="only this model family's scopes (default: every family's).")
def ls_scopes(family) -> None:
    """Named parameter scopes a method may train, per model family."""
    from erasekit.core.families import get_family, list_families

    for f in [get_family(family)] if family else list_families():
        click.echo(f"{f.name}:")
        for name, text in f.scope_descriptions.items():
            click.echo(f"  {name:10s} {text}")


# --------------------------------------------------------------- generate
def model_options(fn):
    fn = click.option("--dtype", default="fp32", show_default=True, type=click.Choice(["fp32", "bf16", "fp16"]),
                      help="precision of the model's weights (an erase keeps float32 master copies of what it "
                      "trains; a VAE marked force_upcast stays float32).")(fn)
    fn = click.option("--device", default=None, callback=_device, help=DEVICE_HELP)(fn)
    fn = click.option("--config", "config", default=None,
                      help="diffusers directory or hub id with the component configs of a single-file model.")(fn)
    fn = click.option("--patch", "patches", multiple=True, type=click.Path(dir_okay=False),
                      help="erasekit patch to apply (repeatable; applied in order).")(fn)
    fn = click.option("--model", "model", default="toyworld", show_default=True,
                      help="diffusers directory, hub id, .safetensors file, or a built-in toy world: 'toyworld' or "
                      "'toyworld-wide' (256-wide text encoder) or 'toyworld-v' (v-prediction).")(fn)
    return fn


@cli.command()
@model_options
@click.option("--prompt", "prompts", multiple=True, required=True, help="prompt (repeatable).")
@click.option("--seed", "seeds", default="0-3", show_default=True, help=SEEDS_HELP)
@click.option("--steps", default=50, show_default=True, type=click.IntRange(min=1), help="DDIM steps (η = 0).")
@click.option("--guidance", default=7.5, show_default=True, type=float, help="classifier-free guidance scale.")
@click.option("--negative-prompt", default="", help="prompt for the unconditional branch.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output directory.")
def generate(model, patches, config, device, dtype, prompts, seeds, steps, guidance, negative_prompt, batch_size, out):
    """Generate images: every prompt with every seed, as PNG files plus a grid (a row per prompt)."""
    from erasekit import api

    seed_list = api.parse_seeds(seeds)
    m = api.load_model(model, patches, device=device, config=config, dtype=dtype)
    images, pairs = api.generate(m, prompts, seed_list, steps=steps, guidance=guidance,
                                 negative_prompt=negative_prompt, batch_size=batch_size)
    info = {"model": model, "patches": list(patches), "steps": steps, "guidance": guidance}
    path = api.save_images(images, pairs, out, columns=len(seed_list), info=info)
    click.echo(f"{len(pairs)} images in {path} (grid: {path / 'grid.png'})")


# ------------------------------------------------------------------ patch
@cli.group()
def patch() -> None:
    """Inspect, apply, remove, stack and export patches."""


@patch.command("info")
@click.argument("patch_file", type=click.Path(dir_okay=False))
def patch_info(patch_file):
    """Print a patch's method, config, concepts and base fingerprint as JSON."""
    from erasekit.core.patch import Patch

    click.echo(json.dumps(Patch.load(patch_file).summary(), indent=2))


@patch.command("apply")
@model_options
@click.option("--out", required=True, type=click.Path(file_okay=False), help="new pipeline directory.")
def patch_apply(model, patches, config, device, dtype, out):
    """Write MODEL with the given patches applied, as a pipeline directory that remembers them
    (so `erasekit patch remove` can take one off again exactly)."""
    from erasekit import api
    from erasekit.core.patch import export_pipeline

    if not patches:
        _fail("give at least one --patch")
    m = api.load_model(model, patches, device=device, config=config, dtype=dtype)
    click.echo(f"patched pipeline written to {export_pipeline(m, out, keep_base=True)}")


@patch.command("remove")
@click.option("--model", required=True, help="pipeline directory written by `erasekit patch apply`.")
@click.option("--patch", "patches", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="patch to take off (repeatable).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="new pipeline directory.")
def patch_remove(model, patches, out):
    """Take patches off a patched pipeline directory; with none left the weights are the base, bit for bit."""
    from erasekit import api
    from erasekit.core.patch import Patch, export_pipeline, remove

    m = api.load_model(model, device="cpu")
    for p in patches:
        remove(m, Patch.load(p))
    click.echo(f"pipeline written to {export_pipeline(m, out, keep_base=True)}")


@patch.command("stack")
@click.argument("patch_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the stacked .safetensors patch.")
def patch_stack(patch_files, out):
    """Combine several patches into one that equals applying all of them."""
    from erasekit.core.patch import Patch, stack

    click.echo(f"stacked patch written to {stack([Patch.load(p) for p in patch_files]).save(out)}")


@patch.command("export")
@model_options
@click.option("--out", required=True, type=click.Path(), help="new pipeline directory (or .safetensors file).")
@click.option("--single-file", is_flag=True,
              help="write one original-layout .safetensors checkpoint (A1111 / ComfyUI / from_single_file).")
@click.option("--format", "fmt", default="diffusers", show_default=True,
              type=click.Choice(["diffusers", "lora", "kohya"]),
              help="diffusers: the whole edited pipeline; lora: only the edit, as a LoRA directory that "
                   "`pipe.load_lora_weights(OUT)` loads on the base model; kohya: the same in the A1111 / "
                   "ComfyUI key layout (weights only: kohya files carry no biases).")
@click.option("--rank", default=None, type=click.IntRange(min=1),
              help="--format lora: keep at most this many singular values per tensor (default: full rank, exact).")
@click.option("--energy", default=None, type=click.FloatRange(min=0, max=1, min_open=True),
              help="--format lora: per tensor, the smallest rank whose singular values hold this share of ‖ΔW‖² "
                   "(e.g. 0.99).")
def patch_export(model, patches, config, device, dtype, out, single_file, fmt, rank, energy):
    """Export MODEL with patches applied as a plain diffusers pipeline (no erasekit needed to load it),
    or (--format lora) the patches alone as a LoRA for the base model."""
    from erasekit import api
    from erasekit.core.families import get_family
    from erasekit.core.ldm import save_single_file
    from erasekit.core.patch import export_pipeline
    from erasekit.defaults import family_name_of

    if fmt in ("lora", "kohya"):
        _export_lora(model, patches, config, device, dtype, out, single_file, rank, energy, kohya=fmt == "kohya")
        return
    if rank is not None or energy is not None:
        _fail("--rank and --energy belong to --format lora / kohya")
    if single_file and not out.endswith(".safetensors"):
        _fail("--single-file needs --out ending in .safetensors")
    family = get_family(family_name_of(model))
    if single_file and not family.exports_single_file:
        _fail(f"--single-file: {family.single_file_note}")
    m = api.load_model(model, patches, device=device, config=config, dtype=dtype)
    written = save_single_file(m.pipe, out) if single_file else export_pipeline(m, out, keep_base=False)
    click.echo(f"exported to {written}")


def _export_lora(model, patches, config, device, dtype, out, single_file, rank, energy, kohya: bool) -> None:
    from erasekit import api
    from erasekit.core import patch as patching
    from erasekit.core.lora import RankChoice, export_lora

    choice = RankChoice(rank=rank, energy=energy)
    if single_file:
        _fail("--single-file and --format lora are different exports; choose one")
    if not patches:
        _fail("--format lora needs at least one --patch")
    loaded = [patching.Patch.load(p) for p in patches]
    m = api.load_model(model, device=device, config=config, dtype=dtype)
    for p in loaded:
        patching.check_fingerprint(m, p)
    written = export_lora(m, loaded[0] if len(loaded) == 1 else patching.stack(loaded), out, choice, kohya=kohya)
    click.echo(f"LoRA written to {written} (load it with pipe.load_lora_weights)")


# ------------------------------------------------------------------ erase
@cli.command()
@model_options
@click.option("--method", default=None, help="erasure method id (see `erasekit ls methods`).")
@click.option("--concept", "concepts", multiple=True, help="concept to erase (repeatable).")
@click.option("--anchor", "anchors", multiple=True, help="anchor / replacement concept: one, or one per concept.")
@click.option("--preserve", "preserve", multiple=True, help="concept to keep intact (repeatable).")
@click.option("--request", "request_file", default=None, type=click.Path(dir_okay=False),
              help="YAML request (concepts, anchors, preserve, method, config); flags override it.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="method config override (repeatable).")
@click.option("--work", default=None, type=click.Path(file_okay=False),
              help="checkpoint directory; rerunning with it resumes a killed run (needs checkpoint_every).")
@click.option("--cache", default=".cache/erasekit/train-images", show_default=True, type=click.Path(file_okay=False),
              help="cache of images methods draw from the base model (anchor / concept images).")
@click.option("--gradient-checkpointing", is_flag=True,
              help="recompute activations in backward: less memory for more time (SDXL on a 24 GB GPU wants it "
              "with --dtype bf16).")
@click.option("--check/--no-check", "check", default=None,
              help="after erasing, draw a few target prompts with base and edited model on fresh seeds and "
              "report the concept's rate (default: on for the built-in toy worlds, where it costs seconds).")
@click.option("--out", required=True, type=click.Path(),
              help="patch file (.safetensors) to write; a directory for per-concept methods (sepme).")
def erase(model, patches, config, device, dtype, method, concepts, anchors, preserve, request_file, overrides, work,
          cache, gradient_checkpointing, check, out):
    """Erase concepts from MODEL with METHOD and write the result as a patch.

    The config is the method paper's defaults, overridden by the model's own (`erasekit ls config
    METHOD --model M` shows them), the request file's `config:` and then --set. Everything is validated
    before the model loads; the patch is written only when the run (and its check) finishes.
    """
    from erasekit.defaults import JOINT_LAYER, check_suite, family_name_of, profile_of, resolve_config
    from erasekit.registry import get_method
    from erasekit.request import EraseRequest, parse_overrides

    values: dict = {}
    if request_file:
        request, extra = EraseRequest.from_yaml(request_file)
        method = method or extra["method"]
        values.update(extra["config"])
        request = EraseRequest(concepts=list(concepts) or request.concepts,
                               anchors=list(anchors) or request.anchors,
                               preserve=list(preserve) or request.preserve)
    else:
        request = EraseRequest(concepts=list(concepts), anchors=list(anchors), preserve=list(preserve))
    if not method:
        _fail("give --method (or 'method:' in the request file)")
    spec = get_method(method)
    if spec.multi_patch == out.endswith(".safetensors"):
        _fail(f"--out must be a directory for {method} (one patch per concept)" if spec.multi_patch
              else f"--out must end with .safetensors, got {out!r}")
    # Paper < the family's < the model's defaults < the request file < --set; a bad value fails here,
    # before the model loads.
    from erasekit.core.families import get_family

    profile, family = profile_of(model), family_name_of(model)
    spec.check_family(get_family(family))
    cfg = resolve_config(method, profile, request, values, parse_overrides(overrides), family=family)
    spec.check_family(get_family(family), cfg.config)
    spec.check_request(request, cfg.config)
    if cfg.sources.get("steps", "").startswith(f"{JOINT_LAYER}:"):
        click.echo(f"{len(request.concepts)} concepts share the training steps: {cfg.config.steps} steps "
                   "(docs/protocol.md; --set steps=N to choose)", err=True)
    if check is None:
        check = profile is not None and all(check_suite(profile, c) for c in request.concepts)
    elif check:
        unmeasured = [c for c in request.concepts if check_suite(profile, c) is None]
        if unmeasured:
            _fail(f"--check: no built-in detector measures {unmeasured[0]!r} on this model (the check runs on the "
                  "toy worlds); use --no-check and `erasekit eval` with a suite")
    from erasekit import api
    from erasekit.core.model import load_tokenizer

    tokenizer = load_tokenizer(model, config)
    if tokenizer is not None:
        request.check_vocabulary(tokenizer)
    m = api.load_model(model, patches, device=device, config=config, dtype=dtype)
    start = time.perf_counter()
    result = api.erase(m, method, request, cfg, checkpoint_dir=work, cache_dir=cache,
                       gradient_checkpointing=gradient_checkpointing)
    seconds = time.perf_counter() - start
    made = result if isinstance(result, list) else [result]
    from erasekit.core.distributed import processes

    main_process = processes().is_main_process  # under `accelerate launch`, one process reports and writes
    change = api.change_summary(m, made)
    if main_process:
        click.echo(f"erased {', '.join(request.concepts)} with {method} in {seconds:.1f} s: {change['tensors']} "
                   f"tensors ({change['values']:,} values), relative weight change {change['relative_change']:.4g}",
                   err=True)
    if check:
        for concept in request.concepts:
            found = api.check_erasure(m, made, concept)
            if main_process:
                _report_check(found, method, made)
    if main_process:
        for path in api.save_patches(result, out):
            click.echo(f"patch written to {path}")


def _report_check(found: dict, method: str, made: list) -> None:
    """One line per checked concept; a loud one when the patch left it within noise of the base."""
    base, edited = found["base"], found["edited"]
    lo, hi = edited["ci95"]
    click.echo(f"check ({found['prompts']} target prompts x seeds {found['seeds'][0]}-{found['seeds'][-1]}): "
               f"{found['concept']} in {base['rate']:.2f} of base images -> {edited['rate']:.2f} edited "
               f"(95% CI {lo:.2f}-{hi:.2f}, n={edited['n']})", err=True)
    if found["within_noise"]:
        click.echo(f"WARNING: the patch did not measurably erase {found['concept']!r}: its rate is within noise of "
                   f"the base model's. Try a larger lr or more steps (--set lr=... --set steps=...; "
                   f"`erasekit ls config {method}` shows the current values).", err=True)
    for p in made:
        p.info.setdefault("check", []).append(found)


# ------------------------------------------------------------------- eval
@cli.command("eval")
@model_options
@click.option("--suite", required=True,
              help="suite YAML file, or built-in 'toyworld:shape=circle[:anchor=shape=square]'.")
@click.option("--seeds", default="0-3", show_default=True, help=SEEDS_HELP)
@click.option("--steps", default=35, show_default=True, type=click.IntRange(min=1), help="DDIM steps.")
@click.option("--guidance", default=7.5, show_default=True, type=float)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--cache", default=".cache/erasekit/base-images", show_default=True,
              type=click.Path(file_okay=False), help="base-image cache (keyed by model, prompts, seeds, sampler).")
@click.option("--attack-steps", default="0", show_default=True, metavar="N[,N...]",
              help="attack budget (optimisation steps; Ring-A-Bell: search generations), or a budget curve "
                   "such as 100,300,1000: each attack's rate at every budget, reported at the largest. 0: no attack.")
@click.option("--attack", default="concept-inversion", show_default=True, metavar="NAME[,NAME...]",
              help="attacks to run (erasekit ls attacks): concept-inversion, hard-prompt, unlearndiff, "
                   "ring-a-bell, p4d; several comma-separated.")
@click.option("--clip", "clip_path", default=None, type=click.Path(file_okay=False),
              help="local CLIP model directory for clip_score (skipped when not given).")
@click.option("--require", "requires", multiple=True, metavar="METRIC<=VALUE",
              help="a release gate, e.g. 'target_rate<=0.05' or 'ssim_other>=0.9' (repeatable; operators "
                   "<= >= < > ==): exit 1 with a one-line summary when one fails or was not measured.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output directory.")
def eval_command(model, patches, config, device, dtype, suite, seeds, steps, guidance, batch_size, cache, attack_steps,
                 attack, clip_path, requires, out):
    """Evaluate MODEL with its patches against MODEL alone on a prompt suite, same seeds for both.

    Writes results.json (rates with sample counts and 95% Wilson intervals, SSIM, timing) and
    grids/<group>.png (base rows above edited rows). Exit status: 0, 1 when a --require fails,
    2 for bad input.
    """
    from erasekit.eval.attack_names import parse_attacks, parse_budgets
    from erasekit.eval.requirements import failures, parse_requirement
    from erasekit.eval.suites import resolve_suite

    gates = [parse_requirement(text) for text in requires]  # bad gates fail before the model loads
    parse_attacks(attack), parse_budgets(attack_steps)
    resolve_suite(suite)
    from erasekit import api
    from erasekit.core.patch import Patch

    if clip_path is None:
        click.echo("clip_score skipped: no --clip directory given (CLIP weights are never downloaded)", err=True)
    else:
        from erasekit.eval.clip import load_clip

        load_clip(clip_path)  # a missing CLIP fails before the model loads
    loaded = [Patch.load(p) for p in patches]
    m = api.load_model(model, device=device, config=config, dtype=dtype)
    result = api.evaluate(m, loaded, suite, seeds=seeds, steps=steps, guidance=guidance, batch_size=batch_size,
                          cache_dir=cache, attack_steps=attack_steps, clip_path=clip_path, attack=attack)
    from erasekit.core.distributed import processes

    state = processes()
    if not state.is_main_process:  # under `accelerate launch` one process writes the results
        return
    path = api.save_evaluation(result, out, info={"model": model, "patches": [p.summary() for p in loaded],
                                                  "processes": state.num_processes})
    for key, value in result["metrics"].items():
        click.echo(f"{key:24s} {value:.4g}" if isinstance(value, float) else f"{key:24s} {value}")
    click.echo(f"results in {path / 'results.json'}")
    failed = failures(gates, result["metrics"])
    if failed:
        click.echo(f"erasekit: requirement failed: {'; '.join(failed)}", err=True)
        sys.exit(1)
    if gates:
        click.echo(f"requirements hold: {', '.join(map(str, gates))}")


# ----------------------------------------------------------------- report
@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--title", default="erasekit report", show_default=True)
def report(results, out, title):
    """One self-contained HTML page from `erasekit eval` results.json files or benchmark JSON files:
    a metrics table (best per column marked) and base-vs-edited image grids."""
    from erasekit.eval.report import render_report, runs_from_result_files

    click.echo(f"report written to {render_report(runs_from_result_files(results), out, title=title)}")


# ----------------------------------------------------------------- purify
@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@model_options
@click.option("--prompt", default="", help="condition for inversion and regeneration (default: ∅).")
@click.option("--steps", default=35, show_default=True, type=click.IntRange(min=1), help="DDIM steps.")
@click.option("--guidance", default=1.0, show_default=True, type=float, help="CFG scale when regenerating.")
@click.option("--invert-with", type=click.Choice(["edited", "base"]), default="edited", show_default=True,
              help="weights that invert: the patched model, or its UNet before the patches.")
@click.option("--strength", default=1.0, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="share of the DDIM steps noised (1: to pure noise; lower keeps more of the input).")
@click.option("--noise", type=click.Choice(["inversion", "random"]), default="inversion", show_default=True,
              help="reach that step by DDIM inversion (the paper), or by seeded forward noise (SDEdit).")
@click.option("--seed", default=0, show_default=True, type=int, help="first noise seed for --noise random.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="output directory.")
def purify(images, model, patches, config, device, dtype, prompt, steps, guidance, invert_with, strength, noise, seed,
           out):
    """Concept purification: DDIM-invert IMAGES with the edited model and regenerate them.

    With an All-but-One patch trained at λ = 0 on the cross-attention scope, the regenerated
    images lose the erased concept while keeping their layout (paper §5; on the toy world they do
    not, at any noise level: docs/methods/abo.md and benchmarks/results/purify_toyworld.json).
    """
    from erasekit import api

    m = api.load_model(model, patches, device=device, config=config, dtype=dtype)
    x = api.load_images(images, m.image_size)
    result = api.purify(m, x, prompt=prompt, steps=steps, guidance=guidance, invert_with=invert_with,
                        strength=strength, noise=noise, seed=seed)
    pairs = [(prompt, 0)] * len(images)
    import torch

    both = torch.cat([x, result])  # inputs in the first row, purified below
    path = api.save_images(result, pairs, out, columns=len(images),
                           info={"inputs": list(images), "patches": list(patches), "steps": steps,
                                 "guidance": guidance, "invert_with": invert_with, "strength": strength,
                                 "noise": noise, "seed": seed})
    api.image_grid(both, columns=len(images)).save(path / "before_after.png")
    click.echo(f"{len(images)} purified images in {path} (before/after: {path / 'before_after.png'})")


# --------------------------------------------------------------- toyworld
@cli.group()
def toyworld() -> None:
    """The built-in toy world: its model and classifier."""


@toyworld.command("train")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="pipeline directory to write (default: the shipped models/toyworld).")
@click.option("--work", default=".cache/toyworld-train", show_default=True, type=click.Path(file_okay=False),
              help="checkpoints and cached latents; a rerun resumes from here.")
@click.option("--threads", default=0, type=click.IntRange(min=0), help="torch CPU threads (0: torch's default).")
@click.option("--unet-steps", default=None, type=click.IntRange(min=1), help="UNet training steps.")
@click.option("--init-from", default=None, type=click.Path(file_okay=False),
              help="start the denoiser and text encoder(s) from this pipeline's weights (a fine-tune; "
              "with --arch mmdit, an MMDiT world's transformer and both CLIP encoders).")
@click.option("--text-dim", default=None, type=click.IntRange(min=8),
              help="text encoder width = UNet cross-attention width (default: the shipped world's 128).")
@click.option("--vae-from", default=None, type=click.Path(file_okay=False, exists=True),
              help="reuse this toy world's tokenizer, VAE and classifier; train only the text encoder and UNet.")
@click.option("--prediction-type", type=click.Choice(["epsilon", "v_prediction"]), default=None,
              help="what the UNet learns to predict (default: epsilon, as the shipped worlds; v_prediction: SD 2.x "
              "768's; with --init-from, fine-tunes an ε world to v).")
@click.option("--ema-decay", default=None, type=click.FloatRange(0.0, 1.0, max_open=True),
              help="EMA decay of the exported weights (default 0.9995; a short fine-tune wants a shorter "
              "memory, e.g. 0.998, or its export still averages in the initial weights).")
@click.option("--export-every", default=None, type=click.IntRange(min=1),
              help="export the EMA weights and probe fidelity every N steps (default 1000).")
@click.option("--arch", type=click.Choice(["unet", "mmdit"]), default=None,
              help="the denoiser: unet (SD 1.x/2.x, the shipped worlds) or mmdit (an SD3 pipeline: two CLIP "
              "encoders, SD3Transformer2DModel, flow matching); --unet-steps counts its steps.")
@click.option("--batch", default=None, type=click.IntRange(min=1), help="denoiser batch size (default 64).")
@click.option("--lr", default=None, type=click.FloatRange(min=0.0, min_open=True),
              help="denoiser and text encoder learning rate after warm-up (default 5e-4; a fine-tune that "
              "anneals a trained world takes a lower one).")
def toyworld_train(out, work, threads, unet_steps, init_from, text_dim, vae_from, prediction_type, ema_decay,
                   export_every, arch, batch, lr):
    """Reproduce the toy world's classifier, VAE, text encoder and UNet from scratch (seeded, resumable)."""
    import torch

    from erasekit.core.sources import toyworld_dir
    from erasekit.toyworld.train import ToyTrainConfig, train_all

    if threads:
        torch.set_num_threads(threads)
    overrides = {"unet_steps": unet_steps, "text_dim": text_dim, "prediction_type": prediction_type,
                 "ema_decay": ema_decay, "export_every": export_every, "arch": arch, "unet_batch": batch,
                 "unet_lr": lr}
    cfg = ToyTrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    target = Path(out) if out else toyworld_dir()
    train_all(target, Path(work), cfg, Path(init_from) if init_from else None, Path(vae_from) if vae_from else None)
    click.echo(f"toy world written to {target}")


# ------------------------------------------------------------------- demo
# A quarter of the other prompts, evenly spread: every shape, colour and background is still drawn (15 is
# the smallest such spread of the suite's 60); the evaluation is two thirds of the demo's time.
DEMO_OTHER_PROMPTS = 15


@cli.command()
@click.option("--out", default="outputs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--seeds", default="0-1", show_default=True, help=SEEDS_HELP)
@click.option("--erase-steps", default=None, type=click.IntRange(min=1),
              help="training steps of the erasure (default: the toy world's; see `erasekit ls config abo`).")
@click.option("--device", default=None, callback=_device, help=DEVICE_HELP)
def demo(out, seeds, erase_steps, device):
    """The main job on the built-in toy model: erase "circle" (mapped to "square") with All-but-One,
    evaluate base vs edited on the same seeds (target, synonym and other prompts; `erasekit eval` runs
    the whole suite), and write the patch, results and an HTML report."""
    from erasekit import api
    from erasekit.eval.report import render_report
    from erasekit.request import EraseRequest

    out_dir = Path(out)
    model = api.load_model("toyworld", device=device)
    click.echo("1/3 erasing 'circle' -> 'square' with abo ...", err=True)
    patch = api.erase(model, "abo", EraseRequest(concepts=["circle"], anchors=["square"]),
                      overrides={"steps": erase_steps} if erase_steps else None)
    patch_path = patch.save(out_dir / "circle.safetensors")
    click.echo("2/3 evaluating base vs edited ...", err=True)
    # The groups the demo prints (the misspelling and paraphrase prompts are `erasekit eval`'s), every target
    # prompt and a quarter of the others (each shape, colour and background still drawn): the demo stays within
    # minutes on a 2-core CPU; `erasekit eval` measures them all.
    result = api.evaluate(model, [patch], "toyworld:shape=circle:anchor=shape=square", seeds=seeds,
                          groups=["target", "synonym", "other"], prompts_per_group={"other": DEMO_OTHER_PROMPTS})
    api.save_evaluation(result, out_dir / "eval", info={"model": "toyworld", "patches": [patch.summary()]})
    click.echo("3/3 writing the report ...", err=True)
    grids = {p.stem: p for p in sorted((out_dir / "eval" / "grids").glob("*.png"))}
    page = render_report([{"name": "abo circle→square", "metrics": result["metrics"], "grids": grids}],
                         out_dir / "report.html", title="erasekit demo: erase 'circle' from the toy world")
    for key in ("target_rate_base", "target_rate", "synonym_rate", "anchor_rate", "other_accuracy", "ssim_other"):
        if key in result["metrics"]:
            click.echo(f"  {key:18s} {result['metrics'][key]:.3f}")
    click.echo(f"patch:   {patch_path}\nresults: {out_dir / 'eval' / 'results.json'}\nreport:  {page}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: usage and input errors become one line on stderr and exit status 2."""
    try:
        result = cli.main(args=argv, prog_name="erasekit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _fail("aborted")
    except click.ClickException as exc:
        _fail(exc.format_message())
    except ErasekitError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        click.echo("erasekit: interrupted", err=True)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
