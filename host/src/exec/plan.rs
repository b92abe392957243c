//! Planning: turns a validated graph into the steps to run, in dependency
//! order (a depth-first post-order), keeping only what the targets need, with each
//! input compiled to a direct source and each node's constant part of its
//! cache key hashed once.
use crate::graph::model::LOOP_TYPE;
use crate::graph::{CheckedGraph, Kind, Resolved};
use crate::plugin::NodeType;
use crate::value::Value;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use xxhash_rust::xxh3::Xxh3;

/// Where an input's value comes from at run time.
#[derive(Clone, Debug)]
pub enum Src {
    Const(Value),
    /// Output `output` of node `node` (for a loop read from outside: its final values).
    Out {
        node: usize,
        output: usize,
    },
    /// Variable `var` of enclosing loop `node` in the current iteration.
    LoopVar {
        node: usize,
        var: usize,
    },
    Absent,
}

pub enum StepKind {
    Plugin(Arc<NodeType>),
    Loop(LoopPlan),
}

pub struct LoopPlan {
    pub carried: usize,
    pub next: Vec<Src>,
    /// Body nodes that do not depend on this loop's variables: run once.
    pub invariant: Vec<usize>,
    /// Body nodes run every iteration, in order.
    pub variant: Vec<usize>,
    /// Nodes outside the body that the body reads (their keys go into the loop's key).
    pub free_refs: Vec<usize>,
}

pub struct Step {
    pub id: Arc<str>,
    pub type_name: Arc<str>,
    pub kind: StepKind,
    pub inputs: Vec<Src>,
    pub output_names: Vec<String>,
    /// Hash of everything static about the node: type, plugin generation,
    /// constants, link structure (and a loop's whole body).
    pub static_key: u128,
    /// Cacheable: depends on no loop variable (transitively).
    pub keyed: bool,
    /// Writes files; never served from the cache.
    pub output_node: bool,
    /// Inputs holding file paths whose stamps go into the key.
    pub file_inputs: Vec<usize>,
}

/// The compiled graph. `steps` is indexed like the graph's nodes; `order` is
/// what to run at the top level.
pub struct Plan {
    pub steps: Vec<Step>,
    pub order: Vec<usize>,
    /// The steps whose outputs the run reports (output nodes, or the targets).
    pub targets: Vec<usize>,
}

