"""Stage 3: the UNet2DConditionModel and the CLIP text encoder, trained jointly
from scratch on the VAE latents (epsilon prediction, SD's scaled_linear
schedule, Min-SNR-5 loss weighting, 10% caption dropout to the empty prompt
for classifier-free guidance, EMA of the weights). Resumes from its
checkpoint. Output: WORK/ldm.pt (EMA weights)."""
import copy
import os
import time

import numpy as np
import torch

import arch
from common import WORK, ldm_set, load_ckpt, log, lr_at, save_ckpt, setup

STEPS = int(os.environ.get("LDM_STEPS", "3600"))
BATCH = 48
LR = 1e-3
DROP = 0.10
SNR_GAMMA = 5.0
SEED = 20
# Loss weight of the latent pixels covered by the shape (the rest is flat
# background, learned early); >1 strengthens the signal of shape and position.
FG_WEIGHT = float(os.environ.get("LDM_FG_WEIGHT", "1"))
TAG = os.environ.get("LDM_TAG", "")
# Floor of the loss weight in x0 terms: epsilon-MSE weighs x0 errors by the SNR,
# which is ~0.01-0.1 at the high noise levels where the layout (the position
# words) is decided; Min-SNR's weight min(snr, 5)/snr keeps that. With a floor
# F the epsilon weight is max(min(snr, 5), F)/snr.
SNR_FLOOR = float(os.environ.get("LDM_SNR_FLOOR", "0"))
# Auxiliary loss on the text encoder: linear heads predict the caption's five
# attributes (shape, colour, size, position, background; a function of the
# caption text) from the mean of its 77 output states. Without it the
# position words never reached the U-Net (a U-Net fed an oracle position
# embedding learned position in 100 steps; through the jointly trained CLIP
# encoder it had not after 2800). The heads are not part of the model.
AUX_WEIGHT = float(os.environ.get("LDM_AUX_WEIGHT", "0.1"))
AUX_CLASSES = [4, 5, 2, 9, 4]
# Phase 2: after STEPS steps, PHASE2_STEPS more at a low learning rate with
# half of the captions dropped. With 10% dropout the conditional samples were
# right (CFG adherence 91-94%) but the unconditional ones, which classifier
# guidance starts from, were mostly small shapeless blobs. (3000 phase-2 steps
# traded CFG adherence for classifier-guided accuracy, within the study's
# noise: docs/guidance_study.md.)
PHASE2_STEPS = int(os.environ.get("LDM_PHASE2_STEPS", "1000"))
PHASE2_DROP = 0.5
PHASE2_LR = 2e-4


def fg_latent_mask(imgs_u8):
    """1 where a 4x4 pixel cell of the image touches the shape (16x16 per image)."""
    out = []
    for i in range(0, len(imgs_u8), 1000):
        x = torch.from_numpy(imgs_u8[i:i + 1000].astype(np.float32) / 255).permute(0, 3, 1, 2)
        border = torch.cat([x[:, :, 0, :], x[:, :, -1, :], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
        bg = border.median(dim=2).values[:, :, None, None]
        m = ((x - bg).abs().amax(dim=1, keepdim=True) > 0.2).float()
        out.append(torch.nn.functional.max_pool2d(m, 4))
    return torch.cat(out)


def ema_update(ema, model, decay):
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def main():
    setup(SEED)
    data = torch.load(os.path.join(WORK, "latents_ldm.pt"), weights_only=False)
    mean, std, ids, empty, sf = data["mean"], data["std"], data["ids"], data["empty"], data["scaling_factor"]
    n = len(mean)
    if FG_WEIGHT != 1:
        weight_map = 1 + (FG_WEIGHT - 1) * fg_latent_mask(ldm_set()[0][:n])
    unet, te = arch.make_unet(), arch.make_text_encoder()
    heads = torch.nn.ModuleList([torch.nn.Linear(arch.CLIP["hidden_size"], k) for k in AUX_CLASSES])
    labels = data["labels"]
    params = list(unet.parameters()) + list(te.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    ema_u, ema_t = copy.deepcopy(unet), copy.deepcopy(te)
    alphas_cumprod = arch.make_scheduler().alphas_cumprod
    gen = torch.Generator().manual_seed(SEED)
    ck_path = os.path.join(WORK, f"ldm{TAG}_ckpt.pt")
    step = 0
    ck = load_ckpt(ck_path)
    if ck:
        unet.load_state_dict(ck["unet"]); te.load_state_dict(ck["te"]); heads.load_state_dict(ck["heads"])
        ema_u.load_state_dict(ck["ema_u"]); ema_t.load_state_dict(ck["ema_t"])
        opt.load_state_dict(ck["opt"]); gen.set_state(ck["gen"]); step = ck["step"]
        log(f"ldm{TAG}", f"resumed at step {step}")
    unet.train(); te.train()
    t0, run = time.time(), 0.0
    total = STEPS + PHASE2_STEPS
    while step < total:
        phase2 = step >= STEPS
        for g in opt.param_groups:
            g["lr"] = lr_at(step - STEPS, PHASE2_STEPS, PHASE2_LR, warmup=0) if phase2 else lr_at(step, STEPS, LR, warmup=200)
        idx = torch.randint(0, n, (BATCH,), generator=gen)
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * sf
        tok = ids[idx].clone()
        drop = torch.rand(BATCH, generator=gen) < (PHASE2_DROP if phase2 else DROP)
        tok[drop] = empty[0]
        t = torch.randint(0, 1000, (BATCH,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        ab = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * z0 + (1 - ab).sqrt() * noise
        ctx = te(tok).last_hidden_state
        pred = unet(xt, t, ctx).sample
        snr = ab.view(-1) / (1 - ab.view(-1))
        w = torch.clamp(torch.clamp(snr, max=SNR_GAMMA), min=SNR_FLOOR) / snr
        sq = (pred - noise) ** 2
        if FG_WEIGHT != 1:
            sq = sq * weight_map[idx]
        loss = (w * sq.mean(dim=(1, 2, 3))).mean()
        if AUX_WEIGHT > 0 and not bool(drop.all()):
            pooled = ctx[~drop].mean(dim=1)
            lab = labels[idx][~drop]
            aux = sum(torch.nn.functional.cross_entropy(h(pooled), lab[:, j]) for j, h in enumerate(heads)) / len(heads)
            loss = loss + AUX_WEIGHT * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(0.999, (1 + step) / (10 + step))
        ema_update(ema_u, unet, decay)
        ema_update(ema_t, te, decay)
        run = 0.98 * run + 0.02 * loss.item() if step > 1 else loss.item()
        if step % 25 == 0:
            log(f"ldm{TAG}", f"step {step}/{total} loss {loss.item():.4f} avg {run:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                       f"{time.time() - t0:.0f}s")
        if step % 200 == 0 or step in (STEPS, total):
            save_ckpt(ck_path, unet=unet.state_dict(), te=te.state_dict(), heads=heads.state_dict(), ema_u=ema_u.state_dict(),
                      ema_t=ema_t.state_dict(), opt=opt.state_dict(), gen=gen.get_state(), step=step)
    save_ckpt(os.path.join(WORK, f"ldm{TAG}.pt"), unet=ema_u.state_dict(), te=ema_t.state_dict(), step=step)
    log(f"ldm{TAG}", f"done {step} steps, {time.time() - t0:.0f}s this run")


if __name__ == "__main__":
    main()
