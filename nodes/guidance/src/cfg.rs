//! `CFGMixer`: classifier-free guidance (Ho & Salimans 2022, eq. 6) on two
//! model outputs, for denoisers evaluated outside the sd plugin's `UNetStep`
//! (or its raw `output_cond`/`output_uncond`). The formula, with diffusers'
//! guidance rescale (Lin et al. 2023), has its one home in
//! `diffgraph_diffusion::cfg`, which `UNetStep` calls too:
//!
//! ```text
//! ε̃(x_t, c) = ε(x_t, ∅) + g·(ε(x_t, c) − ε(x_t, ∅)),   g = w + 1
//! ```
//!
//! The g = 1 rule is `UNetStep`'s: it skips the unconditional branch at
//! g = 1 and outputs the guided `model_output` itself. Wired after a
//! `UNetStep` that skipped, `uncond` is the very tensor `cond` is, and this
//! node refuses to mix it at any other g (the guidance would do nothing).
use diffgraph_diffusion::cfg::cfg_mix;
use diffgraph_sdk::prelude::*;

/// g from exactly one of `w` (the paper's) and `guidance_scale` (g = w + 1).
pub fn guidance_scale(w: Option<f64>, g: Option<f64>) -> Result<f64, NodeError> {
    match (w, g) {
        (Some(w), None) => Ok(w + 1.0),
        (None, Some(g)) => Ok(g),
        (Some(w), Some(g)) => Err(format!(
            "inputs `w` ({w}) and `guidance_scale` ({g}) are both given; give exactly one \
             (they say the same thing: guidance_scale g = w + 1, w being Ho & Salimans' guidance strength)"
        )
        .into()),
        (None, None) => Err(
            "neither `w` nor `guidance_scale` is given; give exactly one \
             (guidance_scale g = w + 1: w = 0, i.e. g = 1, is the conditional model alone)"
                .into(),
        ),
    }
}

/// Whether `uncond` is `cond` itself (same storage, shape and strides):
/// what `UNetStep` outputs as `output_uncond` when it skipped the branch.
fn same_tensor(cond: &Tensor, uncond: &Tensor) -> bool {
    cond.numel() > 0
        && cond.data_ptr() == uncond.data_ptr()
        && cond.size() == uncond.size()
        && cond.stride() == uncond.stride()
}

pub struct CfgMixer;

impl Node for CfgMixer {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("CFGMixer", "guidance")
            .description(
                "Classifier-free guidance (Ho & Salimans 2022, eq. 6): output = (1 + w)·cond − w·uncond \
                 = uncond + g·(cond − uncond) with g = w + 1 (diffusers' guidance_scale, ComfyUI's cfg). \
                 Give exactly one of `w` and `guidance_scale`. Works on epsilon or v predictions alike. \
                 At g = 1 the output is `cond` unchanged. After a UNetStep, prefer its own guidance_scale \
                 and model_output (it skips the unconditional branch at g = 1); an `uncond` that is the \
                 `cond` tensor itself (a skipped branch) is refused at g ≠ 1. Unlike diffusers' \
                 pipelines, g < 1 is applied as written (g = 0 gives uncond).",
            )
            .input(InputSpec::tensor("cond").doc("the model output with the prompt / class: ε(x_t, c)"))
            .input(
                InputSpec::tensor("uncond")
                    .doc("the model output with the null / negative conditioning: ε(x_t, ∅)"),
            )
            .input(InputSpec::float("w").optional().doc("Ho & Salimans' guidance strength w (g = w + 1)"))
            .input(
                InputSpec::float("guidance_scale")
                    .optional()
                    .doc("diffusers' guidance_scale g = w + 1"),
            )
            .input(
                InputSpec::float("guidance_rescale")
                    .default(0.0)
                    .range(0.0, 1.0)
                    .doc("φ of Lin et al. 2023 (diffusers' guidance_rescale); 0 = off"),
            )
            .output(OutputSpec::new("output", PortType::Tensor).doc("the guided model output"))
    }

    fn run(&self, _ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let g = guidance_scale(inputs.opt_float("w")?, inputs.opt_float("guidance_scale")?)?;
        let (cond, uncond) = (inputs.tensor("cond")?, inputs.tensor("uncond")?);
        if g != 1.0 && same_tensor(cond, uncond) {
            return Err(format!(
                "input `uncond` is the `cond` tensor itself (a UNetStep at guidance_scale 1 does not \
                 compute the unconditional branch): guidance at g = {g} would do nothing. Give that \
                 UNetStep this guidance_scale and step with its model_output"
            )
            .into());
        }
        let out =
            cfg_mix(cond, uncond, g, inputs.float("guidance_rescale")?).map_err(String::from)?;
        Ok(vec![out.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w_and_guidance_scale_map_as_g_equals_w_plus_one() {
        assert_eq!(guidance_scale(Some(0.0), None).unwrap(), 1.0);
        assert_eq!(guidance_scale(Some(6.5), None).unwrap(), 7.5);
        assert_eq!(guidance_scale(None, Some(7.5)).unwrap(), 7.5);
        for e in [
            guidance_scale(Some(1.0), Some(2.0)),
            guidance_scale(None, None),
        ] {
            let msg = e.unwrap_err().0;
            assert!(
                msg.contains("`w`")
                    && msg.contains("`guidance_scale`")
                    && msg.contains("g = w + 1"),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_skipped_branch_is_recognised_as_cond_itself() {
        let cond = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        assert!(same_tensor(&cond, &cond.shallow_clone()));
        assert!(!same_tensor(&cond, &cond.copy()));
        assert!(!same_tensor(&cond, &cond.get(0)));
    }
}
