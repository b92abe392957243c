//! Reproducible noise for the stochastic samplers (DDPM, Euler ancestral,
//! DDIM with eta > 0), identical to diffusers' draws when diffusers is given
//! `generator=torch.Generator("cpu").manual_seed(seed)`.
//!
//! diffusers draws each step's noise with `randn_tensor(model_output.shape,
//! generator=generator, dtype=model_output.dtype)`: `torch.randn` on the CPU
//! from one generator, one draw after the other, then moved to the device
//! (`utils/torch_utils.py`). tch has no generator object, only the global CPU
//! generator behind `tch::manual_seed`, and the run cannot keep that generator
//! between steps (other nodes draw from it, the graph may be re-run from a
//! cached scheduler). Two facts make the sequence reproducible anyway:
//!
//! - libtorch's default CPU generator after `manual_seed(s)` is in the same
//!   state as a fresh `torch.Generator("cpu").manual_seed(s)` (both seed the
//!   same mt19937 and clear the cached normal);
//! - for a float tensor of N >= 16 elements, `randn` turns N consecutive
//!   uniforms into normals in blocks of 16 (`normal_fill`), so when N is a
//!   multiple of 16, drawing k tensors of N one after the other gives exactly
//!   one draw of k·N values. (Verified for float32/16, bfloat16 and float64 by
//!   scripts/fixtures/scheduler_reference.py's stochastic cases.)
//!
//! So the first stochastic step seeds the global generator and draws the
//! noise of every step of the run at once (shape [skip + steps, ...]),
//! kept in the scheduler (shared by the states of one run; memory: steps ×
//! the latent, on the CPU); step i takes slice skip + i. Cost: one draw of the
//! whole run's noise, as diffusers makes, once per run. When N is not a
//! multiple of 16 (the last 16 values of each draw are redrawn, so draws do
//! not concatenate), step i re-seeds and replays draws 0..=skip+i: O(i) draws
//! per step, O(steps²) per run; latents are practically always multiples of 16.
//!
//! `skip` counts earlier same-shaped draws from the same generator: diffusers'
//! pipelines draw the initial latents (txt2img) or the img2img noise from the
//! same generator first, so `skip = 1` continues after `GaussianNoise` with
//! the same seed and shape.
use diffgraph_diffusion::Result;
use diffgraph_sdk::tch::{Device, Kind, Tensor};
use std::sync::{Arc, Mutex};

/// Draws `count` tensors shaped `shape` in `kind` from a fresh CPU generator
/// seeded with `seed`: all of them stacked ([count, ...]) as one draw when
/// the shape has a multiple of 16 elements, else only the last ([1, ...]).
/// Seeding and drawing hold the process-wide generator lock
/// (`diffgraph_sdk::rng`).
fn draw(seed: i64, shape: &[i64], kind: Kind, count: usize) -> Result<Tensor> {
    diffgraph_sdk::rng::seeded(seed, || draw_seeded(shape, kind, count))
}

fn draw_seeded(shape: &[i64], kind: Kind, count: usize) -> Result<Tensor> {
    let numel: i64 = shape.iter().product();
    if numel % 16 == 0 {
        let mut full = vec![count as i64];
        full.extend_from_slice(shape);
        Ok(Tensor::f_randn(full.as_slice(), (kind, Device::Cpu))?)
    } else {
        let mut last = None;
        for _ in 0..count {
            last = Some(Tensor::f_randn(shape, (kind, Device::Cpu))?);
        }
        let last = last.ok_or("no draws")?;
        Ok(last.f_unsqueeze(0)?)
    }
}

/// ComfyUI's `prepare_noise` (`comfy/sample.py`): `torch.manual_seed(seed)`
/// then one `torch.randn(shape)` on the CPU, float32.
pub fn seeded_randn(seed: i64, shape: &[i64]) -> Result<Tensor> {
    seeded_randn_as(seed, shape, Kind::Float)
}

/// `torch.randn(shape, dtype=kind, generator=torch.Generator().manual_seed(seed))`
/// on the CPU (torchsde's `_randn`).
pub fn seeded_randn_as(seed: i64, shape: &[i64], kind: Kind) -> Result<Tensor> {
    Ok(draw(seed, shape, kind, 1)?.f_get(0)?)
}

struct Cache {
    shape: Vec<i64>,
    kind: Kind,
    /// [skip + steps, ...shape] on the CPU.
    draws: Tensor,
}

/// The noise of one seeded generator over a run (see the module docs).
#[derive(Clone)]
pub struct NoiseStream {
    seed: i64,
    skip: usize,
    cache: Arc<Mutex<Option<Cache>>>,
}

impl NoiseStream {
    pub fn new(seed: i64, skip: usize) -> NoiseStream {
        NoiseStream {
            seed,
            skip,
            cache: Arc::new(Mutex::new(None)),
        }
    }

    pub fn seed(&self) -> i64 {
        self.seed
    }

    /// Draw number `number` of the run (0 for the run's first step) shaped,
    /// typed and placed like `like`; `run_len` is the number of steps of
    /// the run, drawn at once on first use.
    pub fn noise(&self, number: usize, run_len: usize, like: &Tensor) -> Result<Tensor> {
        let (shape, kind) = (like.size(), like.kind());
        let index = self.skip + number;
        let numel: i64 = shape.iter().product();
        let cpu = if numel % 16 == 0 {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let fits = matches!(&*cache, Some(c) if c.shape == shape && c.kind == kind
                && c.draws.size()[0] > index as i64);
            if !fits {
                let count = (self.skip + run_len.max(number + 1)).max(index + 1);
                let draws = draw(self.seed, &shape, kind, count)?;
                *cache = Some(Cache {
                    shape: shape.clone(),
                    kind,
                    draws,
                });
            }
            let c = cache.as_ref().ok_or("noise cache")?;
            c.draws.f_get(index as i64)?
        } else {
            draw(self.seed, &shape, kind, index + 1)?.f_get(0)?
        };
        Ok(cpu.f_to_device(like.device())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_continue_one_generator() {
        let like = Tensor::zeros([2, 8], (Kind::Float, Device::Cpu));
        let stream = NoiseStream::new(11, 1);
        let (a, b) = (
            stream.noise(0, 3, &like).unwrap(),
            stream.noise(2, 3, &like).unwrap(),
        );
        let expected = draw(11, &[2, 8], Kind::Float, 4).unwrap();
        assert!(a.equal(&expected.get(1)) && b.equal(&expected.get(3)));
        // Not a multiple of 16: replayed draws give the same sequence as sequential draws.
        let odd = Tensor::zeros([3, 3], (Kind::Float, Device::Cpu));
        let n2 = stream.noise(1, 3, &odd).unwrap();
        let seq: Vec<Tensor> = diffgraph_sdk::rng::seeded(11, || {
            (0..3)
                .map(|_| Tensor::randn([3, 3], (Kind::Float, Device::Cpu)))
                .collect()
        });
        assert!(n2.equal(&seq[2]));
    }
}
