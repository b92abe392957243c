//! Validation: everything that can be checked before any node runs, with all
//! problems reported at once. The result resolves every input to a constant
//! or to a (node, output index) pair for the planner.
use super::constants::{check_constant, const_type};
use super::errors::{ErrorKind, GraphError, GraphErrors};
use super::model::{Graph, Input, Link, OutputRef, LOOP_INDEX, LOOP_ITEM, LOOP_OVER};
use super::resolved::Resolved;
use super::type_names;
use crate::plugin::{Lookup, NodeType, Registry};
use crate::value::Value;
use diffgraph_sdk::PortType;
use std::sync::Arc;

/// What a node is, once its type is known.
#[derive(Clone)]
pub enum Kind {
    Plugin(Arc<NodeType>),
    /// Carried variable names, in the order of the loop's outputs.
    Loop {
        carried: Vec<String>,
    },
}

/// A graph that passed validation, with every input resolved.
pub struct CheckedGraph {
    pub graph: Graph,
    pub kinds: Vec<Kind>,
    /// Per node: plugin inputs in schema order; for loops, `over` first and
    /// then the carried variables' initial values.
    pub inputs: Vec<Vec<Resolved>>,
    /// Per loop: the carried variables' next values.
    pub next: Vec<Vec<Resolved>>,
    pub output_names: Vec<Vec<String>>,
    pub output_types: Vec<Vec<PortType>>,
}

impl CheckedGraph {
    /// Ids of the nodes outside any loop body (what progress counts).
    pub fn top_level_ids(&self) -> std::collections::HashSet<String> {
        let top = self.graph.nodes.iter().filter(|n| n.scope.is_none());
        top.map(|n| n.id.clone()).collect()
    }
}

/// Validates `graph` against the node types in `registry`.
pub fn validate(
    graph: Graph,
    registry: &Registry,
    require_outputs: bool,
) -> Result<CheckedGraph, GraphErrors> {
    let mut errors = Vec::new();
    let n = graph.nodes.len();
    let mut kinds = Vec::with_capacity(n);
    for node in &graph.nodes {
        kinds.push(if node.is_loop() {
            let carried: Vec<String> = node
                .inputs
                .iter()
                .map(|(k, _)| k.clone())
                .filter(|k| k != LOOP_OVER)
                .collect();
            Some(Kind::Loop { carried })
        } else {
            match registry.lookup(&node.type_name) {
                Ok(t) => Some(Kind::Plugin(t.clone())),
                Err(Lookup::Ambiguous(all)) => {
                    errors.push(type_names::ambiguous_type(&node.id, &node.type_name, all));
                    None
                }
                Err(Lookup::Unknown) => {
                    if !node.type_name.is_empty() {
                        errors.push(type_names::unknown_type(
                            &node.id,
                            &node.type_name,
                            registry,
                        ));
                    }
                    None
                }
            }
        });
    }
    let mut v = Validator {
        graph: &graph,
        kinds: &kinds,
        errors,
        output_types: vec![None; n],
        visiting: vec![false; n],
    };
    for i in 0..n {
        v.outputs_of(i);
    }
    let mut inputs = vec![Vec::new(); n];
    let mut next = vec![Vec::new(); n];
    for i in 0..n {
        inputs[i] = v.check_inputs(i);
        if matches!(kinds[i], Some(Kind::Loop { .. })) {
            next[i] = v.check_next(i);
        }
    }
    let mut errors = v.errors;
    let output_types: Vec<Vec<PortType>> = v
        .output_types
        .into_iter()
        .map(|t| {
            t.map(|t| t.into_iter().map(|(_, ty)| ty).collect())
                .unwrap_or_default()
        })
        .collect();
    errors.extend(super::cycles::find_cycles(&graph, &inputs, &next));
    let has_output = kinds
        .iter()
        .any(|k| matches!(k, Some(Kind::Plugin(t)) if t.schema.output_node));
    if require_outputs && !has_output && !kinds.iter().any(|k| k.is_none()) {
        errors.push(
            GraphError::new(
                ErrorKind::NoOutputs,
                "the graph has no output node, so running it would do nothing",
            )
            .expected("at least one node that writes a result (SaveImage, SaveTensor, ...)"),
        );
    }
    if !errors.is_empty() {
        return Err(GraphErrors(errors));
    }
    let output_names = (0..n)
        .map(|i| match &kinds[i] {
            Some(Kind::Plugin(t)) => t.schema.outputs.iter().map(|o| o.name.clone()).collect(),
            Some(Kind::Loop { carried }) => loop_output_names(carried),
            None => Vec::new(),
        })
        .collect();
    Ok(CheckedGraph {
        graph,
        kinds: kinds.into_iter().map(|k| k.expect("checked")).collect(),
        inputs,
        next,
        output_names,
        output_types,
    })
}

