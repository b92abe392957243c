"""The diffusers side of scripts/bench/gpu.sh: StableDiffusionPipeline from the
same single file (configs written by load_single_file.py make), Euler, the same
size, steps and guidance (7.5, negative prompt) as graphs/txt2img_sd1.json.
Prints "FIRST_RUN_S IT_PER_S": the first run includes loading (as the first
diffgraph process does); it/s is the second generation's denoising loop
(step ends timed by callback, synchronised: (steps - 1) / (last - first))."""
import os
import sys
import time

import torch

t0 = time.perf_counter()
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline  # noqa: E402

work, device, dtype, size, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
kind = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
pipe = StableDiffusionPipeline.from_single_file(os.path.join(work, "sd15-random.safetensors"),
                                                config=os.path.join(work, "config"), local_files_only=True,
                                                torch_dtype=kind, safety_checker=None).to(device)
pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
pipe.set_progress_bar_config(disable=True)


ends = []


def on_step_end(pipe_, i, t, kwargs):
    if device == "cuda":
        torch.cuda.synchronize()
    ends.append(time.perf_counter())
    return kwargs


def generate():
    ends.clear()
    pipe("a photograph of an astronaut riding a horse", negative_prompt="blurry, low quality", height=size,
         width=size, num_inference_steps=steps, guidance_scale=7.5,
         generator=torch.Generator("cpu").manual_seed(42), output_type="np", callback_on_step_end=on_step_end)
    if device == "cuda":
        torch.cuda.synchronize()


generate()
first = time.perf_counter() - t0
generate()
print(f"{first:.2f} {(len(ends) - 1) / (ends[-1] - ends[0]):.2f}")
