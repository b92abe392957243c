//! CompVis' class-conditional cross-attention LDM (the ImageNet model of
//! `configs/latent-diffusion/cin256-v2.yaml`): its cond stage, a
//! `ClassEmbedder` (`ldm/modules/encoders/modules.py`: an `nn.Embedding`,
//! `forward` = `embedding(labels[:, None])`), turns each class label into a
//! one-token context [B, 1, embed_dim] that Stable Diffusion's U-Net
//! attends to. As a family it takes class labels, like ADM and
//! UNet2DModel, so the class-conditional graphs drive it unchanged.
use super::sd::SdUnet;
use super::{check_labels, Accepts, Conditioning, Denoiser, OutputLayout};
use diffgraph_sdk::prelude::*;
use std::sync::Mutex;

pub struct ClassEmbedded {
    unet: SdUnet,
    /// [n_classes, embed_dim], in the U-Net's dtype and on its device
    /// (behind a lock: tensors are not Sync).
    embedding: Mutex<Tensor>,
    n_classes: i64,
}

impl ClassEmbedded {
    pub fn new(unet: SdUnet, embedding: Tensor) -> ClassEmbedded {
        ClassEmbedded {
            n_classes: embedding.size()[0],
            unet,
            embedding: Mutex::new(embedding),
        }
    }
}

impl Denoiser for ClassEmbedded {
    fn family(&self) -> &'static str {
        "latent diffusion U-Net with a class embedder"
    }

    fn accepts(&self) -> Accepts {
        Accepts::class_labels_only(true)
    }

    fn output_layout(&self) -> &OutputLayout {
        self.unet.output_layout()
    }

    fn kind(&self) -> Kind {
        self.unet.kind()
    }

    fn predict(&self, x: &Tensor, t: f64, cond: &Conditioning) -> Result<Tensor, NodeError> {
        let labels = cond
            .class_labels
            .as_ref()
            .ok_or("the model needs class labels")?;
        check_labels(labels, self.n_classes, "class_labels")?;
        let context = {
            let embedding = self
                .embedding
                .lock()
                .map_err(|_| NodeError::new("the class embedder was poisoned by a panic"))?;
            embedding
                .f_index_select(0, &labels.to_device(embedding.device()).reshape([-1]))?
                .f_unsqueeze(1)?
        };
        let text_like = Conditioning {
            context: Some(context),
            ..Default::default()
        };
        self.unet.predict(x, t, &text_like)
    }
}
