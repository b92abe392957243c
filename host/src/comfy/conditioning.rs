//! ComfyUI's CONDITIONING lists: `ConditioningCombine` (`nodes.py`: the two
//! lists concatenated) and what the sampler does with several conds.
//!
//! ComfyUI's sampler evaluates the model once per cond of a list and
//! combines the predictions weighted by each cond's mask and strength
//! (`comfy/samplers.py` `calc_cond_batch`: `out_cond += output * mult`,
//! `out_count += mult`, `out_cond /= out_count`). For full-area conds of
//! strength 1 (every cond CLIPTextEncode makes) that is the mean of the
//! denoised predictions. The expansion ([`Ctx::conds`] and the sampler's
//! body in `expand/sampling.rs`) evaluates the model once per cond and
//! averages the model outputs before `CFGDenoise` turns them into a
//! denoised prediction: the same mean, since eps and v outputs map to the
//! denoised prediction linearly at one sigma (float rounding apart).
//!
//! Area conditioning (`ConditioningSetArea`: crops of the latent evaluated
//! separately and blended by feathered masks) is not implemented; such a
//! workflow is refused at validation with the reason ([`refusal`]).
use super::expand::Ctx;
use super::schema::{Spec, Ty};
use super::workflow::{ApiInput, ApiNode, Workflow};
use crate::graph::{ErrorKind, GraphError};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// The most conds one sampler input may list (each is a model evaluation
/// per step).
const MAX_CONDS: usize = 64;

pub const SPECS: &[Spec] = &[Spec {
    class: "ConditioningCombine",
    inputs: &[
        ("conditioning_1", Ty::Link("CONDITIONING")),
        ("conditioning_2", Ty::Link("CONDITIONING")),
    ],
    outputs: &["CONDITIONING"],
    output_node: false,
}];

/// Why a ComfyUI node type known to be missing is refused.
pub fn refusal(class: &str) -> Option<&'static str> {
    match class {
        "ConditioningSetArea" | "ConditioningSetAreaPercentage" | "ConditioningSetAreaStrength" | "ConditioningSetMask" => Some(
            "area and mask conditioning (ComfyUI's calc_cond_batch evaluating latent crops per cond and \
             blending them by feathered area masks) is not implemented in diffgraph; full-area conds \
             combine with ConditioningCombine",
        ),
        _ => None,
    }
}

/// ConditioningCombine trees that loop or list more than [`MAX_CONDS`]
/// conds (a diamond chain doubles them per level): refused.
pub fn check(wf: &Workflow) -> Vec<GraphError> {
    // Leaves per ConditioningCombine, computed children first (iteratively);
    // `None` while a node is on the walk's path (a cycle if met again).
    let mut count: BTreeMap<&str, Option<usize>> = BTreeMap::new();
    let mut errors = Vec::new();
    let child = |id: &str, name: &str| match wf.get(id).and_then(|n| n.input(name)) {
        Some(ApiInput::Link { node, .. }) => wf
            .get(node)
            .filter(|n| n.class_type == "ConditioningCombine")
            .map(|_| node.as_str()),
        _ => None,
    };
    for (root, node) in wf {
        if node.class_type != "ConditioningCombine" || count.contains_key(root.as_str()) {
            continue;
        }
        let mut stack = vec![(root.as_str(), false)];
        while let Some((id, expanded)) = stack.pop() {
            let kids = [child(id, "conditioning_1"), child(id, "conditioning_2")];
            if !expanded {
                match count.get(id) {
                    Some(Some(_)) => continue,
                    Some(None) => {
                        errors.push(
                            GraphError::new(
                                ErrorKind::Cycle,
                                "ConditioningCombine nodes link in a cycle",
                            )
                            .node(id),
                        );
                        return errors;
                    }
                    None => {}
                }
                count.insert(id, None);
                stack.push((id, true));
                for k in kids.into_iter().flatten() {
                    stack.push((k, false));
                }
            } else {
                let n: usize = kids
                    .iter()
                    .map(|k| k.and_then(|k| count.get(k).copied().flatten()).unwrap_or(1))
                    .sum();
                count.insert(id, Some(n.min(MAX_CONDS + 1)));
            }
        }
    }
    for (id, n) in &count {
        if n.unwrap_or(0) > MAX_CONDS {
            errors.push(
                GraphError::new(
                    ErrorKind::InvalidGraph,
                    format!("ConditioningCombine lists more than {MAX_CONDS} conds (one model evaluation each per step)"),
                )
                .node(id),
            );
        }
    }
    errors
}

impl Ctx<'_> {
    /// The native links of the conds a CONDITIONING input lists, in
    /// ComfyUI's order (through ConditioningCombine: conditioning_1's, then
    /// conditioning_2's).
    pub(super) fn conds(&self, n: &ApiNode, input: &str) -> Vec<Json> {
        let wf = self.wf;
        let mut leaves = Vec::new();
        // Depth first, conditioning_1 before conditioning_2.
        let mut stack: Vec<(&ApiNode, &str)> = vec![(n, input)];
        while let Some((node, name)) = stack.pop() {
            let src = match node.input(name) {
                Some(ApiInput::Link { node: src, .. }) => &wf[src],
                other => panic!("schema::check guarantees a link `{name}`, got {other:?}"),
            };
            if src.class_type == "ConditioningCombine" {
                stack.push((src, "conditioning_2"));
                stack.push((src, "conditioning_1"));
            } else {
                leaves.push(self.link(node, name));
            }
        }
        leaves
    }
}
