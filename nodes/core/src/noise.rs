//! Latent sources: seeded Gaussian noise and empty (zero) latents.
use crate::shapes::shape_input;
use diffgraph_sdk::prelude::*;

pub struct GaussianNoise;

impl Node for GaussianNoise {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("GaussianNoise", "latent")
            .description(
                "Standard normal noise times `scale`, as float32. Equal to PyTorch's \
                 torch.randn(shape, generator=torch.Generator(\"cpu\").manual_seed(seed)) * scale. \
                 The draw always happens on the CPU and the result is then moved to the run's \
                 device, so CPU and CUDA runs get the same noise. It reseeds libtorch's global \
                 random generator with `seed`.",
            )
            .input(InputSpec::int("seed").default(0).min(0.0))
            .input(
                InputSpec::new("shape", PortType::list(PortType::Int)).doc("e.g. [1, 4, 64, 64]"),
            )
            .input(InputSpec::float("scale").default(1.0))
            .input(
                InputSpec::new("batch_index", PortType::list(PortType::Int))
                    .optional()
                    .doc(
                        "ComfyUI's prepare_noise with batch_inds (a latent from LatentFromBatch): one \
                         randn([1, ...]) per index 0..=max from the seeded generator, item i gets draw \
                         batch_index[i]; one index per batch item",
                    ),
            )
            .output(OutputSpec::new("noise", PortType::Latent))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let seed = inputs.int("seed")?;
        if seed < 0 {
            return Err(
                format!("input `seed`: expected a non-negative integer, got {seed}").into(),
            );
        }
        let shape = shape_input(inputs, "shape")?;
        let scale = inputs.float("scale")?;
        let index = match inputs.get("batch_index")? {
            InputValue::None => None,
            _ => Some(inputs.int_list("batch_index")?),
        };
        // Seeding and drawing on the CPU generator is what makes the result
        // independent of the device and equal to PyTorch's CPU generator.
        let noise = diffgraph_sdk::rng::seeded(seed, || match index {
            None => Ok(Tensor::f_randn(
                shape.as_slice(),
                (Kind::Float, Device::Cpu),
            )?),
            Some(index) => indexed_randn(&shape, &index),
        })?
        .f_mul_scalar(scale)?;
        Ok(vec![noise.f_to_device(ctx.device())?.into()])
    }
}

/// `comfy/sample.py` `prepare_noise` with `batch_inds`: draws of one item
/// each for 0..=max(index) in order, item i taking draw index[i].
fn indexed_randn(shape: &[i64], index: &[i64]) -> Result<Tensor, NodeError> {
    if shape.first() != Some(&(index.len() as i64)) || index.iter().any(|i| *i < 0) {
        return Err(format!(
            "input `batch_index`: expected one non-negative index per batch item of {shape:?}, got {index:?}"
        )
        .into());
    }
    let mut item = shape.to_vec();
    item[0] = 1;
    let max = *index.iter().max().expect("a non-empty batch");
    let mut draws = Vec::with_capacity(max as usize + 1);
    for _ in 0..=max {
        draws.push(Tensor::f_randn(
            item.as_slice(),
            (Kind::Float, Device::Cpu),
        )?);
    }
    let picked: Vec<&Tensor> = index.iter().map(|i| &draws[*i as usize]).collect();
    Ok(Tensor::f_cat(&picked, 0)?)
}

pub struct EmptyLatent;

impl Node for EmptyLatent {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("EmptyLatent", "latent")
            .description("A float32 latent of zeros with the given shape, on the run's device.")
            .input(
                InputSpec::new("shape", PortType::list(PortType::Int)).doc("e.g. [1, 4, 64, 64]"),
            )
            .output(OutputSpec::new("latent", PortType::Latent))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let shape = shape_input(inputs, "shape")?;
        Ok(vec![Tensor::f_zeros(
            shape.as_slice(),
            (Kind::Float, ctx.device()),
        )?
        .into()])
    }
}
