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
//! Area conditioning (`ConditioningSetArea`): a cond with an area is
//! evaluated on that crop of the sample; every cond's denoised prediction
//! is added in its place weighted by its strength faded over the crop's
//! inner edges, then divided by the summed weights (`AreaCrop`,
//! `AreaAccumulate`, `AreaMean` of the sampling plugin; the math in
//! `diffgraph_diffusion::comfy::area`). The percentage, strength-only and
//! mask variants are refused at validation with the reason ([`refusal`]).
use super::expand::Ctx;
use super::schema::{Spec, Ty};
use super::workflow::{ApiInput, ApiNode, Workflow};
use crate::graph::{ErrorKind, GraphError};
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeMap;

/// The most conds one sampler input may list (each is a model evaluation
/// per step).
const MAX_CONDS: usize = 64;

const MAX_RES: i64 = 16384;

pub const SPECS: &[Spec] = &[
    Spec {
        class: "ConditioningCombine",
        inputs: &[
            ("conditioning_1", Ty::Link("CONDITIONING")),
            ("conditioning_2", Ty::Link("CONDITIONING")),
        ],
        outputs: &["CONDITIONING"],
        output_node: false,
    },
    Spec {
        class: "ConditioningSetArea",
        inputs: &[
            ("conditioning", Ty::Link("CONDITIONING")),
            ("width", Ty::Int(64, MAX_RES)),
            ("height", Ty::Int(64, MAX_RES)),
            ("x", Ty::Int(0, MAX_RES)),
            ("y", Ty::Int(0, MAX_RES)),
            ("strength", Ty::Float(0.0, 10.0)),
        ],
        outputs: &["CONDITIONING"],
        output_node: false,
    },
];

/// Why a ComfyUI node type known to be missing is refused.
pub fn refusal(class: &str) -> Option<&'static str> {
    match class {
        "ConditioningSetAreaPercentage" | "ConditioningSetAreaStrength" | "ConditioningSetMask" => Some(
            "percentage areas, strength alone and mask conditioning are not implemented in diffgraph \
             (ConditioningSetArea and ConditioningCombine are)",
        ),
        _ => None,
    }
}