impl Plan {
    /// Plans the run of `targets` (top-level node ids), or of every output
    /// node when `targets` is None.
    pub fn new(checked: &CheckedGraph, targets: Option<&[&str]>) -> Result<Plan, String> {
        let g = &checked.graph;
        let n = g.nodes.len();
        // A link to an enclosing loop reads its current variables; any other
        // link reads a node's outputs (a loop's final values from outside).
        let src_in = |scope: Option<usize>, r: &Resolved| -> Src {
            match r {
                Resolved::Const(v) => Src::Const(v.clone()),
                Resolved::Absent => Src::Absent,
                Resolved::Link { node, output } => {
                    if crate::graph::validate::scope_chain(g, scope).any(|s| s == Some(*node)) {
                        Src::LoopVar {
                            node: *node,
                            var: *output,
                        }
                    } else {
                        Src::Out {
                            node: *node,
                            output: *output,
                        }
                    }
                }
            }
        };
        let inputs: Vec<Vec<Src>> = (0..n)
            .map(|i| {
                checked.inputs[i]
                    .iter()
                    .map(|r| src_in(g.nodes[i].scope, r))
                    .collect()
            })
            .collect();
        // `next` is read from inside the loop's body.
        let next: Vec<Vec<Src>> = (0..n)
            .map(|i| checked.next[i].iter().map(|r| src_in(Some(i), r)).collect())
            .collect();

        let inside = descendants(g);
        let var_deps = var_deps(checked, &inputs, &next, &inside);

        let target_nodes: Vec<usize> = match targets {
            Some(ids) => ids
                .iter()
                .map(|id| match g.by_id.get(*id) {
                    Some(&i) if g.nodes[i].scope.is_none() => Ok(i),
                    Some(_) => Err(format!(
                        "target `{id}` is inside a loop body; target the loop instead"
                    )),
                    None => Err(format!("no node `{id}` in the graph")),
                })
                .collect::<Result<_, _>>()?,
            None => (0..n).filter(|&i| is_output(checked, i)).collect(),
        };
        let top_targets: Vec<usize> = target_nodes.iter().map(|&t| top_rep(g, t)).collect();

        let mut steps: Vec<Option<Step>> = (0..n).map(|_| None).collect();
        for i in 0..n {
            let body_deps = |k: usize| scope_deps(g, &inputs, &next, &inside, k);
            let kind = match &checked.kinds[i] {
                Kind::Plugin(t) => StepKind::Plugin(t.clone()),
                Kind::Loop { carried } => {
                    let body_targets: Vec<usize> = next[i]
                        .iter()
                        .filter_map(|s| match s {
                            Src::Out { node, .. } => rep_in(g, *node, Some(i)),
                            _ => None,
                        })
                        .chain(
                            g.nodes[i]
                                .body
                                .iter()
                                .copied()
                                .filter(|&b| subtree_has_output(checked, b)),
                        )
                        .collect();
                    let order = ordered_needed(&body_targets, &body_deps)?;
                    let (variant, invariant): (Vec<usize>, Vec<usize>) =
                        order.into_iter().partition(|b| var_deps[*b].contains(&i));
                    StepKind::Loop(LoopPlan {
                        carried: carried.len(),
                        next: next[i].clone(),
                        invariant,
                        variant,
                        free_refs: free_refs(g, &inputs, &next, &inside, i),
                    })
                }
            };
            let file_inputs = match &checked.kinds[i] {
                Kind::Plugin(t) => t
                    .schema
                    .inputs
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.file)
                    .map(|(k, _)| k)
                    .collect(),
                Kind::Loop { .. } => Vec::new(),
            };
            steps[i] = Some(Step {
                id: g.nodes[i].id.as_str().into(),
                type_name: g.nodes[i].type_name.as_str().into(),
                static_key: 0,
                keyed: var_deps[i].is_empty(),
                output_node: is_output(checked, i),
                inputs: inputs[i].clone(),
                output_names: checked.output_names[i].clone(),
                file_inputs,
                kind,
            });
        }
        let mut steps: Vec<Step> = steps
            .into_iter()
            .map(|s| s.expect("every node planned"))
            .collect();
        for i in 0..n {
            steps[i].static_key = static_key(&steps, i);
        }
        let order = ordered_needed(&top_targets, &|k| scope_deps(g, &inputs, &next, &inside, k))?;
        Ok(Plan {
            steps,
            order,
            targets: target_nodes,
        })
    }
}

fn is_output(checked: &CheckedGraph, i: usize) -> bool {
    matches!(&checked.kinds[i], Kind::Plugin(t) if t.schema.output_node)
}

fn subtree_has_output(checked: &CheckedGraph, i: usize) -> bool {
    is_output(checked, i)
        || checked.graph.nodes[i]
            .body
            .iter()
            .any(|&b| subtree_has_output(checked, b))
}

fn is_inside(g: &crate::graph::Graph, node: usize, loop_: usize) -> bool {
    crate::graph::validate::scope_chain(g, g.nodes[node].scope).any(|s| s == Some(loop_))
}

/// The node in `scope` that contains `node`, if `node` is in or below it.
fn rep_in(g: &crate::graph::Graph, node: usize, scope: Option<usize>) -> Option<usize> {
    let mut r = node;
    loop {
        if g.nodes[r].scope == scope {
            return Some(r);
        }
        r = g.nodes[r].scope?;
    }
}

fn top_rep(g: &crate::graph::Graph, node: usize) -> usize {
    rep_in(g, node, None).expect("every node is under the top level")
}

