"""Stage 1: the AutoencoderKL (64x64x3 <-> 16x16x4), trained from scratch on
the procedural scenes. Loss: per-pixel MSE + L1, with shape pixels weighted
x4 (they are a small part of each image), plus a small KL term. Resumes from
its checkpoint. Output: WORK/vae.pt (weights + latent scaling factor)."""
import os
import time

import numpy as np
import torch

import arch
from common import WORK, lr_at, load_ckpt, log, save_ckpt, setup, to_tensor, train_set

STEPS = int(os.environ.get("VAE_STEPS", "1600"))
CROP_STEPS = 1400  # first steps on random 32x32 crops (4x cheaper), then full 64x64
BATCH, CROP_BATCH, CROP = 16, 32, 32
LR = 1e-3
KL_WEIGHT = 1e-5
SEED = 10


def fg_weight(x):
    border = torch.cat([x[:, :, 0, :], x[:, :, -1, :], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
    bg = border.median(dim=2).values[:, :, None, None]
    fg = ((x - bg).abs().amax(dim=1, keepdim=True) > 0.2).float()
    return 1.0 + 3.0 * fg


def main():
    setup(SEED)
    imgs, _, _ = train_set()
    vae = arch.make_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=LR, weight_decay=0.0)
    ck_path = os.path.join(WORK, "vae_ckpt.pt")
    step = 0
    ck = load_ckpt(ck_path)
    gen = torch.Generator().manual_seed(SEED)
    if ck:
        vae.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); step = ck["step"]
        gen.set_state(ck["gen"])
        log("vae", f"resumed at step {step}")
    t0 = time.time()
    vae.train()
    while step < STEPS:
        crop = step < CROP_STEPS
        idx = torch.randint(0, len(imgs), (CROP_BATCH if crop else BATCH,), generator=gen).numpy()
        x = to_tensor(imgs[np.sort(idx)])
        if crop:  # one random crop offset (multiple of 4: the latent grid) per batch
            oy, ox = (4 * torch.randint(0, (64 - CROP) // 4 + 1, (2,), generator=gen)).tolist()
            x = x[:, :, oy:oy + CROP, ox:ox + CROP]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, STEPS, LR)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        w = fg_weight(x)
        err = rec - x
        rec_loss = (w * (err ** 2 + 0.5 * err.abs())).mean()
        kl = post.kl().mean() / z[0].numel()
        loss = rec_loss + KL_WEIGHT * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 25 == 0:
            log("vae", f"step {step}/{STEPS} loss {loss.item():.4f} rec {rec_loss.item():.4f} kl {kl.item():.2f} "
                       f"mse {(err ** 2).mean().item():.5f} zstd {post.mean.std().item():.3f} "
                       f"poststd {post.std.mean().item():.3f} {time.time() - t0:.0f}s")
        if step % 200 == 0 or step == STEPS:
            save_ckpt(ck_path, model=vae.state_dict(), opt=opt.state_dict(), step=step, gen=gen.get_state())
    # latent statistics -> scaling factor (1 / std of the posterior means, as SD)
    vae.eval()
    with torch.no_grad():
        zs = torch.cat([vae.encode(to_tensor(imgs[i:i + 100])).latent_dist.mean for i in range(0, 2000, 100)])
    sf = float(1.0 / zs.std())
    log("vae", f"done: latent mean {zs.mean():.4f} std {zs.std():.4f} -> scaling_factor {sf:.5f}; {time.time() - t0:.0f}s")
    save_ckpt(os.path.join(WORK, "vae.pt"), model=vae.state_dict(), scaling_factor=sf)


if __name__ == "__main__":
    main()
