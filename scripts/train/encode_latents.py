"""Stage 2: encodes the first LDM_N training images with the trained VAE
encoder (posterior mean and std, unscaled) and tokenizes their captions.
Output: WORK/latents.pt."""
import os
import time

import torch
from transformers import CLIPTokenizer

import arch
from common import WORK, log, save_ckpt, setup, to_tensor, train_set

LDM_N = int(os.environ.get("LDM_N", "24000"))


def main():
    setup(0)
    imgs, caps, labels = train_set()
    ck = torch.load(os.path.join(WORK, "vae.pt"), weights_only=False)
    vae = arch.make_vae()
    vae.load_state_dict(ck["model"])
    vae.eval()
    t0 = time.time()
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, LDM_N, 200):
            d = vae.encode(to_tensor(imgs[i:i + 200])).latent_dist
            means.append(d.mean)
            stds.append(d.std)
            if i % 4000 == 0:
                log("encode", f"{i}/{LDM_N} {time.time() - t0:.0f}s")
    tok = CLIPTokenizer.from_pretrained(arch.TOKENIZER_SRC)
    ids = tok(caps[:LDM_N], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    empty = tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    save_ckpt(os.path.join(WORK, "latents.pt"), mean=torch.cat(means), std=torch.cat(stds), ids=ids, empty=empty,
              labels=torch.from_numpy(labels[:LDM_N]), scaling_factor=ck["scaling_factor"])
    log("encode", f"done {LDM_N} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
