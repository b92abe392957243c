"""Convolution kernels on this CPU: libtorch's choice (oneDNN for batched
float32) vs im2col + one batched GEMM, the form nodes/sd/src/conv.rs uses for
large weights with small outputs (BENCHMARKS.md, "Convolution kernels").
3x3, padding 1, batch 2 (CFG), float32; the SD1.5 U-Net's shapes at 512x512
(latent 64) and the tiny test model's. Median of N runs after a warm-up.

  python conv_kernels.py [THREADS]     (default 2; needs only torch)
"""
import sys
import time

import torch

F = torch.nn.functional
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
torch.manual_seed(0)


def median_time(f, runs):
    f()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def gemm_form(x, w, b):
    n, _, h, wd = x.shape
    co = w.shape[0]
    cols = F.unfold(x, 3, padding=1)
    bias = b.view(1, co, 1).expand(n, co, h * wd)
    return torch.baddbmm(bias, w.reshape(1, co, -1).expand(n, -1, -1), cols).view(n, co, h, wd)


print(f"{'in->out':>12} {'size':>6} {'weights':>9} {'oneDNN ms':>10} {'GEMM ms':>9} {'GEMM/oneDNN':>12}")
shapes = [(ci, co, s) for s in (8, 16, 32) for ci, co in
          ((640, 640), (1280, 1280), (2560, 1280), (1920, 1280), (1280, 640), (320, 320), (320, 640))
          if not (s == 8 and ci < 640)]
shapes += [(4, 32, 8), (32, 32, 8), (64, 64, 4), (96, 32, 8)]
with torch.inference_mode():
    for ci, co, s in shapes:
        x = torch.randn(2, ci, s, s)
        w = torch.randn(co, ci, 3, 3) / (ci * 9) ** 0.5
        b = torch.randn(co)
        runs = 5 if ci * co >= 640 * 640 else 200
        a = median_time(lambda: F.conv2d(x, w, b, padding=1), runs)
        g = median_time(lambda: gemm_form(x, w, b), runs)
        assert (gemm_form(x, w, b) - F.conv2d(x, w, b, padding=1)).abs().max() < 1e-4
        print(f"{ci:>5}->{co:<5} {s:>3}x{s:<2} {ci*co*9/1e6:>8.2f}M {a*1e3:>10.3f} {g*1e3:>9.3f} {g/a:>12.2f}", flush=True)
