"""The diffusers side of scripts/bench/sd.sh (same model, same input, same
thread count as diffgraph's side). Prints one JSON object.

  txt2img  MODEL_DIR   tiny pipeline: load time, then median generation time
                       (Euler, 20 steps, guidance 7.5, 16x24) of 5 runs
  unet     DTYPE       one guided U-Net step of an SD1.5-size U-Net with random
                       weights: batch 2 (uncond + cond), 64x64 latent, plus the
                       CFG mix; median of 3 (BENCH_STEPS) after one warm-up
                       (BENCH_WARMUP=0: none)
"""
import json
import os
import resource
import sys
import time

import torch

torch.set_num_threads(int(__import__("os").environ.get("BENCH_THREADS", "2")))


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def txt2img(model_dir):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    t = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - t
    times = []
    for seed in range(6):
        t = time.perf_counter()
        pipe("a photograph of an astronaut riding a horse", negative_prompt="blurry, low quality", height=16,
             width=24, num_inference_steps=20, guidance_scale=7.5,
             generator=torch.Generator("cpu").manual_seed(seed), output_type="pil")
        times.append(time.perf_counter() - t)
    times = sorted(times[1:])
    return {"load_s": load, "generate_s": times[len(times) // 2], "peak_rss_mib": peak_rss_mib()}


def unet(dtype):
    from diffusers import UNet2DConditionModel
    kind = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    torch.manual_seed(0)
    model = UNet2DConditionModel(cross_attention_dim=768).to(kind).eval()
    torch.manual_seed(1)
    sample = torch.randn(1, 4, 64, 64)
    cond = torch.randn(1, 77, 768)
    uncond = torch.randn(1, 77, 768)
    times = []
    # BENCH_WARMUP=0 times the first step too: a bfloat16 step on a CPU
    # without bfloat16 arithmetic takes many minutes, its warm-up as long.
    warmup = int(os.environ.get("BENCH_WARMUP", "1"))
    with torch.no_grad():
        for _ in range(int(os.environ.get("BENCH_STEPS", "3")) + warmup):
            t = time.perf_counter()
            x = torch.cat([sample, sample]).to(kind)
            ctx = torch.cat([uncond, cond]).to(kind)
            out = model(x, 981, encoder_hidden_states=ctx).sample.float()
            u, c = out.chunk(2)
            _ = u + 7.5 * (c - u)
            times.append(time.perf_counter() - t)
    times = sorted(times[warmup:])
    return {"step_s": times[len(times) // 2], "peak_rss_mib": peak_rss_mib()}


if __name__ == "__main__":
    mode, arg = sys.argv[1], sys.argv[2]
    print(json.dumps(txt2img(arg) if mode == "txt2img" else unet(arg)))
