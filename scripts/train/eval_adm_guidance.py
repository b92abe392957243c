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
shape classes (the same seeds at every s, so the scales are paired sample by
sample). Scored by the project's independent evaluator
(scripts/train/evaluator.py; the 32x32 samples are upsampled bilinearly to its
64x64): target-class accuracy of its shape CNN with a 95% Wilson interval, the
paired change against s = 0 (samples that became right / wrong), the CNN's
mean probability of the target class, and the diversity cost: mean pairwise
RMS pixel distance within a class, and the entropies of the procedural colour
and background readings (attributes the classifier does not target). The
evaluator's accuracy on real 32x32 scenes, upsampled the same way, is
measured too (its ceiling at this resolution), and the guidance classifier's
accuracy by noise level is read from models/adm-shapes/classifier_accuracy.json
(written by train_adm_shapes.py export).

Writes the section between the ADM markers of docs/guidance_study.md,
docs/img/adm_guidance_grid.png and docs/img/adm_guidance_study.json.

    PY scripts/train/eval_adm_guidance.py [--per-class N] [--respacing 25 | --respacing ddim25 --ddim] [--jobs 5]
        [--model model-uncond]

`--model NAME` samples models/adm-shapes/NAME.pt (default `model`, the class-conditional one);
`model-uncond` is the unconditional generator (ADM_CLASS_COND=0 in train_adm_shapes.py): the
labels then go to the classifier only, as classifier_sample.py does for an unconditional model
(graphs/adm_unconditional_guided.json, the same --set names).
Its results go to the ADM-STUDY-UNCOND markers, adm_guidance_grid_uncond.png and
adm_guidance_study_uncond.json.
"""
import argparse
import json
import math
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
MODELS = os.environ.get("ADM_MODELS", os.path.join(ROOT, "models", "adm-shapes"))
IMG = os.path.join(ROOT, "docs", "img")
DOC = os.path.join(ROOT, "docs", "guidance_study.md")
SCALES = [0, 1, 3, 10, 100]
NOISE_SEED, SCHEDULE_SEED = 1, 2
BEGIN, END = "<!-- ADM-STUDY:BEGIN -->", "<!-- ADM-STUDY:END -->"


def generate(model, labels, scale, respacing, ddim, threads):
    with tempfile.TemporaryDirectory() as out:
        sets = {
            "model.path": os.path.join(MODELS, f"{model}.pt"),
            "model.flags": os.path.join(MODELS, f"{model}.json"),
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
        # An unconditional model takes no labels: the graph that gives them to the classifier only.
        with open(os.path.join(MODELS, f"{model}.json")) as f:
            graph = "adm_classifier_guided.json" if json.load(f)["class_cond"] else "adm_unconditional_guided.json"
        cmd = [BIN, "run", os.path.join(ROOT, "graphs", graph), "--quiet",
               "--out", out, "--threads", str(threads)]
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v}"]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        from safetensors.torch import load_file
        x = load_file(os.path.join(out, "samples.safetensors"))["samples"]
    return x


def median3(x):
    """3x3 median per channel (replicate padding): removes the residual
    pixel noise an under-trained model leaves, keeps edges."""
    n, c, h, w = x.shape
    p = F.pad(x, (1, 1, 1, 1), mode="replicate").unfold(2, 3, 1).unfold(3, 3, 1)
    return p.reshape(n, c, h, w, 9).median(dim=-1).values


def to_eval(x, median=False):
    """[-1, 1] NCHW 32x32 -> [0, 1] NHWC 64x64 (bilinear), the evaluator's input."""
    x = ((x.float() + 1) / 2).clamp(0, 1)
    if median:
        x = median3(x)
    x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).numpy()


def wilson(k, n, z=1.96):
    """95% Wilson score interval of a proportion k / n."""
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return float(c - h), float(c + h)


