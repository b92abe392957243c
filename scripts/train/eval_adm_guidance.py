#!/usr/bin/env python3
"""Classifier-guidance scale study of the small pixel-space ADM
(models/adm-shapes/, trained by scripts/train/train_adm_shapes.py), generated
THROUGH diffgraph: graphs/adm_classifier_guided.json with --set (model.path,
model.flags, classifier.path, classifier.flags, label.value, scale.value,
schedule.respacing, schedule.use_ddim, noise.seed, schedule.seed,
save.filename), i.e. guided-diffusion's classifier_sample.py as a graph:
the class-conditional model plus the noisy classifier, DDPM with the
learned-range variance and condition_mean (or DDIM with condition_score).

For each scale s in SCALES, one run of PER_CLASS samples of each of the 4
shape classes (the same seeds at every s). Scored by the project's
independent evaluator (scripts/train/evaluator.py; the 32x32 samples are
upsampled bilinearly to its 64x64): target-class accuracy of its shape CNN,
diversity = mean pairwise RMS pixel distance within a class, and the entropy
of the procedural colour reading (an attribute the classifier does not
target). The evaluator's accuracy on real 32x32 scenes, upsampled the same
way, is measured too (its ceiling at this resolution).

Writes the section between the ADM markers of docs/guidance_study.md,
docs/img/adm_guidance_grid.png and docs/img/adm_guidance_study.json.

    PY scripts/train/eval_adm_guidance.py [--per-class N] [--respacing 50] [--ddim]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapes_data as sd  # noqa: E402
from eval_guidance import diversity, entropy, grid  # noqa: E402
from evaluator import Evaluator, analyse  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("DIFFGRAPH_BIN", os.path.join(ROOT, "target", "release", "diffgraph"))
MODELS = os.path.join(ROOT, "models", "adm-shapes")
IMG = os.path.join(ROOT, "docs", "img")
DOC = os.path.join(ROOT, "docs", "guidance_study.md")
SCALES = [0, 1, 3, 10]
NOISE_SEED, SCHEDULE_SEED = 1, 2
BEGIN, END = "<!-- ADM-STUDY:BEGIN -->", "<!-- ADM-STUDY:END -->"


def generate(labels, scale, respacing, ddim, threads):
    with tempfile.TemporaryDirectory() as out:
        sets = {
            "model.path": os.path.join(MODELS, "model.pt"),
            "model.flags": os.path.join(MODELS, "model.json"),
            "classifier.path": os.path.join(MODELS, "classifier.pt"),
            "classifier.flags": os.path.join(MODELS, "classifier.json"),
            "label.value": json.dumps(labels),
            "scale.value": json.dumps(float(scale)),
            "schedule.respacing": respacing,
            "schedule.use_ddim": json.dumps(ddim),
            "noise.seed": str(NOISE_SEED),
            "schedule.seed": str(SCHEDULE_SEED),
            "save.filename": "samples.safetensors",
        }
        cmd = [BIN, "run", os.path.join(ROOT, "graphs", "adm_classifier_guided.json"), "--quiet",
               "--out", out, "--threads", str(threads)]
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v}"]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        from safetensors.torch import load_file
        x = load_file(os.path.join(out, "samples.safetensors"))["samples"]
    return x


def to_eval(x):
    """[-1, 1] NCHW 32x32 -> [0, 1] NHWC 64x64 (bilinear), the evaluator's input."""
    x = ((x.float() + 1) / 2).clamp(0, 1)
    x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).numpy()


def real_scenes(n, seed=99):
    """Real upright large-shape scenes at 32x32 (as the ADM's data), per class."""
    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    for _ in range(n):
        a = sd.sample_attrs(rng)
        a["size"] = "large"
        im = sd.render(a, rng, rotate=False)
        imgs.append(im.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)))
        labels.append(sd.SHAPES.index(a["shape"]))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2) * 2 - 1
    return x, np.array(labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=16)
    ap.add_argument("--respacing", default="50")
    ap.add_argument("--ddim", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    ev = Evaluator()
    k = len(sd.SHAPES)
    labels = [c for c in range(k) for _ in range(args.per_class)]
    y = np.array(labels)
    rows, res = [], {"per_class": args.per_class, "respacing": args.respacing, "ddim": args.ddim,
                     "noise_seed": NOISE_SEED, "schedule_seed": SCHEDULE_SEED, "scales": {}}
    xr, yr = real_scenes(400)
    real = to_eval(xr)
    pred = np.array([sd.SHAPES.index(s) for s in ev.shapes(real)])
    res["real"] = {"accuracy": float((pred == yr).mean()),
                   "diversity": float(np.mean([diversity(real[yr == c][:args.per_class]) for c in range(k)])),
                   "colour_entropy": entropy([analyse(im)["colour"] for im in real])}
    print(f"real 32x32 scenes: evaluator accuracy {res['real']['accuracy']:.3f}", flush=True)
    for s in SCALES:
        t0 = time.time()
        x = generate(labels, s, args.respacing, args.ddim, args.threads)
        imgs = to_eval(x)
        pred = np.array([sd.SHAPES.index(p) for p in ev.shapes(imgs)])
        per = {sd.SHAPES[c]: float((pred[y == c] == c).mean()) for c in range(k)}
        r = {"accuracy": float((pred == y).mean()), "per_class": per,
             "diversity": float(np.mean([diversity(imgs[y == c]) for c in range(k)])),
             "colour_entropy": entropy([analyse(im)["colour"] for im in imgs]),
             "seconds": time.time() - t0}
        res["scales"][str(s)] = r
        print(f"s={s}: accuracy {r['accuracy']:.3f} {per} diversity {r['diversity']:.3f} "
              f"colour entropy {r['colour_entropy']:.2f} ({r['seconds']:.0f} s)", flush=True)
        rows.append(imgs[[c * args.per_class + j for c in range(k) for j in range(2)]])
    os.makedirs(IMG, exist_ok=True)
    grid(rows, [f"s={s}" for s in SCALES], os.path.join(IMG, "adm_guidance_grid.png"))
    with open(os.path.join(IMG, "adm_guidance_study.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    write_doc(res)


def write_doc(r):
    n = r["per_class"] * len(sd.SHAPES)
    mode = f"DDIM `ddim{r['respacing']}`" if r["ddim"] else f"DDPM, respacing \"{r['respacing']}\""
    lines = [BEGIN, "",
             f"{n} images per scale ({r['per_class']} per class), {mode}, noise.seed {r['noise_seed']}, "
             f"schedule.seed {r['schedule_seed']}:", "",
             "| s | target-class accuracy | circle | square | triangle | star | pixel diversity | colour entropy (bits) |",
             "|---|---|---|---|---|---|---|---|"]
    for s, v in r["scales"].items():
        p = v["per_class"]
        lines.append(f"| {s} | {v['accuracy']:.1%} | {p['circle']:.0%} | {p['square']:.0%} | "
                     f"{p['triangle']:.0%} | {p['star']:.0%} | {v['diversity']:.3f} | {v['colour_entropy']:.2f} |")
    rr = r["real"]
    lines += ["", f"Real 32x32 scenes (400, upsampled the same way): evaluator accuracy {rr['accuracy']:.1%}, "
                  f"pixel diversity {rr['diversity']:.3f}, colour entropy {rr['colour_entropy']:.2f} bits.", "",
              "![ADM samples per scale: two of each class, circle, square, triangle, star]"
              "(img/adm_guidance_grid.png)", "", END]
    text = open(DOC).read()
    block = "\n".join(lines)
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(DOC, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