/// Per loop: every node in its body, nested bodies included (others: empty).
/// Computed once, O(nodes × nesting depth), so that per-loop questions do not
/// scan the whole graph (which made 20,000 chained loops quadratic).
fn descendants(g: &crate::graph::Graph) -> Vec<Vec<usize>> {
    let mut inside = vec![Vec::new(); g.nodes.len()];
    for (b, node) in g.nodes.iter().enumerate() {
        let mut scope = node.scope;
        while let Some(l) = scope {
            inside[l].push(b);
            scope = g.nodes[l].scope;
        }
    }
    inside
}

/// Outside nodes read by loop `l`'s body or `next`.
fn free_refs(
    g: &crate::graph::Graph,
    inputs: &[Vec<Src>],
    next: &[Vec<Src>],
    inside: &[Vec<usize>],
    l: usize,
) -> Vec<usize> {
    let mut out = BTreeSet::new();
    let mut visit = |srcs: &[Src]| {
        for s in srcs {
            if let Src::Out { node, .. } = s {
                if !is_inside(g, *node, l) {
                    out.insert(*node);
                }
            }
        }
    };
    visit(&next[l]);
    for &b in &inside[l] {
        visit(&inputs[b]);
        visit(&next[b]);
    }
    out.into_iter().collect()
}

/// Node `k`'s dependencies among the nodes of its own scope.
fn scope_deps(
    g: &crate::graph::Graph,
    inputs: &[Vec<Src>],
    next: &[Vec<Src>],
    inside: &[Vec<usize>],
    k: usize,
) -> Vec<usize> {
    let scope = g.nodes[k].scope;
    let mut deps: Vec<usize> = inputs[k]
        .iter()
        .filter_map(|s| match s {
            Src::Out { node, .. } => rep_in(g, *node, scope),
            _ => None,
        })
        .collect();
    if !g.nodes[k].body.is_empty() || g.nodes[k].type_name == LOOP_TYPE {
        deps.extend(
            free_refs(g, inputs, next, inside, k)
                .into_iter()
                .filter_map(|f| rep_in(g, f, scope)),
        );
    }
    deps.retain(|&d| d != k);
    deps
}

/// The targets and everything they need, in dependency order: a depth-first
/// post-order with an explicit stack (no recursion, so a 10^6-node chain
/// needs no thread stack), touching only the nodes reached.
fn ordered_needed(
    targets: &[usize],
    deps: &dyn Fn(usize) -> Vec<usize>,
) -> Result<Vec<usize>, String> {
    const OPEN: bool = false;
    const DONE: bool = true;
    let mut state: HashMap<usize, bool> = HashMap::new();
    let mut order = Vec::new();
    for &t in targets {
        if state.contains_key(&t) {
            continue;
        }
        state.insert(t, OPEN);
        let mut stack = vec![(t, deps(t), 0usize)];
        while let Some((k, ds, at)) = stack.last_mut() {
            if let Some(&d) = ds.get(*at) {
                *at += 1;
                match state.get(&d) {
                    None => {
                        state.insert(d, OPEN);
                        let dd = deps(d);
                        stack.push((d, dd, 0));
                    }
                    Some(&OPEN) => return Err(format!("cycle through node #{d}")),
                    Some(_) => {}
                }
                continue;
            }
            state.insert(*k, DONE);
            order.push(*k);
            stack.pop();
        }
    }
    Ok(order)
}

