"""Diagnostic: does the LDM use a caption attribute? Denoising loss on
the last 256 latents at high noise (t in [850, 999]: where x_t no longer
shows where the shape is) with the true caption versus the same caption with that attribute replaced by another value; a model that
ignores the attribute shows no gap. Usage: probe_position.py CKPT [ATTR...]
(CKPT: WORK/ldm_ckpt.pt, its EMA weights, or WORK/ldm.pt)."""
import os
import sys

import numpy as np
import torch
from transformers import CLIPTokenizer

import arch
import shapes_data as sd
from common import WORK


T_LO, T_HI = int(os.environ.get("PROBE_T_LO", "850")), int(os.environ.get("PROBE_T_HI", "1000"))


def main():
    torch.set_num_threads(1)
    ck = torch.load(sys.argv[1], weights_only=False)
    unet, te = arch.make_unet(), arch.make_text_encoder()
    unet.load_state_dict(ck.get("ema_u", ck.get("unet")))
    te.load_state_dict(ck.get("ema_t", ck.get("te")))
    unet.eval(); te.eval()
    data = torch.load(os.path.join(WORK, "latents_ldm.pt"), weights_only=False)
    n = 256
    idx = torch.arange(len(data["mean"]) - n, len(data["mean"]))
    z0 = data["mean"][idx] * data["scaling_factor"]
    # captions of these latents: re-tokenised from the stored ids
    tok = CLIPTokenizer.from_pretrained(arch.TOKENIZER_SRC)
    caps = [tok.decode(i, skip_special_tokens=True) for i in data["ids"][idx]]
    ac = arch.make_scheduler().alphas_cumprod
    g = torch.Generator().manual_seed(0)
    t = torch.randint(T_LO, T_HI, (n,), generator=g)
    noise = torch.randn(z0.shape, generator=g)
    ab = ac[t].view(-1, 1, 1, 1)
    xt = ab.sqrt() * z0 + (1 - ab).sqrt() * noise
    rng = np.random.default_rng(0)

    def loss(captions):
        ids = tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            out = unet(xt, t, te(ids).last_hidden_state).sample
        return ((out - noise) ** 2).mean().item()

    base = loss(caps)
    print(f"true captions: {base:.5f}; empty: {loss([''] * n):.5f}")
    for attr in sys.argv[2:] or ["pos", "shape", "colour", "size"]:
        wrong = []
        for c in caps:
            a = sd.parse_caption(c)
            if attr == "pos":
                a["pos"] = int(rng.choice([p for p in range(9) if p != a["pos"]]))
            elif attr == "shape":
                a["shape"] = str(rng.choice([s for s in sd.SHAPES if s != a["shape"]]))
            elif attr == "colour":
                a["colour"] = str(rng.choice([s for s in sd.COLOURS if s not in (a["colour"], a["background"])]))
            elif attr == "size":
                a["size"] = "small" if a["size"] == "large" else "large"
            wrong.append(sd.caption(a))
        print(f"wrong {attr}: {loss(wrong):.5f} (gap {loss(wrong) - base:+.5f})")


if __name__ == "__main__":
    main()
