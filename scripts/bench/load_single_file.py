"""Checkpoint loading, diffgraph vs diffusers: an SD1.5-size single-file
checkpoint (random weights, fp16 as stored, ~2 GiB; never committed).

  make DIR   writes DIR/sd15-random.safetensors (original CompVis layout, via
             scripts/fixtures/sd_fixtures_single_file.py) and DIR/config/, the
             diffusers configs of the same architecture, so that diffusers'
             from_single_file needs no network
  diffusers DIR
             StableDiffusionPipeline.from_single_file (fp32), then one 64x64
             1-step generation; prints {"load_s", "peak_rss_mib"}
Run by scripts/bench/load.sh, which adds diffgraph's side (LoadCheckpoint
node time from --profile, peak RSS of the process).
"""
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))


def make(out_dir):
    from types import SimpleNamespace

    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from sd_fixtures_single_file import to_single_file
    from transformers import CLIPTextConfig, CLIPTextModel
    import safetensors.torch as st

    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768)  # the SD 1.5 architecture
    vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        sample_size=512)
    te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                      num_attention_heads=12, max_position_embeddings=77, vocab_size=49408,
                                      hidden_act="quick_gelu", projection_dim=768))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    pipe = SimpleNamespace(unet=unet, vae=vae, text_encoder=te, scheduler=sched)
    os.makedirs(out_dir, exist_ok=True)
    st.save_file(to_single_file(pipe, openclip=False, seed=0), os.path.join(out_dir, "sd15-random.safetensors"))
    cfg = os.path.join(out_dir, "config")
    unet.save_config(os.path.join(cfg, "unet"))
    vae.save_config(os.path.join(cfg, "vae"))
    te.config.save_pretrained(os.path.join(cfg, "text_encoder"))
    sched.save_config(os.path.join(cfg, "scheduler"))
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    import shutil
    shutil.copytree(os.path.join(root, "tests/fixtures/sd/sd1-tiny/tokenizer"), os.path.join(cfg, "tokenizer"),
                    dirs_exist_ok=True)
    with open(os.path.join(cfg, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionPipeline", "feature_extractor": [None, None],
                   "requires_safety_checker": False, "safety_checker": [None, None],
                   "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
                   "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
                   "vae": ["diffusers", "AutoencoderKL"]}, f)


def diffusers_side(d):
    from diffusers import StableDiffusionPipeline
    t = time.perf_counter()
    pipe = StableDiffusionPipeline.from_single_file(os.path.join(d, "sd15-random.safetensors"),
                                                    config=os.path.join(d, "config"), local_files_only=True,
                                                    torch_dtype=torch.float32, safety_checker=None)
    load = time.perf_counter() - t
    pipe.set_progress_bar_config(disable=True)
    pipe("a cat", height=64, width=64, num_inference_steps=1, guidance_scale=1.0, output_type="np")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"load_s": load, "peak_rss_mib": rss}))


if __name__ == "__main__":
    {"make": make, "diffusers": diffusers_side}[sys.argv[1]](sys.argv[2])
