"""The independent evaluator of generated images (no part of the generator or
of the guidance classifier):

- a clean-image shape classifier: a small CNN trained here on pixels of
  freshly drawn scenes (its own seed), with blur / noise / colour-shift
  augmentation so that it tolerates the softness of decoded images;
- procedural checks from pixels: background colour (median of the border),
  the shape's mask (pixels far from the background), its colour (median of
  the mask, nearest palette colour), its position (mask centroid -> 3x3 cell)
  and size (sqrt of the mask area against a per-shape threshold calibrated on
  real scenes).

`python evaluator.py` trains it and writes models/eval/ (shape_cnn.pt, a
TorchScript module, and calibration.json), then reports its accuracy on
held-out real scenes.
"""
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import shapes_data as sd
from common import EVAL_CLS_SEED, HELDOUT_N, HELDOUT_SEED, ROOT, log, lr_at, setup

EVAL_DIR = os.path.join(ROOT, "models", "eval")
STEPS = int(os.environ.get("EVAL_STEPS", "1200"))
BATCH = 64
FG_THRESHOLD = 0.2


class ShapeCNN(nn.Module):
    def __init__(self):
        super().__init__()
        chans = [3, 16, 32, 64, 64]
        layers = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, padding=1), nn.GroupNorm(8, b), nn.SiLU(),
                       nn.Conv2d(b, b, 3, padding=1, stride=2), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(64, len(sd.SHAPES))

    def forward(self, x):  # x: [B, 3, 64, 64] in [0, 1]
        return self.head(self.features(x * 2 - 1).mean(dim=(2, 3)))


def augment(x, gen):
    """Blur (random Gaussian sigma up to 1.2 px), noise and a brightness shift."""
    b = x.shape[0]
    sig = torch.rand(b, generator=gen) * 1.2
    k = torch.arange(-3, 4).float()
    out = torch.empty_like(x)
    for i in range(b):
        if sig[i] < 0.2:
            out[i] = x[i]
            continue
        w = torch.exp(-k ** 2 / (2 * sig[i] ** 2))
        w = w / w.sum()
        y = F.conv2d(F.pad(x[i:i + 1], (3, 3, 0, 0), mode="replicate"), w.view(1, 1, 1, 7).repeat(3, 1, 1, 1), groups=3)
        y = F.conv2d(F.pad(y, (0, 0, 3, 3), mode="replicate"), w.view(1, 1, 7, 1).repeat(3, 1, 1, 1), groups=3)
        out[i] = y[0]
    out = out + torch.randn(out.shape, generator=gen) * torch.rand(b, 1, 1, 1, generator=gen) * 0.05
    out = out + (torch.rand(b, 3, 1, 1, generator=gen) - 0.5) * 0.1
    return out.clamp(0, 1)


def analyse(img):
    """Procedural attributes of one image (float [64, 64, 3] in [0, 1])."""
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg = np.median(border, axis=0)
    mask = np.abs(img - bg).max(axis=2) > FG_THRESHOLD
    area = int(mask.sum())
    res = dict(background=min(sd.BACKGROUNDS, key=lambda k: np.abs(np.array(sd.BACKGROUNDS[k]) - bg).sum()),
               area=area, colour=None, pos=None)
    if area >= 8:
        fg = np.median(img[mask], axis=0)
        res["colour"] = min(sd.COLOURS, key=lambda k: np.abs(np.array(sd.COLOURS[k]) - fg).sum())
        ys, xs = np.nonzero(mask)
        row = min(2, int(ys.mean() / (sd.SIZE / 3)))
        col = min(2, int(xs.mean() / (sd.SIZE / 3)))
        res["pos"] = 3 * row + col
    return res


class Evaluator:
    def __init__(self, eval_dir=EVAL_DIR):
        self.cnn = torch.jit.load(os.path.join(eval_dir, "shape_cnn.pt"))
        self.cnn.eval()
        with open(os.path.join(eval_dir, "calibration.json")) as f:
            self.size_threshold = json.load(f)["size_threshold_sqrt_area"]

    def shapes(self, imgs):
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float()
            return [sd.SHAPES[i] for i in self.cnn(x).argmax(1).tolist()]

    def attributes(self, imgs):
        """imgs: float [N, 64, 64, 3] in [0, 1] -> one attribute dict per image."""
        out = []
        for img, shape in zip(imgs, self.shapes(imgs)):
            a = analyse(img)
            a["shape"] = shape
            a["size"] = None if a["pos"] is None else (
                "large" if np.sqrt(a["area"]) > self.size_threshold[shape] else "small")
            out.append(a)
        return out


def matches(attrs, target):
    """Per-attribute correctness against a target attribute dict (shapes_data)."""
    return {k: attrs[k] == target[k] for k in ["shape", "colour", "size", "pos", "background"]}


def main():
    setup(40)
    os.makedirs(EVAL_DIR, exist_ok=True)
    t0 = time.time()
    # size calibration on real scenes
    imgs, _, labels = sd.make_dataset(4000, EVAL_CLS_SEED + 100)
    f = imgs.astype(np.float32) / 255
    root_area = np.array([np.sqrt(analyse(x)["area"]) for x in f])
    thr = {}
    for si, s in enumerate(sd.SHAPES):
        small = root_area[(labels[:, 0] == si) & (labels[:, 2] == 0)]
        large = root_area[(labels[:, 0] == si) & (labels[:, 2] == 1)]
        thr[s] = float((np.percentile(small, 99.5) + np.percentile(large, 0.5)) / 2)
        log("evaluator", f"{s}: sqrt(area) small {small.min():.1f}-{small.max():.1f}, "
                         f"large {large.min():.1f}-{large.max():.1f} -> threshold {thr[s]:.2f}")
    # shape CNN
    model = ShapeCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(41)
    rng = np.random.default_rng(EVAL_CLS_SEED)
    for step in range(STEPS):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, STEPS, 2e-3)
        batch, lab = [], []
        for _ in range(BATCH):
            a = sd.sample_attrs(rng)
            batch.append(sd.render(a, rng))
            lab.append(sd.SHAPES.index(a["shape"]))
        x = augment(torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2), gen)
        loss = F.cross_entropy(model(x), torch.tensor(lab))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            log("evaluator", f"step {step + 1}/{STEPS} loss {loss.item():.4f} {time.time() - t0:.0f}s")
    model.eval()
    torch.jit.script(model).save(os.path.join(EVAL_DIR, "shape_cnn.pt"))
    with open(os.path.join(EVAL_DIR, "calibration.json"), "w") as fh:
        json.dump({"size_threshold_sqrt_area": thr, "fg_threshold": FG_THRESHOLD}, fh, indent=2)
        fh.write("\n")
    # held-out check on real scenes
    ev = Evaluator()
    imgs, caps, _ = sd.make_dataset(HELDOUT_N, HELDOUT_SEED)
    got = ev.attributes(imgs.astype(np.float32) / 255)
    per = {k: 0 for k in ["shape", "colour", "size", "pos", "background"]}
    allok = 0
    for a, c in zip(got, caps):
        m = matches(a, sd.parse_caption(c))
        for k in per:
            per[k] += m[k]
        allok += all(m.values())
    rep = {k: v / HELDOUT_N for k, v in per.items()}
    rep["all"] = allok / HELDOUT_N
    with open(os.path.join(EVAL_DIR, "heldout_accuracy.json"), "w") as fh:
        json.dump(rep, fh, indent=2)
        fh.write("\n")
    log("evaluator", f"held-out accuracy on {HELDOUT_N} real scenes: {rep}; {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