/// Per node: the loops whose variables it reads, directly or through its
/// inputs (a loop: through its body and `next` too). Sources are resolved
/// before their readers with an explicit stack, never by recursion.
fn var_deps(
    checked: &CheckedGraph,
    inputs: &[Vec<Src>],
    next: &[Vec<Src>],
    inside: &[Vec<usize>],
) -> Vec<BTreeSet<usize>> {
    let n = inputs.len();
    let srcs_of = |i: usize| -> Vec<&Src> {
        let mut srcs: Vec<&Src> = inputs[i].iter().collect();
        if matches!(checked.kinds[i], Kind::Loop { .. }) {
            srcs.extend(next[i].iter());
            for &b in &inside[i] {
                srcs.extend(inputs[b].iter());
            }
        }
        srcs
    };
    let mut done: Vec<Option<BTreeSet<usize>>> = vec![None; n];
    let mut open = vec![false; n];
    for root in 0..n {
        let mut stack = vec![root];
        while let Some(&i) = stack.last() {
            if done[i].is_some() {
                stack.pop();
                continue;
            }
            let srcs = srcs_of(i);
            if !open[i] {
                // acyclic (validated); `open` guards re-entry all the same
                open[i] = true;
                let before = stack.len();
                for s in &srcs {
                    if let Src::Out { node, .. } = s {
                        if *node != i && done[*node].is_none() && !open[*node] {
                            stack.push(*node);
                        }
                    }
                }
                if stack.len() > before {
                    continue;
                }
            }
            let mut deps = BTreeSet::new();
            for s in srcs {
                match s {
                    Src::LoopVar { node, .. } => {
                        deps.insert(*node);
                    }
                    Src::Out { node, .. } if *node != i => {
                        if let Some(d) = &done[*node] {
                            deps.extend(d.iter().copied());
                        }
                    }
                    _ => {}
                }
            }
            deps.remove(&i);
            done[i] = Some(deps);
            open[i] = false;
            stack.pop();
        }
    }
    done.into_iter().map(Option::unwrap_or_default).collect()
}

/// Hashes a value into a cache key.
pub fn hash_value(h: &mut Xxh3, v: &Value) {
    match v {
        Value::None => h.update(&[0]),
        Value::Int(i) => {
            h.update(&[1]);
            h.update(&i.to_le_bytes());
        }
        Value::Float(f) => {
            h.update(&[2]);
            h.update(&f.to_bits().to_le_bytes());
        }
        Value::Bool(b) => h.update(&[3, *b as u8]),
        Value::Str(s) => {
            h.update(&[4]);
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        Value::List(items) => {
            h.update(&[7]);
            h.update(&(items.len() as u64).to_le_bytes());
            for item in items.iter() {
                hash_value(h, item);
            }
        }
        // Never constants; runtime values are keyed by their producer's key.
        Value::Tensor(_) | Value::Object(_) => h.update(&[9]),
    }
}

fn hash_src(h: &mut Xxh3, s: &Src) {
    match s {
        Src::Const(v) => hash_value(h, v),
        Src::Out { node, output } => {
            h.update(&[10]);
            h.update(&(*output as u64).to_le_bytes());
            let _ = node; // its key is mixed in at run time
        }
        Src::LoopVar { var, .. } => {
            h.update(&[11]);
            h.update(&(*var as u64).to_le_bytes());
        }
        Src::Absent => h.update(&[12]),
    }
}

/// The static part of step `i`'s cache key (a loop's includes its body).
fn static_key(steps: &[Step], i: usize) -> u128 {
    let s = &steps[i];
    let mut h = Xxh3::new();
    h.update(s.type_name.as_bytes());
    h.update(&[0xff]);
    if let StepKind::Plugin(t) = &s.kind {
        h.update(&t.library.generation.to_le_bytes());
        h.update(&t.index.to_le_bytes());
    }
    for src in &s.inputs {
        hash_src(&mut h, src);
    }
    if let StepKind::Loop(l) = &s.kind {
        for src in &l.next {
            hash_src(&mut h, src);
        }
        for &b in l.invariant.iter().chain(&l.variant) {
            h.update(steps[b].id.as_bytes());
            h.update(&static_key(steps, b).to_le_bytes());
            for src in &steps[b].inputs {
                if let Src::Out { node, .. } = src {
                    h.update(steps[*node].id.as_bytes());
                }
            }
        }
    }
    h.digest128()
}
