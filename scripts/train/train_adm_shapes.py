#!/usr/bin/env python3
"""A small class-conditional pixel-space ADM and a noisy classifier on the
procedural shapes, trained with guided-diffusion's own model and diffusion code
(the reference is imported from a checkout, never copied into the project).

    PY scripts/train/train_adm_shapes.py GUIDED_DIFFUSION_DIR model|classifier|export

- data: shapes_data scenes with upright, large shapes in the centre cell (seed
  ADM_SEED; colour, background, radius and the position jitter vary as in
  shapes_data), box-downsampled from 64x64 to 32x32; the class is the shape
  (circle, square, triangle, star). One cell rather than nine: on a shared
  2-core CPU the budget buys a few hundred steps, which are spent on shapes
  rather than on where to put them;
- `model`: guided_diffusion.script_util.create_model_and_diffusion with the flags
  in MODEL_FLAGS (class-conditional, learn_sigma, cosine schedule), trained on
  GaussianDiffusion.training_losses (the reference's hybrid loss: MSE on eps plus
  the variational bound for the learned-range variance), timesteps from
  resample.UniformSampler, AdamW, EMA 0.99 (train_util.py keeps an EMA the same
  way); the EMA weights are exported once they hold < 5% of the initial ones
  (~300 steps), the trained weights before;
- `classifier`: guided_diffusion.unet.EncoderUNetModel built as
  script_util.create_classifier does, but with 4 outputs and a channel_mult for
  32x32 (create_classifier fixes 1000 classes and knows no 32x32), trained as
  scripts/classifier_train.py trains its noised classifier: x_t =
  diffusion.q_sample(x_0, t) with t from the UniformSampler, cross-entropy;
- `export`: (of each part with a checkpoint in WORK; a part without one keeps its export) the EMA / classifier state dicts as torch.save files (read by
  diffgraph's restricted unpickler) plus the flags files diffgraph's LoadADM /
  LoadADMClassifier take, into models/adm-shapes/ (ADM_OUT overrides), and the
  classifier's accuracy on held-out scenes by noise level
  (classifier_accuracy.json).

Reproducible from seeds: every step's batch, timesteps and noise come from
generators seeded by (seed, step), so a run resumed from its checkpoint
(WORK/adm/*.ckpt, written every CKPT_EVERY steps) equals an uninterrupted one.
Budget on the shared 2-core machine (1 thread each, model and classifier side by
side): see docs/guidance_study.md.
"""
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapes_data  # noqa: E402
from common import ROOT, WORK, lr_at  # noqa: E402

if len(sys.argv) < 3:
    raise SystemExit(__doc__)
sys.path.insert(0, sys.argv[1])
from guided_diffusion import script_util  # noqa: E402
from guided_diffusion.resample import UniformSampler  # noqa: E402
from guided_diffusion.unet import EncoderUNetModel  # noqa: E402

OUT = os.environ.get("ADM_OUT", os.path.join(ROOT, "models", "adm-shapes"))
ADM_WORK = os.path.join(WORK, "adm")
ADM_N, ADM_SEED = 12000, 6
CENTRE = 4  # shapes_data.POSITIONS[4] == "center"
THREADS = int(os.environ.get("SHAPES_THREADS", "1"))
CKPT_EVERY = 50

# The reference's flags (script_util.model_and_diffusion_defaults() names).
MODEL_FLAGS = dict(
    image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2",
    attention_resolutions="16", num_head_channels=32, num_heads=4, num_heads_upsample=-1,
    dropout=0.0, class_cond=True, use_checkpoint=False, use_scale_shift_norm=True,
    resblock_updown=True, use_fp16=False, use_new_attention_order=False, learn_sigma=True,
    diffusion_steps=1000, noise_schedule="cosine", timestep_respacing="", use_kl=False,
    predict_xstart=False, rescale_timesteps=False, rescale_learned_sigmas=False,
)
# ADM_CLASS_COND=0: the same model without the label embedding (class_cond False), the
# generator of the unconditional-plus-classifier half of the study; its work and export
# name is `model-uncond`.
if os.environ.get("ADM_CLASS_COND", "1") == "0":
    MODEL_FLAGS["class_cond"] = False
MODEL_NAME = "model" if MODEL_FLAGS["class_cond"] else "model-uncond"
MODEL_STEPS = int(os.environ.get("ADM_STEPS", "600"))
MODEL_BATCH = int(os.environ.get("ADM_BATCH", "16"))
MODEL_LR, MODEL_SEED = float(os.environ.get("ADM_LR", "2e-3")), 60

