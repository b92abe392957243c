//! Tensors in .safetensors files: saving one under a key, loading one back.
use crate::paths::output_path;
use diffgraph_sdk::prelude::*;

pub struct SaveTensor;

impl Node for SaveTensor {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("SaveTensor", "tensor")
            .description(
                "Writes the tensor (moved to the CPU, made contiguous, dtype kept) under `key` in a \
                 .safetensors file in the output folder. The file appears atomically and \
                 survives a crash (temporary file, fsync, rename, folder fsync); an existing file is never \
                 replaced (the next free `{name}_00001_.safetensors` counter name is used).",
            )
            .output_node()
            .input(InputSpec::tensor("tensor"))
            .input(
                InputSpec::string("filename")
                    .default("tensor.safetensors")
                    .doc("Relative to the output folder; may contain subfolders, not `..`."),
            )
            .input(InputSpec::string("key").default("tensor"))
            .output(OutputSpec::new("path", PortType::String))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let tensor = inputs
            .tensor("tensor")?
            .f_to_device(Device::Cpu)?
            .f_contiguous()?;
        if tensor.numel() == 0 {
            return Err(format!(
                "input `tensor`: the tensor is empty (shape {:?}): nothing to save",
                tensor.size()
            )
            .into());
        }
        let key = inputs.str("key")?;
        if key.is_empty() {
            return Err("input `key`: expected a non-empty tensor name".into());
        }
        let path = output_path(ctx.output_dir(), "filename", inputs.str("filename")?)?;
        let written = crate::atomic_write::write_new(&path, |_, tmp| {
            Tensor::write_safetensors(&[(key, &tensor)], tmp)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        })?;
        Ok(vec![written.to_string_lossy().into_owned().into()])
    }
}

pub struct LoadTensor;

impl Node for LoadTensor {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("LoadTensor", "tensor")
            .description(
                "Reads one tensor from a .safetensors file onto the run's device. Without `key`, \
                 the file must hold exactly one tensor.",
            )
            .input(InputSpec::string("path").file())
            .input(InputSpec::string("key").optional())
            .output(OutputSpec::new("tensor", PortType::Tensor))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let path = inputs.str("path")?;
        let key = if inputs.has("key") {
            Some(inputs.str("key")?)
        } else {
            None
        };
        let mut tensors = Tensor::read_safetensors(path)
            .map_err(|e| NodeError::new(format!("cannot read tensors from {path}: {e}")))?;
        let mut keys: Vec<&str> = tensors.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort_unstable();
        let listed = if keys.is_empty() {
            "(none)".to_string()
        } else {
            keys.join(", ")
        };
        let index = match key {
            Some(key) => tensors.iter().position(|(k, _)| k == key).ok_or_else(|| {
                format!("input `key`: {path} has no tensor {key:?}; available keys: {listed}")
            })?,
            None if tensors.len() == 1 => 0,
            None => {
                return Err(format!(
                    "{path} holds {} tensors, so input `key` must say which one; available keys: {listed}",
                    tensors.len()
                )
                .into())
            }
        };
        let (_, tensor) = tensors.swap_remove(index);
        Ok(vec![tensor.f_to_device(ctx.device())?.into()])
    }
}
