"""Reference for an SD1.5-size U-Net parity check (scripts/bench/unet_parity.sh):
saves diffusers' UNet2DConditionModel with random weights (seed 0) as a
diffusers folder, and one batch-2 input with diffusers' output, fp32, so that
diffgraph's U-Net (including its im2col + GEMM convolutions, which only
models of this size take) can be compared with diffusers on the same weights.

  python unet_parity.py OUT_DIR [LATENT]   (default latent 32: levels 32, 16, 8, 4)
"""
import sys

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

out_dir = sys.argv[1]
latent = int(sys.argv[2]) if len(sys.argv) > 2 else 32
torch.manual_seed(0)
model = UNet2DConditionModel(cross_attention_dim=768).eval()
model.save_pretrained(f"{out_dir}/unet", safe_serialization=True)
torch.manual_seed(1)
x = torch.randn(2, 4, latent, latent)
ctx = torch.randn(2, 77, 768)
with torch.no_grad():
    out = model(x, 981, encoder_hidden_states=ctx).sample
save_file({"x": x, "ctx": ctx, "out": out.contiguous()}, f"{out_dir}/io.safetensors")
print(f"saved {out_dir}: output max abs {out.abs().max().item():.3f}")