/// A loop's outputs: its carried variables, then the per-iteration `item` and
/// `index` (readable only inside its body).
fn loop_output_names(carried: &[String]) -> Vec<String> {
    carried
        .iter()
        .cloned()
        .chain([LOOP_ITEM.to_string(), LOOP_INDEX.to_string()])
        .collect()
}

pub(super) struct Validator<'a> {
    pub(super) graph: &'a Graph,
    pub(super) kinds: &'a [Option<Kind>],
    pub(super) errors: Vec<GraphError>,
    pub(super) output_types: Vec<Option<Vec<(String, PortType)>>>,
    pub(super) visiting: Vec<bool>,
}

impl Validator<'_> {
    /// Output names and types of node `i` (memoised). Loops derive theirs
    /// from their inputs' types, so a chain of loops is a chain of
    /// dependencies: they are resolved with an explicit stack (sources
    /// first), never by recursion, so a 10^5-loop chain needs no thread
    /// stack. A node met again while open is on a cycle (reported by
    /// `find_cycles`) and reads as untyped.
    pub(super) fn outputs_of(&mut self, i: usize) -> Vec<(String, PortType)> {
        if let Some(t) = &self.output_types[i] {
            return t.clone();
        }
        if self.visiting[i] {
            return Vec::new();
        }
        let mut stack = vec![i];
        while let Some(&j) = stack.last() {
            if self.output_types[j].is_some() {
                stack.pop();
                continue;
            }
            if !self.visiting[j] {
                self.visiting[j] = true;
                let before = stack.len();
                for d in self.loop_sources(j) {
                    if self.output_types[d].is_none() && !self.visiting[d] {
                        stack.push(d);
                    }
                }
                if stack.len() > before {
                    continue;
                }
            }
            let outs = self.compute_outputs(j);
            self.visiting[j] = false;
            self.output_types[j] = Some(outs);
            stack.pop();
        }
        self.output_types[i].clone().unwrap_or_default()
    }

    /// The nodes a loop's output types come from (its `over` and carried
    /// inputs' sources); none for plugin nodes.
    fn loop_sources(&self, i: usize) -> Vec<usize> {
        let graph = self.graph;
        if !matches!(self.kinds[i], Some(Kind::Loop { .. })) {
            return Vec::new();
        }
        graph.nodes[i]
            .inputs
            .iter()
            .filter_map(|(_, inp)| match inp {
                Input::Link(l) => graph.by_id.get(&l.node).copied(),
                Input::Const(_) => None,
            })
            .collect()
    }

    /// Node `i`'s outputs, its sources' already known (see `outputs_of`).
    fn compute_outputs(&mut self, i: usize) -> Vec<(String, PortType)> {
        match &self.kinds[i] {
            None => Vec::new(),
            Some(Kind::Plugin(t)) => t
                .schema
                .outputs
                .iter()
                .map(|o| (o.name.clone(), o.ty.clone()))
                .collect(),
            Some(Kind::Loop { carried }) => {
                let node = &self.graph.nodes[i];
                let mut outs: Vec<(String, PortType)> = carried
                    .iter()
                    .map(|c| {
                        (
                            c.clone(),
                            node.input(c)
                                .map(|inp| self.type_of_input(inp))
                                .unwrap_or(PortType::Any),
                        )
                    })
                    .collect();
                let item = match node.input(LOOP_OVER).map(|inp| self.type_of_input(inp)) {
                    Some(PortType::List(inner)) => *inner,
                    _ => PortType::Int,
                };
                outs.push((LOOP_ITEM.into(), item));
                outs.push((LOOP_INDEX.into(), PortType::Int));
                outs
            }
        }
    }

    pub(super) fn type_of_input(&mut self, input: &Input) -> PortType {
        match input {
            Input::Const(v) => const_type(v),
            Input::Link(link) => match self.graph.by_id.get(&link.node) {
                Some(&src) => {
                    let outs = self.outputs_of(src);
                    output_index(&outs, &link.output)
                        .map(|k| outs[k].1.clone())
                        .unwrap_or(PortType::Any)
                }
                None => PortType::Any,
            },
        }
    }

    /// Resolves a link made from node `from` (or, for `next`, from inside
    /// loop `from`'s body when `inside_loop`), reporting visibility problems.
    pub(super) fn resolve_link(
        &mut self,
        from: usize,
        input: &str,
        link: &Link,
        inside_loop: bool,
    ) -> Option<(usize, usize, PortType)> {
        let here = &self.graph.nodes[from];
        let err = |kind, msg: String| GraphError::new(kind, msg).node(&here.id).input(input);
        let Some(&src) = self.graph.by_id.get(&link.node) else {
            self.errors.push(err(
                ErrorKind::LinkToMissingNode,
                format!("links to node `{}`, which does not exist", link.node),
            ));
            return None;
        };
        // The scope the reading happens in: the node's own scope, or the
        // loop's body for its `next` values.
        let reader_scope = if inside_loop { Some(from) } else { here.scope };
        let src_node = &self.graph.nodes[src];
        let encloses = |l: usize| scope_chain(self.graph, reader_scope).any(|s| s == Some(l));
        if !scope_chain(self.graph, reader_scope).any(|s| s == src_node.scope) {
            let where_ = src_node
                .scope
                .map(|l| format!("inside the body of loop `{}`", self.graph.nodes[l].id))
                .unwrap_or_default();
            self.errors.push(err(ErrorKind::LinkToMissingNode, format!(
                "links to node `{}`, which is {where_} and not visible here; read the loop's outputs instead", link.node
            )));
            return None;
        }
        let outs = self.outputs_of(src);
        self.kinds[src].as_ref()?; // unknown type: already reported
        let Some(k) = output_index(&outs, &link.output) else {
            let names: Vec<_> = outs.iter().map(|(n, _)| n.as_str()).collect();
            self.errors.push(
                err(
                    ErrorKind::LinkToMissingOutput,
                    format!("node `{}` has no output `{}`", link.node, link.output),
                )
                .expected(format!("one of: {}", names.join(", "))),
            );
            return None;
        };
        let is_loop_var = matches!(self.kinds[src], Some(Kind::Loop { .. }))
            && (outs[k].0 == LOOP_ITEM || outs[k].0 == LOOP_INDEX);
        if is_loop_var && !encloses(src) {
            self.errors.push(err(
                ErrorKind::MalformedLoop,
                format!(
                    "`{}` of loop `{}` exists only inside its body",
                    outs[k].0, link.node
                ),
            ));
            return None;
        }
        Some((src, k, outs[k].1.clone()))
    }

    fn check_inputs(&mut self, i: usize) -> Vec<Resolved> {
        let graph = self.graph;
        let node = &graph.nodes[i];
        match self.kinds[i].clone() {
            None => Vec::new(),
            Some(Kind::Plugin(t)) => {
                let schema = &t.schema;
                for (name, _) in &node.inputs {
                    if schema.input_index(name).is_none() {
                        let known: Vec<_> = schema.inputs.iter().map(|s| s.name.as_str()).collect();
                        self.errors.push(
                            GraphError::new(
                                ErrorKind::UnknownInput,
                                format!("`{}` has no input `{name}`", node.type_name),
                            )
                            .node(&node.id)
                            .input(name)
                            .expected(format!("one of: {}", known.join(", "))),
                        );
                    }
                }
                schema
                    .inputs
                    .iter()
                    .map(|spec| match node.input(&spec.name) {
                        Some(Input::Const(v)) => {
                            let before = self.errors.len();
                            check_constant(&node.id, spec, v, &mut self.errors);
                            if spec.file {
                                check_file(&node.id, &spec.name, v, &mut self.errors);
                            }
                            if self.errors.len() > before {
                                return Resolved::Absent;
                            }
                            Value::from_json(v)
                                .map(Resolved::Const)
                                .unwrap_or(Resolved::Absent)
                        }
                        Some(Input::Link(link)) => {
                            match self.resolve_link(i, &spec.name, link, false) {
                                Some((src, k, ty)) => {
                                    if !spec.ty.accepts(&ty) {
                                        self.errors.push(
                                            GraphError::new(
                                                ErrorKind::TypeMismatch,
                                                format!(
                                                    "output `{}` of `{}` has the wrong type",
                                                    link.output, link.node
                                                ),
                                            )
                                            .node(&node.id)
                                            .input(&spec.name)
                                            .expected(spec.ty.to_string())
                                            .received(ty.to_string()),
                                        );
                                    }
                                    Resolved::Link {
                                        node: src,
                                        output: k,
                                    }
                                }
                                None => Resolved::Absent,
                            }
                        }
                        None => match &spec.default {
                            Some(d) => Value::from_json(d)
                                .map(Resolved::Const)
                                .unwrap_or(Resolved::Absent),
                            None if spec.required => {
                                self.errors.push(
                                    GraphError::new(
                                        ErrorKind::RequiredInputMissing,
                                        "required input not given",
                                    )
                                    .node(&node.id)
                                    .input(&spec.name)
                                    .expected(spec.ty.to_string()),
                                );
                                Resolved::Absent
                            }
                            None => Resolved::Absent,
                        },
                    })
                    .collect()
            }
            Some(Kind::Loop { carried }) => self.check_loop_inputs(i, node, &carried),
        }
    }
}

