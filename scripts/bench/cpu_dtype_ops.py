"""libtorch's CPU kernels per dtype: the SD1.5 U-Net ops that matter, in
float32 and bfloat16 (BENCHMARKS.md, "bfloat16 on a CPU without bfloat16
arithmetic"). Run with the project's Python: `.venv/bin/python
scripts/bench/cpu_dtype_ops.py [THREADS]` (default 2). Prints one line per
op: median milliseconds of 3 calls after a warm-up, each dtype. A bfloat16
convolution on a CPU without AVX-512 BF16 takes tens of seconds.
"""
import sys
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)


def median_ms(f, runs=3):
    f()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return sorted(times)[runs // 2] * 1e3


def ops(kind):
    r = lambda *s: torch.randn(*s, dtype=kind)
    x64, w320 = r(2, 320, 64, 64), r(320, 320, 3, 3)
    x32, w640 = r(2, 640, 32, 32), r(640, 640, 3, 3)
    tokens, q = r(2, 4096, 320), r(2, 8, 4096, 40)
    lin320, lin2560 = r(320, 320), r(2560, 320)
    return {
        "3x3 conv 320 -> 320 at 64x64": lambda: F.conv2d(x64, w320, padding=1),
        "3x3 conv 640 -> 640 at 32x32": lambda: F.conv2d(x32, w640, padding=1),
        "linear 8192 x 320 -> 320": lambda: F.linear(tokens, lin320),
        "linear 8192 x 320 -> 2560": lambda: F.linear(tokens, lin2560),
        "SDPA 4096 tokens, 8 heads of 40": lambda: F.scaled_dot_product_attention(q, q, q),
        "GroupNorm 320 ch at 64x64": lambda: F.group_norm(x64, 32),
    }


with torch.inference_mode():
    f32, bf16 = ops(torch.float32), ops(torch.bfloat16)
    for name in f32:
        a, b = median_ms(f32[name]), median_ms(bf16[name])
        print(f"{name} | {a:.1f} | {b:.1f} | {b / a:.2f}x")
