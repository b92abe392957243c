//! The basic layers diffusers' models are built from, as plain weight
//! structs loaded from [`Weights`] by the diffusers parameter names. Small
//! ones run on one thread ([`op_threads`]).
use crate::op_threads::{self, conv_macs};
use crate::weights::Weights;
use tch::Tensor;

/// torch.nn.Linear: y = x W^T + b.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn load(w: &mut Weights, prefix: &str, in_dim: i64, out_dim: i64, bias: bool) -> Linear {
        Linear {
            weight: w.take(&format!("{prefix}.weight"), &[out_dim, in_dim]),
            bias: if bias {
                Some(w.take(&format!("{prefix}.bias"), &[out_dim]))
            } else {
                None
            },
        }
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let macs = x.numel() as i64 * self.weight.size()[0];
        op_threads::sized(x, macs, op_threads::LINEAR_SERIAL_BELOW_MACS, || {
            crate::cpu_precision::linear(x, &self.weight, self.bias.as_ref())
        })
    }
}

/// torch.nn.Conv2d with square kernels (the kernel chosen by [`crate::conv`]).
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub stride: i64,
    pub padding: i64,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        in_ch: i64,
        out_ch: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
    ) -> Conv2d {
        Conv2d {
            weight: w.take(
                &format!("{prefix}.weight"),
                &[out_ch, in_ch, kernel, kernel],
            ),
            bias: Some(w.take(&format!("{prefix}.bias"), &[out_ch])),
            stride,
            padding,
        }
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let macs = conv_macs(x, &self.weight, self.stride, self.padding);
        op_threads::sized(x, macs, op_threads::CONV_SERIAL_BELOW_MACS, || {
            crate::conv::conv2d(
                x,
                &self.weight,
                self.bias.as_ref(),
                self.stride,
                self.padding,
            )
        })
    }
}

/// torch.nn.GroupNorm (affine).
pub struct GroupNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub groups: i64,
    pub eps: f64,
}

impl GroupNorm {
    pub fn load(w: &mut Weights, prefix: &str, groups: i64, channels: i64, eps: f64) -> GroupNorm {
        GroupNorm {
            weight: w.take(&format!("{prefix}.weight"), &[channels]),
            bias: w.take(&format!("{prefix}.bias"), &[channels]),
            groups,
            eps,
        }
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let elements = x.numel() as i64;
        op_threads::sized(x, elements, op_threads::NORM_SERIAL_BELOW_ELEMENTS, || {
            x.group_norm(
                self.groups,
                Some(&self.weight),
                Some(&self.bias),
                self.eps,
                true,
            )
        })
    }
}

/// torch.nn.LayerNorm over the last dimension.
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
    pub dim: i64,
}

impl LayerNorm {
    pub fn load(w: &mut Weights, prefix: &str, dim: i64, eps: f64) -> LayerNorm {
        LayerNorm {
            weight: w.take(&format!("{prefix}.weight"), &[dim]),
            bias: w.take(&format!("{prefix}.bias"), &[dim]),
            eps,
            dim,
        }
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let elements = x.numel() as i64;
        op_threads::sized(x, elements, op_threads::NORM_SERIAL_BELOW_ELEMENTS, || {
            x.layer_norm(
                [self.dim],
                Some(&self.weight),
                Some(&self.bias),
                self.eps,
                true,
            )
        })
    }
}
