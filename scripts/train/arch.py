"""Architecture of the embedded demo model (shared by the training scripts)."""
import json
import os
import shutil

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOKENIZER_SRC = os.path.join(ROOT, "tests", "fixtures", "sd", "sd1-tiny", "tokenizer")

VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(16, 32, 64),
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=64,
    mid_block_add_attention=False,
)
UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    # four levels, 16x16 -> 8x8 -> 4x4 -> 2x2: at the coarse levels zero
    # padding tells every cell where it is, which the position words need (a
    # first run with three levels, 16 -> 4, learned shape and colour but
    # ignored position entirely)
    block_out_channels=(32, 64, 128, 128),
    layers_per_block=1,
    # cross-attention (and self-attention) at 8x8 and 4x4 and in the 2x2 mid
    # block; the 16x16 level is convolutional only (attention there costs
    # 2.5x the whole step on a CPU)
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=64,
    attention_head_dim=4,  # = number of heads (diffusers' naming)
    norm_num_groups=16,
)
CLIP = dict(
    vocab_size=49408,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
    projection_dim=64,
)
SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
    timestep_spacing="leading",
)


def make_vae():
    return AutoencoderKL(**VAE)


def make_unet():
    return UNet2DConditionModel(**UNET)


def make_text_encoder():
    return CLIPTextModel(CLIPTextConfig(**CLIP))


def make_scheduler():
    return DDIMScheduler(**SCHEDULER)


def save_pipeline(out, vae, unet, text_encoder, fp16=True):
    """Writes the diffusers folder layout (model_index.json, scheduler/,
    tokenizer/, text_encoder/, unet/, vae/) that LoadCheckpoint reads."""
    os.makedirs(out, exist_ok=True)
    dtype_models = []
    for name, m in [("vae", vae), ("unet", unet), ("text_encoder", text_encoder)]:
        m = m.half() if fp16 else m
        m.save_pretrained(os.path.join(out, name), safe_serialization=True)
        m.float()
        dtype_models.append(name)
    make_scheduler().save_pretrained(os.path.join(out, "scheduler"))
    tok = os.path.join(out, "tokenizer")
    os.makedirs(tok, exist_ok=True)
    for f in ["merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]:
        shutil.copy(os.path.join(TOKENIZER_SRC, f), os.path.join(tok, f))
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
