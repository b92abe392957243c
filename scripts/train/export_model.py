"""Stage 5: writes models/shapes-ldm/ (diffusers folder layout, fp16 weights)
from the trained VAE and the EMA weights of the U-Net and text encoder, then
checks that diffusers' StableDiffusionPipeline loads it and prints sizes."""
import os
import shutil

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline

import arch
from common import MODEL_DIR, WORK, log


def main():
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=MODEL_DIR)
    ap.add_argument("--from-checkpoint", metavar="CKPT",
                    help="export the EMA weights of a running LDM training's checkpoint (WORK/ldm_ckpt.pt), "
                         "to look at progress")
    ap.add_argument("--ldm", default=os.path.join(WORK, "ldm.pt"), help="the LDM weights (train_ldm.py's output)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ft = os.path.join(WORK, "vae_ft.pt")  # decoder trained further, when present
    v = torch.load(ft if os.path.exists(ft) else os.path.join(WORK, "vae.pt"), weights_only=False)
    if args.from_checkpoint:
        ck = torch.load(args.from_checkpoint, weights_only=False)
        ldm = dict(unet=ck["ema_u"], te=ck["ema_t"], step=ck["step"])
    else:
        ldm = torch.load(args.ldm, weights_only=False)
    vae = AutoencoderKL(**arch.VAE, scaling_factor=round(v["scaling_factor"], 5))
    vae.load_state_dict(v["model"])
    unet, te = arch.make_unet(), arch.make_text_encoder()
    unet.load_state_dict(ldm["unet"])
    te.load_state_dict(ldm["te"])
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    arch.save_pipeline(args.out, vae, unet, te, fp16=True)
    pipe = StableDiffusionPipeline.from_pretrained(args.out, safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False, torch_dtype=torch.float32)
    img = pipe("a large red circle in the center on a black background", height=64, width=64,
               num_inference_steps=20, guidance_scale=4.0,
               generator=torch.Generator().manual_seed(0)).images[0]
    img.save(os.path.join(WORK, "export_check.png"))
    total = 0
    for dp, _, fs in os.walk(args.out):
        for f in fs:
            total += os.path.getsize(os.path.join(dp, f))
    log("export", f"wrote {args.out}: {total / 1e6:.1f} MB (scaling_factor {vae.config.scaling_factor}, "
                  f"ldm steps {ldm['step']}); diffusers check image {WORK}/export_check.png")


if __name__ == "__main__":
    main()
