"""Stage 3b (runs on the second core while the LDM trains): more training of
the VAE's decoder only. The encoder is frozen, so the latents the LDM and the
latent classifier are trained on do not change; the decoder gets sharper.
Loss as in train_vae.py (shape pixels weighted x4), full 64x64 images, on
posterior samples of the frozen encoder. Output: WORK/vae_ft.pt (same format
as vae.pt, same scaling factor), used by export_model.py when present."""
import os
import time

import numpy as np
import torch

import arch
from common import WORK, load_ckpt, log, lr_at, save_ckpt, setup, to_tensor, train_set
from train_vae import fg_weight

STEPS = int(os.environ.get("DEC_STEPS", "2500"))
BATCH = 16
LR = 5e-4
SEED = 11


def main():
    setup(SEED)
    imgs, _, _ = train_set()
    base = torch.load(os.path.join(WORK, "vae.pt"), weights_only=False)
    vae = arch.make_vae()
    vae.load_state_dict(base["model"])
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p in vae.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    gen = torch.Generator().manual_seed(SEED)
    ck_path = os.path.join(WORK, "vae_dec_ckpt.pt")
    step = 0
    ck = load_ckpt(ck_path)
    if ck:
        vae.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); step = ck["step"]; gen.set_state(ck["gen"])
        log("vae_decoder", f"resumed at step {step}")
    vae.encoder.eval()
    vae.decoder.train()
    t0 = time.time()
    while step < STEPS:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, STEPS, LR, warmup=50)
        idx = torch.randint(0, len(imgs), (BATCH,), generator=gen).numpy()
        x = to_tensor(imgs[np.sort(idx)])
        with torch.no_grad():
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        err = rec - x
        loss = (fg_weight(x) * (err ** 2 + 0.5 * err.abs())).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 25 == 0:
            log("vae_decoder", f"step {step}/{STEPS} loss {loss.item():.4f} mse {(err ** 2).mean().item():.5f} "
                               f"{time.time() - t0:.0f}s")
        if step % 200 == 0 or step == STEPS:
            save_ckpt(ck_path, model=vae.state_dict(), opt=opt.state_dict(), step=step, gen=gen.get_state())
    save_ckpt(os.path.join(WORK, "vae_ft.pt"), model=vae.state_dict(), scaling_factor=base["scaling_factor"])
    log("vae_decoder", f"done {STEPS} steps, {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
