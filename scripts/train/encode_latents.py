"""Stage 2: encodes the LDM's data set (common.ldm_set: upright shapes) with
the trained VAE encoder (posterior mean and std, unscaled) and tokenizes the
captions. Output: WORK/latents_ldm.pt, the training data of the LDM and of the
latent classifier."""
import os
import time

import torch
from transformers import CLIPTokenizer

import arch
from common import WORK, ldm_set, log, save_ckpt, setup, to_tensor


def main():
    setup(0)
    imgs, caps, labels = ldm_set()
    ck = torch.load(os.path.join(WORK, "vae.pt"), weights_only=False)
    vae = arch.make_vae()
    vae.load_state_dict(ck["model"])
    vae.eval()
    t0 = time.time()
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(imgs), 200):
            d = vae.encode(to_tensor(imgs[i:i + 200])).latent_dist
            means.append(d.mean)
            stds.append(d.std)
            if i % 4000 == 0:
                log("encode", f"{i}/{len(imgs)} {time.time() - t0:.0f}s")
    tok = CLIPTokenizer.from_pretrained(arch.TOKENIZER_SRC)
    ids = tok(caps, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    empty = tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    save_ckpt(os.path.join(WORK, "latents_ldm.pt"), mean=torch.cat(means), std=torch.cat(stds), ids=ids,
              empty=empty, labels=torch.from_numpy(labels), scaling_factor=ck["scaling_factor"])
    log("encode", f"done {len(imgs)} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
