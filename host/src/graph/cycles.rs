//! Cycle detection, per scope (the top level and each loop body), with
//! petgraph's strongly connected components. A loop's `next` values feed the
//! next iteration and are not cycles; a body node's links to nodes outside
//! the body are dependencies of the loop node itself.
use super::errors::{ErrorKind, GraphError};
use super::model::Graph;
use super::resolved::Resolved;
use petgraph::algo::tarjan_scc;
use petgraph::graphmap::DiGraphMap;
use std::collections::HashMap;

pub fn find_cycles(
    graph: &Graph,
    inputs: &[Vec<Resolved>],
    next: &[Vec<Resolved>],
) -> Vec<GraphError> {
    let mut scopes: HashMap<Option<usize>, DiGraphMap<usize, ()>> = HashMap::new();
    for (n, node) in graph.nodes.iter().enumerate() {
        scopes.entry(node.scope).or_default().add_node(n);
        for r in &inputs[n] {
            if let Resolved::Link { node: src, .. } = r {
                add_edges(graph, &mut scopes, n, *src, true);
            }
        }
        for r in &next[n] {
            if let Resolved::Link { node: src, .. } = r {
                add_edges(graph, &mut scopes, n, *src, false);
            }
        }
    }
    let mut errors = Vec::new();
    let mut keys: Vec<_> = scopes.keys().copied().collect();
    keys.sort();
    for key in keys {
        let g = &scopes[&key];
        for comp in tarjan_scc(g) {
            let self_loop = comp.len() == 1 && g.contains_edge(comp[0], comp[0]);
            if comp.len() > 1 || self_loop {
                let mut ids: Vec<&str> = comp.iter().map(|&i| graph.nodes[i].id.as_str()).collect();
                ids.sort();
                errors.push(
                    GraphError::new(
                        ErrorKind::Cycle,
                        format!(
                            "these nodes depend on each other in a cycle: {}",
                            ids.join(" -> ")
                        ),
                    )
                    .node(ids[0]),
                );
            }
        }
    }
    errors
}

/// Adds the edge "`src` before `reader`" in the reader's scope and, for each
/// loop enclosing the reader, "`src` before that loop" in the loop's scope.
fn add_edges(
    graph: &Graph,
    scopes: &mut HashMap<Option<usize>, DiGraphMap<usize, ()>>,
    reader: usize,
    src: usize,
    allow_self: bool,
) {
    let mut at = reader;
    let mut first = true;
    loop {
        let scope = graph.nodes[at].scope;
        if let Some(rep) = representative(graph, src, scope) {
            if rep != at || (first && allow_self) {
                scopes.entry(scope).or_default().add_edge(rep, at, ());
            }
        }
        first = false;
        match scope {
            Some(l) => at = l,
            None => break,
        }
    }
}

/// The node of `scope` that contains `node` (itself, or the loop whose body
/// holds it); None when `node` sits above `scope`.
fn representative(graph: &Graph, node: usize, scope: Option<usize>) -> Option<usize> {
    let mut r = node;
    loop {
        if graph.nodes[r].scope == scope {
            return Some(r);
        }
        r = graph.nodes[r].scope?;
    }
}
