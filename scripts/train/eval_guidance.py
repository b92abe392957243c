"""Guidance study of the embedded demo model, generated THROUGH diffgraph
(graphs/demo.json and graphs/demo_classifier_guidance.json with --set
overrides; batches via LatentShape's batch input) and scored with the
independent evaluator (scripts/train/evaluator.py: a separately trained
clean-image shape CNN + procedural colour/position/size/background checks).

- Classifier-free guidance, guidance_scale g in {1, 2, 4, 7}: PROMPTS prompts
  x PER_PROMPT samples per scale (same seeds at every scale). Prompt adherence
  = all five attributes right; diversity = mean pairwise RMS pixel distance
  between the samples of one prompt, averaged over prompts.
- Classifier guidance, s in {0, 1, 3, 10}, unconditional sampling (empty
  prompt): for each of the 4 shape classes PER_CLASS samples (same seeds at
  every s). Target-class accuracy by the evaluator's shape CNN; diversity =
  mean pairwise distance within one target class.

Writes docs/guidance_study.md (tables between the GENERATED markers; the
rest of the file is kept), docs/img/guidance_study.png (plot),
docs/img/cfg_grid.png and docs/img/classifier_guidance_grid.png (samples), and
the raw numbers to docs/img/guidance_study.json.

    .venv-fixtures/bin/python scripts/train/eval_guidance.py [--quick]
"""
import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapes_data as sd  # noqa: E402
from evaluator import Evaluator, matches  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "target", "release", "diffgraph")
DOCS = os.path.join(ROOT, "docs")
IMG = os.path.join(DOCS, "img")
CFG_SCALES = [1, 2, 4, 7]
# the grid {0, 1, 3, 10} plus 30, to show where accuracy levels off
CG_SCALES = [0, 1, 3, 10, 30]
ATTRS = ["shape", "colour", "size", "pos", "background"]
GRID_PROMPT = "a large red star in the center on a blue background"
GRID_CLASS = 3  # star
# the README's showcase (docs/img/demo_prompts.png): graphs/demo.json as it is
SHOWCASE = ["a large red star in the center on a blue background",
            "a small yellow square in the top left on a black background",
            "a large green triangle in the bottom right on a white background",
            "a small white circle in the middle right on a gray background",
            "a large blue square in the top center on a black background",
            "a small red triangle in the bottom left on a gray background"]


def run_graph(graph, sets, threads):
    with tempfile.TemporaryDirectory() as out:
        cmd = [BIN, "run", os.path.join(ROOT, "graphs", graph), "--quiet", "--out", out, "--threads", str(threads)]
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v if isinstance(v, str) else json.dumps(v)}"]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        files = sorted(os.listdir(out), key=lambda f: int(re.findall(r"(\d+)\.png$", f)[0]) if re.search(r"_\d+\.png$", f) else 0)
        return np.stack([np.asarray(Image.open(os.path.join(out, f)).convert("RGB"), dtype=np.float32) / 255 for f in files])


def diversity(imgs):
    """Mean pairwise RMS distance (pixels in [0, 1])."""
    flat = imgs.reshape(len(imgs), -1)
    d = [np.sqrt(((a - b) ** 2).mean()) for a, b in itertools.combinations(flat, 2)]
    return float(np.mean(d))