def mcnemar(b, c):
    """Exact two-sided McNemar p-value for b samples gained and c lost (paired
    by seed): the binomial test of min(b, c) among b + c at 1/2."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))


def real_scenes(n, seed=99):
    """Real upright large centred scenes at 32x32 (as the ADM's data), per class."""
    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    for _ in range(n):
        a = sd.sample_attrs(rng)
        a["size"] = "large"
        a["pos"] = 4  # train_adm_shapes.CENTRE
        im = sd.render(a, rng, rotate=False)
        imgs.append(im.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)))
        labels.append(sd.SHAPES.index(a["shape"]))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2) * 2 - 1
    return x, np.array(labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=32)
    ap.add_argument("--respacing", default="25")
    ap.add_argument("--ddim", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="diffgraph runs (one per scale) at a time")
    ap.add_argument("--model", default="model", help="model (class-conditional) or model-uncond")
    args = ap.parse_args()
    suffix = "" if args.model == "model" else "_" + args.model.replace("model-", "")
    ev = Evaluator()
    k = len(sd.SHAPES)
    labels = [c for c in range(k) for _ in range(args.per_class)]
    y = np.array(labels)
    rows, res = [], {"model": args.model, "per_class": args.per_class, "respacing": args.respacing, "ddim": args.ddim, "jobs": args.jobs,
                     "noise_seed": NOISE_SEED, "schedule_seed": SCHEDULE_SEED, "scales": {}}
    xr, yr = real_scenes(400)
    real = to_eval(xr)
    pred = np.array([sd.SHAPES.index(s) for s in ev.shapes(real)])
    res["real"] = {"accuracy": float((pred == yr).mean()),
                   "diversity": float(np.mean([diversity(real[yr == c][:args.per_class]) for c in range(k)])),
                   "colour_entropy": entropy([analyse(im)["colour"] for im in real]),
                   "background_entropy": entropy([analyse(im)["background"] for im in real])}
    cls_acc = os.path.join(MODELS, "classifier_accuracy.json")
    if os.path.exists(cls_acc) and not suffix:
        with open(cls_acc) as f:
            res["classifier_by_t"] = json.load(f)
    right0 = None
    print(f"real 32x32 scenes: evaluator accuracy {res['real']['accuracy']:.3f}", flush=True)
    from concurrent.futures import ThreadPoolExecutor
    t_gen = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        samples = list(pool.map(lambda s: generate(args.model, labels, s, args.respacing, args.ddim, args.threads),
                                SCALES))
    res["generate_seconds"] = time.time() - t_gen
    torch.save(dict(zip(map(str, SCALES), samples)), os.path.join(tempfile.gettempdir(), "adm_guidance_samples.pt"))
    for s, x in zip(SCALES, samples):
        t0 = time.time()
        with torch.no_grad():
            pm = ev.cnn(torch.from_numpy(np.ascontiguousarray(to_eval(x, True))).permute(0, 3, 1, 2).float())
        right_m = pm.argmax(1).numpy() == y
        xf = x.float()
        hf = float((xf[:, :, 1:] - xf[:, :, :-1]).abs().mean() / 2)
        imgs = to_eval(x)
        with torch.no_grad():
            prob = torch.softmax(ev.cnn(torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float()), 1)
        pred = prob.argmax(1).numpy()
        right = pred == y
        per = {sd.SHAPES[c]: float(right[y == c].mean()) for c in range(k)}
        att = [analyse(im) for im in imgs]
        r = {"accuracy": float(right.mean()), "n": int(len(y)), "ci95": wilson(int(right.sum()), len(y)),
             "per_class": per, "p_target": float(prob[torch.arange(len(y)), torch.from_numpy(y)].mean()),
             "diversity": float(np.mean([diversity(imgs[y == c]) for c in range(k)])),
             "colour_entropy": float(np.mean([entropy([att[i]["colour"] for i in np.flatnonzero(y == c)])
                                             for c in range(k)])),
             "background_entropy": float(np.mean([entropy([att[i]["background"] for i in np.flatnonzero(y == c)])
                                                 for c in range(k)])),
             "score_seconds": time.time() - t0}
        if right0 is None:
            right0 = right
        r["gained_vs_s0"] = int((right & ~right0).sum())
        r["lost_vs_s0"] = int((~right & right0).sum())
        r["mcnemar_p"] = mcnemar(r["gained_vs_s0"], r["lost_vs_s0"])
        r["median_accuracy"] = float(right_m.mean())
        r["median_ci95"] = wilson(int(right_m.sum()), len(y))
        r["median_per_class"] = {sd.SHAPES[c]: float(right_m[y == c].mean()) for c in range(k)}
        r["pixel_step"] = hf
        res["scales"][str(s)] = r
        print(f"s={s}: median-filtered accuracy {r['median_accuracy']:.3f} {r['median_per_class']} "
              f"pixel step {hf:.3f}", flush=True)
        print(f"s={s}: accuracy {r['accuracy']:.3f} {per} diversity {r['diversity']:.3f} "
              f"colour entropy {r['colour_entropy']:.2f}", flush=True)
        rows.append(imgs[[c * args.per_class + j for c in range(k) for j in range(min(3, args.per_class))]])
    os.makedirs(IMG, exist_ok=True)
    grid(rows, [f"s={s}" for s in SCALES], os.path.join(IMG, f"adm_guidance_grid{suffix}.png"))
    with open(os.path.join(IMG, f"adm_guidance_study{suffix}.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    write_doc(res, suffix)


def write_doc(r, suffix=""):
    begin, end = (BEGIN, END) if not suffix else (BEGIN.replace("STUDY", "STUDY" + suffix.upper().replace("_", "-")),
                                                  END.replace("STUDY", "STUDY" + suffix.upper().replace("_", "-")))
    n = r["per_class"] * len(sd.SHAPES)
    mode = (f"DDIM, respacing \"{r['respacing']}\" (condition_score)" if r["ddim"]
            else f"DDPM, respacing \"{r['respacing']}\" (condition_mean)")
    lines = [begin, "",
             f"{n} images per scale ({r['per_class']} per class, the same {n} starting noises at every scale), "
             f"{mode}, noise.seed {r['noise_seed']}, schedule.seed {r['schedule_seed']}:", "",
             "| s | target-class accuracy [95% CI] | became right / wrong vs s = 0 (McNemar p) | circle | square | triangle | star "
             "| p(target) | pixel diversity | colour entropy | background entropy |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s, v in r["scales"].items():
        p = v["per_class"]
        lo, hi = v["ci95"]
        flips = "—" if s == "0" else f"+{v['gained_vs_s0']} / −{v['lost_vs_s0']} (p = {v['mcnemar_p']:.2g})"
        lines.append(f"| {s} | **{v['accuracy']:.1%}** [{lo:.1%}, {hi:.1%}] | {flips} | {p['circle']:.0%} | "
                     f"{p['square']:.0%} | {p['triangle']:.0%} | {p['star']:.0%} | {v['p_target']:.2f} | "
                     f"{v['diversity']:.3f} | {v['colour_entropy']:.2f} | {v['background_entropy']:.2f} |")
    rr = r["real"]
    lines += ["", "Entropies in bits, within a target class, averaged over the classes; pixel diversity: mean "
                  "pairwise RMS distance (pixels in [0, 1]) within a class. Generation took "
                  f"{r['generate_seconds'] / 60:.1f} min of wall time ({r['jobs']} diffgraph run(s) at a time, "
                  "1 thread each, on the shared 2-core machine).", "",
              f"Real centred 32x32 scenes (400, upsampled the same way): evaluator accuracy {rr['accuracy']:.1%}, "
              f"pixel diversity {rr['diversity']:.3f}, colour entropy {rr['colour_entropy']:.2f} bits, "
              f"background entropy {rr['background_entropy']:.2f} bits (over all classes)."]
    if "classifier_by_t" in r:
        c = r["classifier_by_t"]
        lines += ["", f"Guidance classifier's accuracy on {c['n']} held-out scenes noised by q_sample at t "
                      "(chance 25%):", "",
                  "| t | " + " | ".join(str(t) for t in c["t"]) + " |",
                  "|---|" + "---:|" * len(c["t"]),
                  "| accuracy | " + " | ".join(f"{a:.0%}" for a in c["accuracy"]) + " |"]
    lines += ["", "![ADM samples per scale: three of each class, circle, square, triangle, star]"
                  f"(img/adm_guidance_grid{suffix}.png)", "", end]
    text = open(DOC).read()
    block = "\n".join(lines)
    if begin in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(DOC, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
