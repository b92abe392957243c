"""The diffusers side of scripts/bench/unet_ops.sh: the aten ops of one
UNet2DConditionModel call (batch 2, timestep 981.0, no_grad, as the pipeline
calls it), counted two ways:

  profiler  torch.profiler (CPU activity): ops with no aten:: op above them
            ("top"), and every aten:: event ("all")
  counter   the RecordFunction counter (scripts/bench/opcount.cpp, loaded with
            ctypes), the same counter diffgraph's side is counted with

Usage: unet_ops.py OPCOUNT_SO (--folder UNET_DIR | --sd15) [--latent S]
Prints one JSON object {"profiler": {"top": {...}, "all": {...}}, "counter": {...}}.
"""
import argparse
import collections
import ctypes
import json
import os
import tempfile

import torch

torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))


def profiler_counts(call):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    top, every = collections.Counter(), collections.Counter()
    for e in prof.events():
        if not e.name.startswith("aten::"):
            continue
        every[e.name] += 1
        p = e.cpu_parent
        while p is not None and not p.name.startswith("aten::"):
            p = p.cpu_parent
        if p is None:
            top[e.name] += 1
    return {"top": dict(top), "all": dict(every)}


def counter_counts(lib, call):
    lib.opcount_reset()
    call()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        lib.opcount_dump(f.name.encode())
        return json.load(open(f.name))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("opcount_so")
    ap.add_argument("--folder")
    ap.add_argument("--sd15", action="store_true")
    ap.add_argument("--latent", type=int, default=64)
    a = ap.parse_args()
    from diffusers import UNet2DConditionModel
    if a.folder:
        model = UNet2DConditionModel.from_pretrained(a.folder).eval()
    else:
        torch.manual_seed(0)
        model = UNet2DConditionModel(cross_attention_dim=768).eval()
    ctx_dim = model.config.cross_attention_dim
    torch.manual_seed(1)
    x = torch.randn(2, 4, a.latent, a.latent)
    ctx = torch.randn(2, 77, ctx_dim)

    def call():
        with torch.no_grad():
            model(x, 981.0, encoder_hidden_states=ctx)

    call()  # warm-up: first-call set-up is not a per-step cost
    lib = ctypes.CDLL(a.opcount_so, mode=ctypes.RTLD_GLOBAL)
    counted = counter_counts(lib, call)
    print(json.dumps({"profiler": profiler_counts(call), "counter": counted}))


if __name__ == "__main__":
    main()
