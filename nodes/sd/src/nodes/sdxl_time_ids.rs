//! SDXL's micro-conditioning as the U-Net's `time_ids` (diffusers
//! `StableDiffusionXLPipeline._get_add_time_ids`: original size, crop
//! top-left, target size, each (height, width); the refiner's
//! `StableDiffusionXLImg2ImgPipeline._get_add_time_ids` with
//! `requires_aesthetics_score`: original size, crop top-left, aesthetic
//! score).
use diffgraph_sdk::prelude::*;

pub struct SDXLTimeIds;

impl Node for SDXLTimeIds {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SDXLTimeIds", "conditioning")
            .description(
                "SDXL's added time ids for UNetStep's `time_ids` / `uncond_time_ids`: [1, 6] (original height, \
                 width, crop top, left, target height, width) for the base, or with aesthetic_score [1, 5] \
                 (original height, width, crop top, left, score) for the refiner (diffusers: 6.0 for the \
                 prompt, 2.5 for the negative prompt).",
            )
            .input(InputSpec::int("width").default(1024).min(1.0).doc("original width (diffusers' original_size)"))
            .input(InputSpec::int("height").default(1024).min(1.0).doc("original height"))
            .input(InputSpec::int("crop_top").default(0).min(0.0))
            .input(InputSpec::int("crop_left").default(0).min(0.0))
            .input(InputSpec::int("target_width").optional().min(1.0).doc("default: width"))
            .input(InputSpec::int("target_height").optional().min(1.0).doc("default: height"))
            .input(
                InputSpec::float("aesthetic_score")
                    .optional()
                    .doc("the refiner's form: replaces the target size"),
            )
            .input(InputSpec::new("latent", PortType::Latent).optional().doc(
                "take the original and target size from this latent, times 8 (ComfyUI's rule for SDXL \
                 conditioning without sizes) instead of width, height and the target size",
            ))
            .output(OutputSpec::new("time_ids", PortType::Tensor).doc("[1, 6] or [1, 5], float32"))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let (w, h) = match inputs.opt_tensor("latent")? {
            Some(latent) => match latent.size()[..] {
                [_, _, h, w] => (w * 8, h * 8),
                ref s => {
                    return Err(format!(
                        "input `latent`: expected [batch, channels, height, width], got {s:?}"
                    )
                    .into())
                }
            },
            None => (inputs.int("width")?, inputs.int("height")?),
        };
        let mut ids = vec![
            h as f32,
            w as f32,
            inputs.int("crop_top")? as f32,
            inputs.int("crop_left")? as f32,
        ];
        match inputs.opt_float("aesthetic_score")? {
            Some(score) => {
                if inputs.opt_int("target_width")?.is_some()
                    || inputs.opt_int("target_height")?.is_some()
                {
                    return Err(
                        "aesthetic_score (the refiner's time ids) replaces the target size: \
                                leave target_width and target_height unset"
                            .into(),
                    );
                }
                ids.push(score as f32);
            }
            None => {
                ids.push(inputs.opt_int("target_height")?.unwrap_or(h) as f32);
                ids.push(inputs.opt_int("target_width")?.unwrap_or(w) as f32);
            }
        }
        let n = ids.len() as i64;
        Ok(vec![Tensor::from_slice(&ids).view([1, n]).into()])
    }
}
