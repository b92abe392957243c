//! A checkpoint component behind a port (CLIP, VAE): present, or missing
//! with the reason, so that a checkpoint without a VAE still gives a model
//! and only the nodes that need the VAE fail, saying why.
use diffgraph_sdk::prelude::*;
use std::sync::{Mutex, MutexGuard};

pub struct Component<T> {
    part: Option<Mutex<T>>,
    /// What the component is and why it is missing, for messages.
    what: &'static str,
    missing: String,
}

impl<T> Component<T> {
    /// `part`: the component, or why it is missing (e.g. "<folder> has no vae/").
    pub fn new(what: &'static str, part: Result<T, String>) -> Component<T> {
        let (part, missing) = match part {
            Ok(p) => (Some(Mutex::new(p)), String::new()),
            Err(why) => (None, why),
        };
        Component {
            part,
            what,
            missing,
        }
    }

    /// The component, locked (tensors are not Sync).
    pub fn lock(&self) -> Result<MutexGuard<'_, T>, NodeError> {
        let part = self.part.as_ref().ok_or_else(|| {
            NodeError::new(format!(
                "the checkpoint has no {}: {}",
                self.what, self.missing
            ))
        })?;
        part.lock().map_err(|_| {
            NodeError::new(format!(
                "the {} was poisoned by an earlier panic",
                self.what
            ))
        })
    }
}
