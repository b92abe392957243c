"""Stage 4: the noise-aware shape classifier p(shape | z_t, t) on the VAE's
(scaled) latents, for classifier guidance (Dhariwal & Nichol 2021). x_t is
drawn exactly as the LDM's training does: x_t = sqrt(abar_t) z_0 +
sqrt(1 - abar_t) eps with abar_t = alphas_cumprod[t] of the model's scheduler
(scaled_linear, 1000 steps) and integer t uniform in [0, 999]. Exported with
torch.jit.script: forward(x_t [B,4,16,16], t float [B]) -> logits [B, 4]
(classes in shapes_data.SHAPES order). No batch statistics (GroupNorm), so
samples are classified independently. Trained on the LDM's own data set
(upright shapes), so that it judges the distribution the model samples from.
Output: models/shapes-ldm-classifier.pt (TorchScript) and a log of its
accuracy per noise level."""
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import arch
from common import ROOT, WORK, log, lr_at, setup

STEPS = int(os.environ.get("CLS_STEPS", "3000"))
BATCH = 64
LR = 2e-3
SEED = 30
OUT = os.environ.get("CLS_OUT", os.path.join(ROOT, "models", "shapes-ldm-classifier.pt"))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int):
        super().__init__()
        self.n1 = nn.GroupNorm(8, cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(temb, cout)
        self.n2 = nn.GroupNorm(8, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.c1(F.silu(self.n1(x)))
        h = h + self.t(emb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return h + self.skip(x)


class NoisyShapeClassifier(nn.Module):
    def __init__(self, ch: int = 48, n_classes: int = 4):
        super().__init__()
        self.tdim = 64
        self.temb = nn.Sequential(nn.Linear(64, 128), nn.SiLU(), nn.Linear(128, 128))
        self.conv_in = nn.Conv2d(4, ch, 3, padding=1)
        self.b1 = ResBlock(ch, ch, 128)
        self.b2 = ResBlock(ch, 2 * ch, 128)
        self.b3 = ResBlock(2 * ch, 4 * ch, 128)
        self.norm = nn.GroupNorm(8, 4 * ch)
        self.head = nn.Linear(8 * ch, n_classes)  # mean- and max-pooled features

    def forward(self, x, t):
        half = self.tdim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=x.device) / half)
        a = t.float()[:, None] * freqs[None, :]
        emb = self.temb(torch.cat([torch.cos(a), torch.sin(a)], dim=1))
        h = self.conv_in(x)
        h = self.b1(h, emb)
        h = F.avg_pool2d(h, 2)
        h = self.b2(h, emb)
        h = F.avg_pool2d(h, 2)
        h = self.b3(h, emb)
        h = F.silu(self.norm(h)).flatten(2)
        # the shape is a small object anywhere in the latent: max-pooling finds it,
        # mean-pooling alone dilutes it with background
        return self.head(torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1))


def main():
    setup(SEED)
    data = torch.load(os.path.join(WORK, "latents_ldm.pt"), weights_only=False)
    mean, std, labels, sf = data["mean"], data["std"], data["labels"][:, 0], data["scaling_factor"]
    n_val = 2000
    n = len(mean) - n_val
    ac = arch.make_scheduler().alphas_cumprod
    model = NoisyShapeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(SEED)
    t0 = time.time()

    def noisy(idx, t):
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * sf
        ab = ac[t].view(-1, 1, 1, 1)
        return ab.sqrt() * z0 + (1 - ab).sqrt() * torch.randn(z0.shape, generator=gen)

    for step in range(STEPS):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, STEPS, LR)
        idx = torch.randint(0, n, (BATCH,), generator=gen)
        t = torch.randint(0, 1000, (BATCH,), generator=gen)
        loss = F.cross_entropy(model(noisy(idx, t), t.float()), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            log("classifier", f"step {step + 1}/{STEPS} loss {loss.item():.4f} {time.time() - t0:.0f}s")
    model.eval()
    accs = []
    with torch.no_grad():
        idx = torch.arange(n, n + n_val)
        for tv in [0, 200, 400, 600, 800, 900, 999]:
            t = torch.full((n_val,), tv)
            acc = (model(noisy(idx, t), t.float()).argmax(1) == labels[idx]).float().mean().item()
            accs.append(f"t={tv}: {acc:.3f}")
    log("classifier", "held-out accuracy " + ", ".join(accs))
    scripted = torch.jit.script(model)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    scripted.save(OUT)
    log("classifier", f"saved {OUT} ({os.path.getsize(OUT) / 1e6:.2f} MB), {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