/// A file input (`InputSpec::file`) given as a constant must exist before
/// anything runs: "valid" promises the run will not stop at a missing
/// checkpoint after minutes of work upstream.
fn check_file(node: &str, input: &str, v: &serde_json::Value, errors: &mut Vec<GraphError>) {
    let Some(path) = v.as_str() else { return };
    if std::path::Path::new(path).exists() {
        return;
    }
    let cwd = std::env::current_dir()
        .map(|d| format!(" (relative paths are read from {})", d.display()))
        .unwrap_or_default();
    errors.push(
        GraphError::new(
            ErrorKind::FileNotFound,
            format!("no file or folder at this path{cwd}"),
        )
        .node(node)
        .input(input)
        .expected("an existing file or folder")
        .received(format!("{path:?}")),
    );
}

fn output_index(outs: &[(String, PortType)], r: &OutputRef) -> Option<usize> {
    match r {
        OutputRef::Name(n) => outs.iter().position(|(name, _)| name == n),
        OutputRef::Index(k) => (*k < outs.len()).then_some(*k),
    }
}

/// `scope`, then each enclosing scope, ending with the top level (`None`).
pub fn scope_chain(
    graph: &Graph,
    scope: Option<usize>,
) -> impl Iterator<Item = Option<usize>> + '_ {
    let mut cur = Some(scope);
    std::iter::from_fn(move || {
        let s = cur?;
        cur = s.map(|l| graph.nodes[l].scope);
        Some(s)
    })
}
