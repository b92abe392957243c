"""diffusers' side of scripts/bench/sdxl_unet.sh: one guided step (batch 2) of an
SDXL-size UNet2DConditionModel with random weights, 128x128 latent, in
`sys.argv[1]` (fp32 or bf16); prints one JSON line (seconds, peak RSS MiB)."""
import json
import os
import sys
import time

import torch
from diffusers import UNet2DConditionModel

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
kind = {"fp32": torch.float32, "bf16": torch.bfloat16}[sys.argv[1]]
config = json.load(open(os.path.join(os.path.dirname(__file__), "sdxl_unet_config.json")))
t0 = time.time()
with torch.device("meta"):
    unet = UNet2DConditionModel(**config)
unet = unet.to_empty(device="cpu").to(kind)
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for p in unet.parameters():
        p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.ndim == 1 else p[0].numel() ** -0.5))
build = time.time() - t0
x = torch.randn(2, 4, 128, 128, generator=g).to(kind)
ctx = torch.randn(2, 77, 2048, generator=g).to(kind)
added = {"text_embeds": torch.randn(2, 1280, generator=g).to(kind),
         "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * 2).to(kind)}
with torch.no_grad():
    t0 = time.time()
    out = unet(x, 981.0, encoder_hidden_states=ctx, added_cond_kwargs=added).sample
    step = time.time() - t0
assert torch.isfinite(out.float()).all()
rss = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"side": "diffusers", "kind": sys.argv[1], "init_s": build, "step_s": step, "peak_rss_mib": int(rss) / 1024}))
