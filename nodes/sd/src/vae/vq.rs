//! The vector quantizer of the VQ-regularized autoencoder (Rombach et al.
//! 2022, VQ-reg; diffusers `models/autoencoders/vae.py`, `VectorQuantizer`):
//! each latent pixel replaced by its nearest codebook entry. Inference only:
//! the commitment loss (where the `legacy` flag matters) is not computed.
use crate::weights::Weights;
use tch::Tensor;

pub struct VectorQuantizer {
    /// The codebook, [entries, embed_dim].
    codebook: Tensor,
}

impl VectorQuantizer {
    pub fn load(w: &mut Weights, prefix: &str, entries: i64, embed_dim: i64) -> VectorQuantizer {
        VectorQuantizer {
            codebook: w.take(&format!("{prefix}.embedding.weight"), &[entries, embed_dim]),
        }
    }

    /// The codebook indices of `z` [B, D, H, W]: argmin of the Euclidean
    /// distance (`torch.cdist`, ties to the first), flattened in B, H, W order.
    pub fn indices(&self, z: &Tensor) -> Tensor {
        let d = self.codebook.size()[1];
        let flat = z.permute([0, 2, 3, 1]).contiguous().view([-1, d]);
        Tensor::cdist(&flat, &self.codebook, 2.0, None).argmin(1, false)
    }

    /// `VectorQuantizer.forward`'s `z_q`: the nearest entries, returned as
    /// the reference returns them, `z + (z_q - z)` (its straight-through
    /// estimator; in floating point not always bit-equal to `z_q`).
    pub fn quantize(&self, z: &Tensor) -> Tensor {
        let s = z.size();
        let nearest = self
            .codebook
            .index_select(0, &self.indices(z))
            .view([s[0], s[2], s[3], s[1]]);
        let z_hwc = z.permute([0, 2, 3, 1]);
        let z_q = &z_hwc + (&nearest - &z_hwc);
        z_q.permute([0, 3, 1, 2]).contiguous()
    }
}
