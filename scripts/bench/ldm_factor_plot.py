#!/usr/bin/env python3
"""Plots samples/s against the downsampling factor f from the JSON lines of
nodes/sd/benches/ldm_factor.rs (see scripts/bench/ldm_factor.sh)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
f = [r["f"] for r in rows]
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(f, [r["samples_per_s"] for r in rows], "o-", label="samples/s (50 DDIM steps + decoder)")
ax.plot(f, [r["batch"] / (r["steps"] * r["step_s"]) for r in rows], "s--", label="U-Net only")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xticks(f, [f"f={x}\n{r['latent']}²" for x, r in zip(f, rows)])
ax.set_ylabel("samples / s (batch 4, CPU)")
ax.set_title("64x64 images: throughput vs downsampling factor")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
print("wrote", sys.argv[2])
