"""What a real-sized erase costs: seconds per training step and peak memory, per method and precision.

A pipeline of the real shape with random weights is built here (nothing downloads):
- `--family sdxl`: UNet block channels (320, 640, 1280), transformer depths (1, 2, 10), `text_time`
  addition embedding (256 · 6 + 1280), CLIP-L-sized (768, 12 layers) and OpenCLIP-bigG-sized (1280,
  32 layers, projection 1280) text encoders over 77 tokens, the SDXL VAE layout;
- `--family sd15`: UNet block channels (320, 640, 1280, 1280), CLIP-L-sized text encoder (768), the
  SD VAE layout.
Each (method, precision) runs in its own process, so that its peak resident memory is its own and a
run that does not fit the machine is recorded as such (the process is killed; the others go on):
fp32, fp32 + gradient checkpointing, bf16, bf16 + gradient checkpointing. Every run is a short erase
at --resolution px with 2-step trajectories: abo (scope to_out, batch 1), esd (ESD-x, the student's
own sampling), ca (one anchor image) — or `student`, the plain forward + backward of the student on
to_out that every step costs at least. The first step (which also walks trajectories or draws images)
is timed apart from the others.

On a GPU (--device cuda) it records peak CUDA memory as well. On a CPU the run first measures the
machine's matrix-multiply throughput per dtype (`matmul_gflops`): a CPU without native bf16 (AVX2
only) emulates it dozens of times slower than fp32, and a reduced-precision row whose throughput is
under 1/--emulated-ratio of fp32's is not run; its record gives the measured rates and the step time
that rate implies from the fp32 row of the same method (hours for an SDXL step): that is the
measurement. Writes benchmarks/results/families_cost.json (SDXL) or families_cost_<family>.json
(format: ../shared/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from erasekit.eval.results import write_result

RESULTS = Path(__file__).resolve().parent / "results"
PRECISIONS = {"fp32": ("fp32", False), "fp32+checkpointing": ("fp32", True), "bf16": ("bf16", False),
              "bf16+checkpointing": ("bf16", True)}
# method -> (request concepts, anchors, config of a short erase with 2-step trajectories)
METHODS = {
    "abo": (["circle"], ["square"], {"sampling_steps": 2, "t_warmup": 0, "lr": 1e-5, "pool_size": 1,
                                     "batch_size": 1}),
    "esd": (["circle"], [], {"sampling_steps": 2, "lr": 1e-5}),
    "ca": (["circle"], ["thing"], {"n_images": 1, "image_steps": 2, "batch_size": 1, "lr": 1e-5}),
    "student": (["circle"], [], {}),
}


def build_sdxl(tokenizer_dir: Path, resolution: int):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77)
    unet = UNet2DConditionModel(
        sample_size=resolution // 8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                                                                "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
        cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=256 * 6 + 1280,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=resolution, scaling_factor=0.13025,
    )

    def clip(hidden, layers, heads, projection, cls):
        return cls(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden,
                                  num_hidden_layers=layers, num_attention_heads=heads, projection_dim=projection,
                                  max_position_embeddings=77, hidden_act="gelu", bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))

    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionXLPipeline(
        vae=vae, unet=unet, scheduler=scheduler, tokenizer=tokenizer, tokenizer_2=tokenizer,
        text_encoder=clip(768, 12, 12, 768, CLIPTextModel),
        text_encoder_2=clip(1280, 32, 20, 1280, CLIPTextModelWithProjection),
    )


def build_sd15(tokenizer_dir: Path, resolution: int):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77)
    unet = UNet2DConditionModel(sample_size=resolution // 8, block_out_channels=(320, 640, 1280, 1280),
                                cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=resolution,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, unet=unet, scheduler=scheduler, tokenizer=tokenizer,
                                   text_encoder=text_encoder, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


BUILDERS = {"sdxl": build_sdxl, "sd15": build_sd15}


def student_steps(model, steps: int, checkpointing: bool, tick) -> None:
    """The plain student step: ε(x_t, c) on to_out, MSE to a fixed target, backward, AdamW step."""
    import torch

    from erasekit.core.edit import EditSession

    with EditSession(model, "to_out") as session:
        if checkpointing:
            session.enable_gradient_checkpointing()
        optimizer = torch.optim.AdamW(session.params.values(), lr=1e-5)
        cond = model.encode(["circle"])
        gen = torch.Generator().manual_seed(0)
        for step in range(steps):
            x = torch.randn((1, *model.latent_shape), generator=gen).to(model.device)
            with model.autocast():
                loss = model.eps(x, torch.tensor([500]), cond).float().pow(2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tick(step, None)


def matmul_gflops(dtype: str, size: int = 1024, repeats: int = 5) -> float:
    """Measured throughput of one (size × 1280) @ (1280 × 1280) product in `dtype` on this CPU thread
    setting (median of `repeats`): the shape of an SDXL attention projection over a 32 × 32 latent."""
    import statistics

    import torch

    from erasekit import api

    a = torch.randn(size, 1280, dtype=api.DTYPES[dtype])
    b = torch.randn(1280, 1280, dtype=api.DTYPES[dtype])
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size * 1280 * 1280 / statistics.median(times) / 1e9


def emulated_skip(rates: dict[str, float], dtype: str, ratio: float, fp32: tuple[str, float] | None) -> str | None:
    """Why a `dtype` row is not run on this CPU (its matmuls are emulated), or None to run it."""
    if rates[dtype] * ratio >= rates["fp32"]:
        return None
    slower = rates["fp32"] / rates[dtype]
    implied = ""
    if fp32:
        seconds = fp32[1] * slower
        duration = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
        implied = (f"; at that rate one step would take about {duration} (the {fp32[0]} row's {fp32[1]:.0f} s "
                   f"× {slower:.0f})")
    return (f"not run: {dtype} matmul on this CPU runs at {rates[dtype]:.2f} GFLOPS against {rates['fp32']:.1f} "
            f"for fp32 ({slower:.0f}× slower: no native {dtype}, emulated){implied}")


def run_one(family: str, method: str, dtype: str, checkpointing: bool, resolution: int, steps: int,
            device: str) -> dict:
    """One (method, precision), in this process: build, train `steps` steps, report times and peaks."""
    import torch

    from erasekit import api
    from erasekit.core.model import DiffusionModel
    from erasekit.request import EraseRequest
    from erasekit.toyworld.tokenizer import save_tokenizer

    with tempfile.TemporaryDirectory() as tok:
        save_tokenizer(Path(tok))
        start = time.perf_counter()
        pipe = BUILDERS[family](Path(tok), resolution)
    for name in ("unet", "text_encoder", "text_encoder_2", "vae"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).to(device=device, dtype=api.DTYPES[dtype])
    model = DiffusionModel(pipe)
    build_seconds = time.perf_counter() - start
    params = sum(p.numel() for p in pipe.unet.parameters())
    times: list[float] = []
    last = [time.perf_counter()]

    def tick(step, trainer):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    concepts, anchors, config = METHODS[method]
    last[0] = time.perf_counter()
    if method == "student":
        student_steps(model, steps, checkpointing, tick)
    else:
        api.erase(model, method, EraseRequest(concepts, anchors), {**config, "steps": steps}, progress=False,
                  callback=tick, callback_every=1, gradient_checkpointing=checkpointing)
    out = {"unet_params": params, "build_seconds": round(build_seconds, 1),
           "first_step_seconds": round(times[0], 2),
           "seconds_per_step": round(sum(times[1:]) / max(1, len(times) - 1), 2),
           "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    if device.startswith("cuda"):
        out["peak_cuda_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="sdxl", choices=sorted(BUILDERS))
    parser.add_argument("--methods", default="abo", help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--resolution", type=int, default=512, help="image size in px (SDXL's native: 1024)")
    parser.add_argument("--steps", type=int, default=3, help="abo steps per run (the first also walks the pool)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--emulated-ratio", type=float, default=8.0,
                        help="on a CPU, skip a dtype whose measured matmul throughput is under 1/RATIO of fp32's")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one precision, print JSON
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one:
        method, label = args.one.split(":")
        dtype, checkpointing = PRECISIONS[label]
        print(json.dumps(run_one(args.family, method, dtype, checkpointing, args.resolution, args.steps,
                                 args.device)), flush=True)
        return
    runs = []
    todo = [(m, label) for m in args.methods.split(",") for label in args.precisions.split(",")]
    name = "families_cost" if args.family == "sdxl" else f"families_cost_{args.family}"
    dtypes = sorted({"fp32", *(PRECISIONS[label][0] for _, label in todo)})
    rates = {d: round(matmul_gflops(d), 2) for d in dtypes} if args.device == "cpu" else {}
    extra = {"matmul_gflops": rates} if rates else {}
    for method, label in todo:
        dtype, checkpointing = PRECISIONS[label]
        fp32 = next(((r["precision"], r["metrics"]["seconds_per_step"]) for r in runs
                     if r["method"] == method and r["dtype"] == "fp32" and r["status"] == "ok"), None)
        skip = emulated_skip(rates, dtype, args.emulated_ratio, fp32) if rates else None
        if skip:
            runs.append({"family": args.family, "method": method, "precision": label, "dtype": dtype,
                         "gradient_checkpointing": checkpointing, "resolution": args.resolution, "status": skip,
                         "metrics": {}})
            print(method, label, skip, flush=True)
            write_result(name, runs, out_dir=args.out, extra={**extra, "complete": len(runs) == len(todo)})
            continue
        child = subprocess.run([sys.executable, __file__, "--one", f"{method}:{label}", "--family", args.family,
                                "--resolution", str(args.resolution), "--steps", str(args.steps), "--device",
                                args.device, "--threads", str(args.threads)], capture_output=True, text=True)
        lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
        if child.returncode == 0 and lines:
            metrics, status = json.loads(lines[-1]), "ok"
        else:
            killed = child.returncode in (-9, 137)
            metrics = {}
            status = ("out of memory (killed)" if killed else
                      f"failed (exit {child.returncode}): {(child.stderr.strip().splitlines() or [''])[-1][:200]}")
        runs.append({"family": args.family, "method": method, "precision": label, "dtype": dtype,
                     "gradient_checkpointing": checkpointing, "resolution": args.resolution, "status": status,
                     "metrics": metrics})
        print(method, label, status, metrics, flush=True)
        write_result(name, runs, out_dir=args.out, extra={**extra, "complete": len(runs) == len(todo)})


if __name__ == "__main__":
    main()