# classifier_defaults() names, plus diffgraph's classifier_channel_mult /
# classifier_num_classes / classifier_num_head_channels (fixed by create_classifier).
CLASSIFIER_FLAGS = dict(
    image_size=32, classifier_use_fp16=False, classifier_width=32, classifier_depth=1,
    classifier_attention_resolutions="16", classifier_use_scale_shift_norm=True,
    classifier_resblock_updown=True, classifier_pool=os.environ.get("ADM_CLS_POOL", "attention"),
    classifier_channel_mult="1,2", classifier_num_classes=len(shapes_data.SHAPES),
    classifier_num_head_channels=32,
)
CLS_STEPS = int(os.environ.get("ADM_CLS_STEPS", "500"))
CLS_BATCH, CLS_LR, CLS_SEED = 32, 2e-3, 61
CLS_WARMUP = int(os.environ.get("ADM_CLS_WARMUP", "100"))
# the work name of a classifier run (a pool other than attention trains beside it)
CLS_WORK = "classifier" + ("" if CLASSIFIER_FLAGS["classifier_pool"] == "attention"
                           else "-" + CLASSIFIER_FLAGS["classifier_pool"])
EMA_RATE = 0.99  # a short run: the average must forget the first hundred steps


def log(name, msg):
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    with open(os.path.join(ADM_WORK, f"{name}.log"), "a") as f:
        f.write(line + "\n")


def data():
    """[N, 3, 32, 32] float in [-1, 1] and the shape labels, drawn once, cached."""
    path = os.path.join(ADM_WORK, "adm_set_centre.npz")
    if not os.path.exists(path):
        rng = np.random.default_rng(ADM_SEED)
        imgs = np.empty((ADM_N, shapes_data.SIZE, shapes_data.SIZE, 3), dtype=np.uint8)
        labels = np.empty((ADM_N, 1), dtype=np.int64)
        for i in range(ADM_N):
            a = shapes_data.sample_attrs(rng)
            a["size"] = "large"  # small shapes would be ~7 px wide at 32x32
            a["pos"] = CENTRE  # one cell (jittered): the budget buys shapes, not layouts
            imgs[i] = np.round(shapes_data.render(a, rng, rotate=False) * 255).astype(np.uint8)
            labels[i] = shapes_data.SHAPES.index(a["shape"])
        small = imgs.reshape(ADM_N, 32, 2, 32, 2, 3).astype(np.float32).mean(axis=(2, 4))
        np.savez(path + ".tmp.npz", imgs=np.round(small).astype(np.uint8), labels=labels[:, 0])
        os.replace(path + ".tmp.npz", path)
    d = np.load(path)
    x = torch.from_numpy(d["imgs"]).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return x, torch.from_numpy(d["labels"]).long()


def diffusion():
    f = MODEL_FLAGS
    return script_util.create_gaussian_diffusion(
        steps=f["diffusion_steps"], learn_sigma=f["learn_sigma"], noise_schedule=f["noise_schedule"],
        use_kl=f["use_kl"], predict_xstart=f["predict_xstart"], rescale_timesteps=f["rescale_timesteps"],
        rescale_learned_sigmas=f["rescale_learned_sigmas"], timestep_respacing="")


def create_classifier():
    f = CLASSIFIER_FLAGS
    return EncoderUNetModel(
        image_size=f["image_size"], in_channels=3, model_channels=f["classifier_width"],
        out_channels=f["classifier_num_classes"], num_res_blocks=f["classifier_depth"],
        attention_resolutions=tuple(f["image_size"] // int(r) for r in f["classifier_attention_resolutions"].split(",")),
        channel_mult=tuple(int(m) for m in f["classifier_channel_mult"].split(",")),
        use_fp16=False, num_head_channels=f["classifier_num_head_channels"],
        use_scale_shift_norm=f["classifier_use_scale_shift_norm"],
        resblock_updown=f["classifier_resblock_updown"], pool=f["classifier_pool"])


def batch_for(step, seed, x, y, n):
    """The step's batch and a torch generator for its timesteps/noise, from (seed, step)."""
    rng = np.random.default_rng([seed, step])
    idx = torch.from_numpy(rng.integers(0, x.shape[0], n))
    torch.manual_seed(seed * 1_000_003 + step)  # training_losses draws its noise with randn_like
    np.random.seed((seed * 1_000_003 + step) % 2**32)  # UniformSampler.sample draws t with np.random
    return x[idx], y[idx]


def train(kind):
    os.makedirs(ADM_WORK, exist_ok=True)
    torch.set_num_threads(THREADS)
    x, y = data()
    diff = diffusion()
    sampler = UniformSampler(diff)
    if kind == "model":
        torch.manual_seed(MODEL_SEED)
        net = script_util.create_model_and_diffusion(**MODEL_FLAGS)[0]
        steps, bs, lr0, seed = MODEL_STEPS, MODEL_BATCH, MODEL_LR, MODEL_SEED
    else:
        torch.manual_seed(CLS_SEED)
        net = create_classifier()
        steps, bs, lr0, seed = CLS_STEPS, CLS_BATCH, CLS_LR, CLS_SEED
    ema = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.AdamW(net.parameters(), lr=lr0, weight_decay=0.0)
    work = MODEL_NAME if kind == "model" else CLS_WORK
    ckpt = os.path.join(ADM_WORK, f"{work}.ckpt")
    start = 0
    if os.path.exists(ckpt):
        st = torch.load(ckpt, weights_only=False)
        net.load_state_dict(st["net"])
        opt.load_state_dict(st["opt"])
        ema = st["ema"]
        start = st["step"]
        log(work, f"resumed at step {start}")
    n_params = sum(p.numel() for p in net.parameters())
    log(work, f"{n_params} parameters, {steps} steps of batch {bs}, {THREADS} thread(s)")
    net.train()
    t0, acc_sum, loss_sum = time.time(), 0.0, 0.0
    for step in range(start, steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr0, warmup=100 if kind == "model" else CLS_WARMUP)
        xb, yb = batch_for(step, seed, x, y, bs)
        t, _ = sampler.sample(bs, "cpu")
        if kind == "model":
            kwargs = {"y": yb} if MODEL_FLAGS["class_cond"] else {}
            loss = diff.training_losses(net, xb, t, model_kwargs=kwargs)["loss"].mean()
        else:
            logits = net(diff.q_sample(xb, t), t)
            loss = F.cross_entropy(logits, yb)
            acc_sum += (logits.argmax(1) == yb).float().mean().item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, net.parameters()):
                e.mul_(EMA_RATE).add_(p.detach(), alpha=1 - EMA_RATE)
        loss_sum += loss.item()
        if (step + 1) % CKPT_EVERY == 0 or step + 1 == steps:
            torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "ema": ema, "step": step + 1},
                       ckpt + ".tmp")
            os.replace(ckpt + ".tmp", ckpt)
            k = (step % CKPT_EVERY) + 1
            extra = f" noisy acc {acc_sum / k:.3f}" if kind == "classifier" else ""
            log(work, f"step {step + 1}/{steps} loss {loss_sum / k:.4f}{extra} "
                      f"{(time.time() - t0) / (step + 1 - start):.2f} s/step")
            acc_sum, loss_sum = 0.0, 0.0
    log(work, "done")