def entropy(values):
    """Entropy in bits of the empirical distribution of `values`: the
    guidance classifier knows shapes only, so the colour distribution of its
    samples shows what guidance does to an attribute it does not target."""
    _, counts = np.unique(np.array(values, dtype=object).astype(str), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def study_prompts(n, seed=123):
    rng = np.random.default_rng(seed)
    caps = []
    while len(caps) < n:
        c = sd.caption(sd.sample_attrs(rng))
        if c not in caps:
            caps.append(c)
    return caps


def grid(rows, labels, path, scale=2, label_width=70):
    """rows: list of [n, 64, 64, 3] arrays; one row per setting, label drawn left."""
    from PIL import ImageDraw
    n = max(len(r) for r in rows)
    lw = label_width
    canvas = Image.new("RGB", (lw + n * 66 * scale, len(rows) * 66 * scale), "white")
    d = ImageDraw.Draw(canvas)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        d.text((4, i * 66 * scale + 60), lab, fill="black")
        for j, im in enumerate(r):
            tile = Image.fromarray(np.round(im * 255).astype(np.uint8)).resize((64 * scale, 64 * scale), Image.NEAREST)
            canvas.paste(tile, (lw + j * 66 * scale, i * 66 * scale))
    canvas.save(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--per-prompt", type=int, default=8)
    ap.add_argument("--per-class", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny run to check the pipeline (no docs written)")
    ap.add_argument("--only", choices=["cfg", "cg"],
                    help="re-measure one half; the other is kept from docs/img/guidance_study.json")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.per_prompt, args.per_class = 2, 3, 3
    ev = Evaluator()
    t0 = time.time()
    results = {"cfg": {}, "cg": {}, "settings": vars(args)}
    raw = os.path.join(IMG, "guidance_study.json")
    if args.only:
        with open(raw) as f:
            old = json.load(f)
        keep = "cg" if args.only == "cfg" else "cfg"
        results[keep] = {int(k): v for k, v in old[keep].items()}
        results["real_diversity"] = old["real_diversity"]
        results.update({k: v for k, v in old.items() if k.startswith("seconds_") and k != "seconds_" + args.only})
        for k in ["prompts", "per_prompt"] if keep == "cfg" else ["per_class"]:
            results["settings"][k] = old["settings"][k]
    prompts = study_prompts(args.prompts)
    grid_rows = None if args.only == "cg" else []
    # real scenes of the same prompts: the data's own within-prompt diversity
    rng = np.random.default_rng(7)
    real_div = []
    for c in prompts:
        a = sd.parse_caption(c)
        real_div.append(diversity(np.stack([sd.render(a, rng, rotate=False) for _ in range(args.per_prompt)])))
    results["real_diversity"] = float(np.mean(real_div))
    for g in CFG_SCALES if args.only != "cg" else []:
        per = {k: 0 for k in ATTRS}
        allok, divs, n = 0, [], 0
        for pi, c in enumerate(prompts):
            imgs = run_graph("demo.json", {"prompt.text": c, "guidance.value": float(g), "size.batch": args.per_prompt,
                                           "noise.seed": 1000 + pi}, args.threads)
            target = sd.parse_caption(c)
            for a in ev.attributes(imgs):
                m = matches(a, target)
                for k in ATTRS:
                    per[k] += m[k]
                allok += all(m.values())
                n += 1
            divs.append(diversity(imgs))
        results["cfg"][g] = dict(n=n, adherence=allok / n, diversity=float(np.mean(divs)),
                                 **{k: per[k] / n for k in ATTRS})
        grid_rows.append(run_graph("demo.json", {"prompt.text": GRID_PROMPT, "guidance.value": float(g),
                                                 "size.batch": 8, "noise.seed": 5}, args.threads))
        print(f"CFG g={g}: {results['cfg'][g]} ({time.time() - t0:.0f}s)", flush=True)
    cg_rows = None if args.only == "cfg" else []
    for s in CG_SCALES if args.only != "cfg" else []:
        hits, divs, n, fracs, ents = 0, [], 0, [], []
        for k in range(len(sd.SHAPES)):
            imgs = run_graph("demo_classifier_guidance.json", {"guide.target": [k], "guide.scale": float(s),
                                                               "size.batch": args.per_class, "noise.seed": 2000 + k},
                             args.threads)
            got = ev.attributes(imgs)
            hits += sum(a["shape"] == sd.SHAPES[k] for a in got)
            fracs.append(np.mean([a["pos"] is not None for a in got]))
            ents.append(entropy([a["colour"] for a in got]))
            n += len(imgs)
            divs.append(diversity(imgs))
            if k == GRID_CLASS:
                cg_rows.append(imgs[:8])
        results["cg"][s] = dict(n=n, accuracy=hits / n, diversity=float(np.mean(divs)),
                                shape_found=float(np.mean(fracs)), colour_entropy=float(np.mean(ents)))
        print(f"CG s={s}: {results['cg'][s]} ({time.time() - t0:.0f}s)", flush=True)
    results["seconds_" + (args.only or "all")] = time.time() - t0
    if args.quick:
        print(json.dumps(results, indent=1))
        return
    os.makedirs(IMG, exist_ok=True)
    with open(raw, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    if grid_rows is not None:
        rows = [run_graph("demo.json", {"prompt.text": c, "size.batch": 6, "noise.seed": 11}, args.threads)
                for c in SHOWCASE]
        grid(rows, ["" for _ in rows], os.path.join(IMG, "demo_prompts.png"), label_width=0)
        grid(grid_rows, [f"g = {g}" for g in CFG_SCALES], os.path.join(IMG, "cfg_grid.png"))
    if cg_rows is not None:
        grid(cg_rows, [f"s = {s}" for s in CG_SCALES], os.path.join(IMG, "classifier_guidance_grid.png"))
    plot(results)
    write_doc(results)
    print(f"done in {time.time() - t0:.0f}s")


def plot(r):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    xs = CFG_SCALES
    ax.plot(xs, [r["cfg"][g]["adherence"] for g in xs], "o-", lw=2, label="adherence (all attributes)")
    for k in ATTRS:
        ax.plot(xs, [r["cfg"][g][k] for g in xs], ".--", alpha=0.6, label=k)
    ax.set_xlabel("guidance_scale g")
    ax.set_ylabel("fraction correct")
    ax.set_ylim(0, 1.02)
    ax.set_title("Classifier-free guidance")
    ax2 = ax.twinx()
    ax2.plot(xs, [r["cfg"][g]["diversity"] for g in xs], "s-", color="black", label="diversity")
    ax2.axhline(r["real_diversity"], color="gray", ls=":", label="diversity of real scenes")
    ax2.set_ylabel("mean pairwise RMS distance")
    ax2.set_ylim(0, None)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower right")
    ax = axes[1]
    xs = CG_SCALES
    ax.plot(xs, [r["cg"][s]["accuracy"] for s in xs], "o-", lw=2, label="target-class accuracy")
    ax.axhline(1 / len(sd.SHAPES), color="red", ls=":", label="chance (1/4)")
    ax.set_xlabel("classifier guidance scale s")
    ax.set_ylim(0, 1.02)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(s) for s in xs])
    ax.set_title("Classifier guidance (empty prompt)")
    ax2 = ax.twinx()
    ax2.plot(xs, [r["cg"][s]["diversity"] for s in xs], "s-", color="black", label="diversity")
    ax2.set_ylabel("mean pairwise RMS distance")
    ax2.set_ylim(0, None)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(IMG, "guidance_study.png"), dpi=110)


def write_doc(r):
    path = os.path.join(DOCS, "guidance_study.md")
    begin, end = "<!-- GENERATED BEGIN (scripts/train/eval_guidance.py) -->", "<!-- GENERATED END -->"
    with open(os.path.join(ROOT, "models", "eval", "heldout_accuracy.json")) as f:
        held = json.load(f)
    s = r["settings"]
    lines = [begin, "",
             f"Classifier-free guidance: {s['prompts']} prompts x {s['per_prompt']} samples = "
             f"{r['cfg'][CFG_SCALES[0]]['n']} images per scale (seeds shared across scales). "
             f"Diversity of real scenes of the same prompts: {r['real_diversity']:.3f}.", "",
             "| guidance_scale g | adherence (all 5 right) | shape | colour | size | position | background | diversity |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for g in CFG_SCALES:
        c = r["cfg"][g]
        lines.append(f"| {g} | **{c['adherence']:.1%}** | {c['shape']:.1%} | {c['colour']:.1%} | {c['size']:.1%} | "
                     f"{c['pos']:.1%} | {c['background']:.1%} | {c['diversity']:.3f} |")
    lines += ["", f"Classifier guidance, empty prompt: 4 target classes x {s['per_class']} samples = "
                  f"{r['cg'][CG_SCALES[0]]['n']} images per scale (seeds shared across scales).", "",
              "| scale s | target-class accuracy | image has a shape | diversity | colour entropy (bits) |",
              "|---:|---:|---:|---:|---:|"]
    for sc in CG_SCALES:
        c = r["cg"][sc]
        lines.append(f"| {sc} | **{c['accuracy']:.1%}** | {c['shape_found']:.1%} | {c['diversity']:.3f} | "
                     f"{c['colour_entropy']:.2f} |")
    lines += ["", "Evaluator accuracy on 2000 held-out real scenes: " +
              ", ".join(f"{k} {v:.1%}" for k, v in held.items()) + ".", "",
              f"Generation + scoring took {sum(v for k, v in r.items() if k.startswith('seconds_')) / 60:.1f} min "
              f"on the CPU ({r['settings']['threads']} thread(s) per diffgraph run).", "", end]
    block = "\n".join(lines)
    if os.path.exists(path):
        text = open(path).read()
        if begin in text and end in text:
            text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    else:
        text = "# Guidance study\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