/// ConditioningCombine / SetArea trees that loop or list more than [`MAX_CONDS`]
/// conds (a diamond chain doubles them per level): refused.
pub fn check(wf: &Workflow) -> Vec<GraphError> {
    // Leaves per ConditioningCombine, computed children first (iteratively);
    // `None` while a node is on the walk's path (a cycle if met again).
    let mut count: BTreeMap<&str, Option<usize>> = BTreeMap::new();
    let mut errors = Vec::new();
    let walked = |class: &str| matches!(class, "ConditioningCombine" | "ConditioningSetArea");
    let child = |id: &str, name: &str| match wf.get(id).and_then(|n| n.input(name)) {
        Some(ApiInput::Link { node, .. }) => wf
            .get(node)
            .filter(|n| walked(&n.class_type))
            .map(|_| node.as_str()),
        _ => None,
    };
    for (root, node) in wf {
        if !walked(&node.class_type) || count.contains_key(root.as_str()) {
            continue;
        }
        let mut stack = vec![(root.as_str(), false)];
        while let Some((id, expanded)) = stack.pop() {
            let kids = [
                child(id, "conditioning_1"),
                child(id, "conditioning_2"),
                child(id, "conditioning"),
            ];
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
                // A leaf (CLIPTextEncode) counts 1; SetArea has one input.
                let n: usize = match wf[id].class_type.as_str() {
                    "ConditioningSetArea" => kids[2].map_or(1, |k| count[k].unwrap_or(1)),
                    _ => kids[..2]
                        .iter()
                        .map(|k| k.map_or(1, |k| count[k].unwrap_or(1)))
                        .sum(),
                };
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

/// One cond of a CONDITIONING list: the native link of its text
/// conditioning and, from ConditioningSetArea, its area ([h, w, y, x] in
/// latent units) and strength.
#[derive(Clone, Debug)]
pub struct Cond {
    pub link: Json,
    pub area: Option<[i64; 4]>,
    pub strength: f64,
}

impl Ctx<'_> {
    /// The conds a CONDITIONING input lists, in ComfyUI's order (through
    /// ConditioningCombine: conditioning_1's, then conditioning_2's; the
    /// ConditioningSetArea nearest the sampler sets the area, as it is
    /// applied last).
    pub(super) fn conds(&self, n: &ApiNode, input: &str) -> Vec<Cond> {
        let wf = self.wf;
        let mut leaves = Vec::new();
        type Area = Option<([i64; 4], f64)>;
        let mut stack: Vec<(&ApiNode, &str, Area)> = vec![(n, input, None)];
        while let Some((node, name, area)) = stack.pop() {
            let src = match node.input(name) {
                Some(ApiInput::Link { node: src, .. }) => &wf[src],
                other => panic!("schema::check guarantees a link `{name}`, got {other:?}"),
            };
            match src.class_type.as_str() {
                "ConditioningCombine" => {
                    stack.push((src, "conditioning_2", area));
                    stack.push((src, "conditioning_1", area));
                }
                "ConditioningSetArea" => {
                    let int = |k: &str| self.konst(src, k).as_i64().unwrap_or(0);
                    // (height // 8, width // 8, y // 8, x // 8)
                    let own = [
                        int("height") / 8,
                        int("width") / 8,
                        int("y") / 8,
                        int("x") / 8,
                    ];
                    let strength = self.konst(src, "strength").as_f64().unwrap_or(1.0);
                    stack.push((src, "conditioning", area.or(Some((own, strength)))));
                }
                _ => leaves.push(Cond {
                    link: self.link(node, name),
                    area: area.map(|a| a.0),
                    strength: area.map_or(1.0, |a| a.1),
                }),
            }
        }
        leaves
    }

    /// The loop body's model evaluations and `CFGDenoise` (`ID:cfg`) for
    /// the sampler `id`: one evaluation per cond. Full-area conds: the first
    /// of each branch in one batched UNetStep, any further alone, their
    /// outputs averaged. With an area anywhere: each cond on its crop,
    /// combined by AreaAccumulate / AreaMean as calc_cond_batch does.
    pub(super) fn evaluations(
        &mut self,
        id: &str,
        model: &Json,
        sdxl: bool,
        positive: &[Cond],
        negative: Option<&[Cond]>,
        cfg: &Json,
    ) -> Map<String, Json> {
        let p = |part: &str| format!("{id}:{part}");
        let evaluate = |cond: &Json, sample: Json| {
            let mut unet = json!({ "type": "UNetStep", "inputs": {
                "model": model,
                "sample": sample,
                "timestep": [p("input"), "timestep"],
                "cond": cond,
            }});
            if sdxl {
                // The full latent's time ids for a crop too, as encode_adm.
                unet["inputs"]["pooled"] = json!([cond[0], "pooled"]);
                unet["inputs"]["time_ids"] = json!([p("time_ids"), "time_ids"]);
            }
            unet
        };
        let sample = json!([p("input"), "sample"]);
        let mut body = Map::new();
        let mut cfg =
            json!({ "type": "CFGDenoise", "inputs": { "state": [id, "state"], "cfg": cfg }});
        let areas = positive
            .iter()
            .chain(negative.unwrap_or_default())
            .any(|c| c.area.is_some());
        if !areas {
            let mut unet = evaluate(&positive[0].link, sample.clone());
            if let Some(neg) = negative {
                unet["inputs"]["uncond"] = neg[0].link.clone();
                if sdxl {
                    unet["inputs"]["uncond_pooled"] = json!([neg[0].link[0], "pooled"]);
                }
            }
            body.insert(p("unet"), unet);
        }
        let branches = [
            ("cond", "positive", Some(positive)),
            ("uncond", "negative", negative),
        ];
        for (tag, comfy_input, conds) in branches {
            let Some(conds) = conds else { continue };
            let mut origin = |uid: &str| {
                self.origins.push((
                    (uid.to_string(), "cond".into()),
                    (id.into(), comfy_input.into()),
                ));
            };
            if areas {
                // calc_cond_batch: sum of denoised * mult over sum of mult.
                let mut acc: Option<String> = None;
                for (k, c) in conds.iter().enumerate() {
                    let (uid, aid) = (p(&format!("unet_{tag}{k}")), p(&format!("acc_{tag}{k}")));
                    let input = match c.area {
                        Some(area) => {
                            let cid = p(&format!("crop_{tag}{k}"));
                            body.insert(cid.clone(), json!({ "type": "AreaCrop", "inputs": { "x": sample, "area": area } }));
                            json!([cid, "out"])
                        }
                        None => sample.clone(),
                    };
                    body.insert(uid.clone(), evaluate(&c.link, input));
                    origin(&uid);
                    let mut a = json!({ "type": "AreaAccumulate", "inputs": {
                        "state": [id, "state"], "output": [uid, "output_cond"], "strength": c.strength }});
                    if let Some(area) = c.area {
                        a["inputs"]["area"] = json!(area);
                    }
                    if let Some(prev) = acc {
                        a["inputs"]["sum"] = json!([prev, "sum"]);
                        a["inputs"]["count"] = json!([prev, "count"]);
                    }
                    body.insert(aid.clone(), a);
                    acc = Some(aid);
                }
                let mid = p(&format!("{tag}_mean"));
                let acc = acc.expect("a branch lists at least one cond");
                body.insert(
                    mid.clone(),
                    json!({ "type": "AreaMean", "inputs": {
                    "sum": [acc, "sum"], "count": [acc, "count"] }}),
                );
                cfg["inputs"][format!("denoised_{tag}")] = json!([mid, "denoised"]);
                continue;
            }
            // Full-area conds: the mean of their predictions.
            let output = format!("output_{tag}");
            let mut sum = json!([p("unet"), output]);
            for (k, c) in conds.iter().enumerate().skip(1) {
                let (uid, aid) = (p(&format!("unet_{tag}{k}")), p(&format!("{tag}_sum{k}")));
                body.insert(uid.clone(), evaluate(&c.link, sample.clone()));
                origin(&uid);
                body.insert(aid.clone(), json!({ "type": "TensorAdd", "inputs": { "a": sum, "b": [uid, "output_cond"] } }));
                sum = json!([aid, "sum"]);
            }
            if conds.len() > 1 {
                let mid = p(&format!("{tag}_mean"));
                body.insert(
                    mid.clone(),
                    json!({ "type": "TensorScale", "inputs": {
                    "x": sum, "factor": 1.0 / conds.len() as f64 } }),
                );
                sum = json!([mid, "scaled"]);
            }
            cfg["inputs"][output] = sum;
        }
        body.insert(p("cfg"), cfg);
        body
    }
}