def classifier_accuracy(net, n=256, seed=ADM_SEED + 1000):
    """The classifier's accuracy on n held-out scenes (their own seed) noised
    by q_sample at fixed t: how far into the noise guidance has a signal."""
    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    for _ in range(n):
        a = shapes_data.sample_attrs(rng)
        a["size"], a["pos"] = "large", CENTRE
        imgs.append(shapes_data.render(a, rng, rotate=False).reshape(32, 2, 32, 2, 3).mean(axis=(1, 3)))
        labels.append(shapes_data.SHAPES.index(a["shape"]))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2) * 2 - 1
    y = torch.tensor(labels)
    diff, ts, acc = diffusion(), [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999], []
    g = torch.Generator().manual_seed(seed)
    net.eval()
    with torch.no_grad():
        for t in ts:
            tt = torch.full((n,), t, dtype=torch.long)
            xt = diff.q_sample(x, tt, noise=torch.randn(x.shape, generator=g))
            acc.append(float((net(xt, tt).argmax(1) == y).float().mean()))
    return {"n": n, "t": ts, "accuracy": acc}


def export():
    os.makedirs(OUT, exist_ok=True)
    for kind, flags, name in [("model", MODEL_FLAGS, MODEL_NAME), ("classifier", CLASSIFIER_FLAGS, "classifier")]:
        path = os.path.join(ADM_WORK, f"{name if kind == 'model' else CLS_WORK}.ckpt")
        if not os.path.exists(path):
            # Retraining one part (the generator, say) keeps the other's committed export.
            print(f"{name}: no {path}, {OUT}/{name}.pt kept")
            continue
        st = torch.load(path, weights_only=False)
        net = script_util.create_model_and_diffusion(**MODEL_FLAGS)[0] if kind == "model" else create_classifier()
        net.load_state_dict(st["net"])
        # The EMA still holds EMA_RATE ** step of the initial weights (0.13 after
        # 200 steps at 0.99): shorter runs export the trained weights themselves.
        use_ema = kind == "model" and EMA_RATE ** st["step"] < 0.05
        weights = st["ema"] if use_ema else [p.detach() for p in net.parameters()]
        with torch.no_grad():
            for p, e in zip(net.parameters(), weights):
                p.copy_(e)
        torch.save(net.state_dict(), os.path.join(OUT, f"{name}.pt"))
        with open(os.path.join(OUT, f"{name}.json"), "w") as fh:
            json.dump(flags, fh, indent=1, sort_keys=True)
            fh.write("\n")
        print(f"{name}: step {st['step']}, {'EMA' if use_ema else 'trained'} weights, "
              f"{os.path.getsize(os.path.join(OUT, name + '.pt'))} bytes")
        if kind == "classifier":
            acc = classifier_accuracy(net)
            with open(os.path.join(OUT, "classifier_accuracy.json"), "w") as fh:
                json.dump(acc, fh, indent=1)
                fh.write("\n")
            print("classifier accuracy by t:", " ".join(f"{t}:{a:.2f}" for t, a in zip(acc["t"], acc["accuracy"])))


if __name__ == "__main__":
    what = sys.argv[2]
    if what in ("model", "classifier"):
        train(what)
    elif what == "export":
        export()
    else:
        raise SystemExit(__doc__)
