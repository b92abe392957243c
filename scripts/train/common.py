"""Shared helpers of the training scripts: work folder, data set cache,
logging, checkpoints, learning-rate schedule."""
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapes_data  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORK = os.environ.get("SHAPES_WORK", os.path.join(ROOT, "target", "shapes-train"))
MODEL_DIR = os.path.join(ROOT, "models", "shapes-ldm")
# One thread: on this shared 2-core machine, two threads ran ~6x slower than one
# whenever other jobs were busy (every op waits for the slower thread).
THREADS = int(os.environ.get("SHAPES_THREADS", "1"))

# Data set sizes and seeds (one seed per purpose, so each is reproducible).
TRAIN_N, TRAIN_SEED = 40000, 1  # the VAE (random rotations)
LDM_N, LDM_SEED = 24000, 4  # the LDM and the latent classifier (upright shapes)
EVAL_CLS_SEED = 2  # the evaluator's own training images (drawn on the fly)
HELDOUT_N, HELDOUT_SEED = 2000, 3  # held-out check of the evaluator


def setup(seed):
    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)
    np.random.seed(seed)
    os.makedirs(WORK, exist_ok=True)


def log(name, msg):
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    with open(os.path.join(WORK, f"{name}.log"), "a") as f:
        f.write(line + "\n")


def _cached_set(name, n, seed, rotate):
    """n scenes from shapes_data.make_dataset (uint8 NHWC images, captions,
    labels), drawn once and cached in WORK/name."""
    path = os.path.join(WORK, name)
    if not os.path.exists(path):
        imgs, caps, labels = shapes_data.make_dataset(n, seed, rotate=rotate)
        np.savez(path + ".tmp.npz", imgs=imgs, caps=np.array(caps), labels=labels)
        os.replace(path + ".tmp.npz", path)
    d = np.load(path)
    return d["imgs"], [str(c) for c in d["caps"]], d["labels"]


def train_set():
    """The VAE's training scenes (randomly rotated shapes)."""
    return _cached_set("train_set.npz", TRAIN_N, TRAIN_SEED, rotate=True)


def ldm_set():
    """The LDM's and the latent classifier's training scenes (upright shapes)."""
    return _cached_set("ldm_set.npz", LDM_N, LDM_SEED, rotate=False)


def to_tensor(imgs_u8):
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    return torch.from_numpy(imgs_u8).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def lr_at(step, total, base, warmup=100, final=0.02):
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * p)))


def save_ckpt(path, **state):
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_ckpt(path):
    return torch.load(path, weights_only=False) if os.path.exists(path) else None
