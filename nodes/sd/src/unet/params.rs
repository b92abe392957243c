//! Visiting every parameter tensor of a loaded U-Net, e.g. to fill a model
//! built without a checkpoint with random values ([`super::UNet::random`]).
use crate::layers::{Conv2d, GroupNorm, LayerNorm, Linear};
use tch::{Device, Kind, Tensor};

/// Something holding parameter tensors.
pub trait Params {
    fn visit(&mut self, f: &mut dyn FnMut(&mut Tensor));
}

impl<T: Params> Params for Vec<T> {
    fn visit(&mut self, f: &mut dyn FnMut(&mut Tensor)) {
        self.iter_mut().for_each(|p| p.visit(f));
    }
}

impl<T: Params> Params for Option<T> {
    fn visit(&mut self, f: &mut dyn FnMut(&mut Tensor)) {
        if let Some(p) = self {
            p.visit(f)
        }
    }
}

/// A bare parameter (an embedding table).
impl Params for Tensor {
    fn visit(&mut self, f: &mut dyn FnMut(&mut Tensor)) {
        f(self)
    }
}

impl Params for Linear {
    fn visit(&mut self, f: &mut dyn FnMut(&mut Tensor)) {
        f(&mut self.weight);
        if let Some(b) = &mut self.bias {
            f(b)
        }
    }
}

impl Params for Conv2d {
    fn visit(&mut self, f: &mut dyn FnMut(&mut Tensor)) {
        f(&mut self.weight);
        if let Some(b) = &mut self.bias {
            f(b)
        }
    }
}

impl Params for GroupNorm {
    fn visit(&mut self, f: &mut dyn FnMut(&mut Tensor)) {
        f(&mut self.weight);
        f(&mut self.bias);
    }
}

impl Params for LayerNorm {
    fn visit(&mut self, f: &mut dyn FnMut(&mut Tensor)) {
        f(&mut self.weight);
        f(&mut self.bias);
    }
}

/// Replaces every parameter of `model` with seeded random values (normal,
/// std 1/sqrt(fan-in); 0.1 for 1-D parameters), drawn in float32 on
/// `device` and stored in each tensor's own kind:
/// models built without a checkpoint, for benchmarks and tests.
pub fn fill_random(model: &mut impl Params, device: Device, seed: i64) {
    let _guard = tch::no_grad_guard();
    diffgraph_sdk::rng::seeded(seed, || fill_drawn(model, device));
}

fn fill_drawn(model: &mut impl Params, device: Device) {
    model.visit(&mut |t| {
        let size = t.size();
        let std = if size.len() > 1 {
            (size[0] as f64 / t.numel() as f64).sqrt()
        } else {
            0.1
        };
        // In place (converting to the tensor's kind), so that a name-to-tensor
        // map built with the model (LoRA's `UNet::params`) keeps sharing it.
        t.copy_(&(Tensor::randn(&size, (Kind::Float, device)) * std));
    });
}

/// Implements [`Params`] for a struct by visiting the listed fields.
macro_rules! params {
    ($ty:ty: $($field:ident),+) => {
        impl $crate::unet::params::Params for $ty {
            fn visit(&mut self, f: &mut dyn FnMut(&mut tch::Tensor)) {
                $( $crate::unet::params::Params::visit(&mut self.$field, f); )+
            }
        }
    };
}
pub(crate) use params;
