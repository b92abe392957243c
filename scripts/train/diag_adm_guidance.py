#!/usr/bin/env python3
"""Cross-check of the ADM scale study with guided-diffusion itself: the
committed models/adm-shapes/ pair sampled by the reference's own
GaussianDiffusion.ddim_sample_loop with a cond_fn as in classifier_sample.py
(16 samples, 4 per class, ddim25, x_T from seed 1), scored by the same
independent evaluator; prints, along the trajectory, the guidance gradient's
norm ||grad log p(y | x_t)|| and the classifier's own p(y | x_t).

    PY scripts/train/diag_adm_guidance.py GUIDED_DIFFUSION_DIR SCALE [SCALE ...]

It tells a wiring fault (diffgraph disagreeing with the reference) from a
model fault (both agree, the evaluator sees no change) and shows how far the
guidance moves its own classifier. See docs/guidance_study.md.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
if len(sys.argv) < 3:
    raise SystemExit(__doc__)
sys.path.insert(0, sys.argv[1])
import shapes_data as sd  # noqa: E402
from evaluator import Evaluator  # noqa: E402
from guided_diffusion import script_util  # noqa: E402
from guided_diffusion.unet import EncoderUNetModel  # noqa: E402

MODELS = os.path.join(HERE, "..", "..", "models", "adm-shapes")


def main():
    torch.set_num_threads(1)
    mf = json.load(open(os.path.join(MODELS, "model.json")))
    cf = json.load(open(os.path.join(MODELS, "classifier.json")))
    model, diff = script_util.create_model_and_diffusion(**dict(mf, timestep_respacing="ddim25"))
    model.load_state_dict(torch.load(os.path.join(MODELS, "model.pt")))
    model.eval()
    size = cf["image_size"]
    clf = EncoderUNetModel(
        image_size=size, in_channels=3, model_channels=cf["classifier_width"],
        out_channels=cf["classifier_num_classes"], num_res_blocks=cf["classifier_depth"],
        attention_resolutions=tuple(size // int(r) for r in cf["classifier_attention_resolutions"].split(",")),
        channel_mult=tuple(int(m) for m in cf["classifier_channel_mult"].split(",")), use_fp16=False,
        num_head_channels=cf["classifier_num_head_channels"],
        use_scale_shift_norm=cf["classifier_use_scale_shift_norm"],
        resblock_updown=cf["classifier_resblock_updown"], pool=cf["classifier_pool"])
    clf.load_state_dict(torch.load(os.path.join(MODELS, "classifier.pt")))
    clf.eval()
    ev = Evaluator()
    y = torch.arange(4).repeat_interleave(4)
    for s in [float(a) for a in sys.argv[2:]]:
        trace = []

        def cond_fn(x, t, y=None):
            with torch.enable_grad():
                xi = x.detach().requires_grad_(True)
                lp = F.log_softmax(clf(xi, t), -1)[torch.arange(len(y)), y]
                g = torch.autograd.grad(lp.sum(), xi)[0]
            trace.append((int(t[0]), g.flatten(1).norm(dim=1).mean().item(), lp.exp().mean().item()))
            return g * s

        noise = torch.randn(16, 3, size, size, generator=torch.Generator().manual_seed(1))
        x = diff.ddim_sample_loop(model, noise.shape, noise=noise, model_kwargs={"y": y}, cond_fn=cond_fn,
                                  clip_denoised=True)
        im = F.interpolate(((x + 1) / 2).clamp(0, 1), size=(64, 64), mode="bilinear", align_corners=False)
        pred = np.array([sd.SHAPES.index(q) for q in ev.shapes(im.permute(0, 2, 3, 1).numpy())])
        print(f"s={s}: evaluator target accuracy {(pred == y.numpy()).mean():.3f}, readings {pred.tolist()}")
        print("  (t, ||grad log p||, p(y|x_t)):", [(t, round(g, 2), round(p, 2)) for t, g, p in trace[::3]])


if __name__ == "__main__":
    main()
