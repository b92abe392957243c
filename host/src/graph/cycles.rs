//! Cycle detection, per scope (the top level and each loop body). A loop's
//! `next` values feed the next iteration and are not cycles; a body node's
//! links to nodes outside the body are dependencies of the loop node itself.
//!
//! Edges only join nodes of the same scope, so the strongly connected
//! components of the whole edge set are those of each scope. They come from
//! an iterative Tarjan (an explicit call stack: a 10^6-node chain costs heap,
//! not thread stack, where petgraph's recursive `tarjan_scc` overflowed).
use super::errors::{ErrorKind, GraphError};
use super::model::Graph;
use super::resolved::Resolved;

pub fn find_cycles(
    graph: &Graph,
    inputs: &[Vec<Resolved>],
    next: &[Vec<Resolved>],
) -> Vec<GraphError> {
    let n = graph.nodes.len();
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut self_loop = vec![false; n];
    for (reader, node_inputs) in inputs.iter().enumerate() {
        for r in node_inputs {
            if let Resolved::Link { node: src, .. } = r {
                add_edges(graph, &mut adj, &mut self_loop, reader, *src, true);
            }
        }
        for r in &next[reader] {
            if let Resolved::Link { node: src, .. } = r {
                add_edges(graph, &mut adj, &mut self_loop, reader, *src, false);
            }
        }
    }
    let mut comps: Vec<Vec<usize>> = strongly_connected(&adj)
        .into_iter()
        .filter(|c| c.len() > 1 || self_loop[c[0]])
        .collect();
    // Reported per scope, top level first, then by node order.
    comps.sort_by_key(|c| (graph.nodes[c[0]].scope.map(|s| s + 1).unwrap_or(0), c[0]));
    comps
        .into_iter()
        .map(|comp| {
            let mut ids: Vec<&str> = comp.iter().map(|&i| graph.nodes[i].id.as_str()).collect();
            ids.sort();
            GraphError::new(
                ErrorKind::Cycle,
                format!(
                    "these nodes depend on each other in a cycle: {}",
                    ids.join(" -> ")
                ),
            )
            .node(ids[0])
        })
        .collect()
}

/// Tarjan's strongly connected components without recursion: each frame of
/// `call` is a node and the index of its next edge to follow.
pub(crate) fn strongly_connected(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut t = Tarjan {
        index: vec![UNSEEN; adj.len()],
        low: vec![0; adj.len()],
        on_stack: vec![false; adj.len()],
        stack: Vec::new(),
        call: Vec::new(),
        counter: 0,
    };
    let mut comps = Vec::new();
    for root in 0..adj.len() {
        if t.index[root] != UNSEEN {
            continue;
        }
        t.open(root);
        while let Some(&mut (v, ref mut edge)) = t.call.last_mut() {
            if let Some(&w) = adj[v].get(*edge) {
                *edge += 1;
                if t.index[w] == UNSEEN {
                    t.open(w);
                } else if t.on_stack[w] {
                    t.low[v] = t.low[v].min(t.index[w]);
                }
                continue;
            }
            t.call.pop();
            if let Some(&(parent, _)) = t.call.last() {
                t.low[parent] = t.low[parent].min(t.low[v]);
            }
            if t.low[v] == t.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = t.stack.pop() {
                    t.on_stack[w] = false;
                    comp.push(w);
                    if w == v {
                        break;
                    }
                }
                comps.push(comp);
            }
        }
    }
    comps
}

const UNSEEN: usize = usize::MAX;

struct Tarjan {
    index: Vec<usize>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    call: Vec<(usize, usize)>,
    counter: usize,
}

impl Tarjan {
    fn open(&mut self, v: usize) {
        self.index[v] = self.counter;
        self.low[v] = self.counter;
        self.counter += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        self.call.push((v, 0));
    }
}

/// Adds the edge "`src` before `reader`" in the reader's scope and, for each
/// loop enclosing the reader, "`src` before that loop" in the loop's scope.
fn add_edges(
    graph: &Graph,
    adj: &mut [Vec<usize>],
    self_loop: &mut [bool],
    reader: usize,
    src: usize,
    allow_self: bool,
) {
    let mut at = reader;
    let mut first = true;
    loop {
        let scope = graph.nodes[at].scope;
        if let Some(rep) = representative(graph, src, scope) {
            if rep != at {
                adj[rep].push(at);
            } else if first && allow_self {
                self_loop[at] = true;
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

#[cfg(test)]
mod tests {
    #[test]
    fn components_of_a_long_chain_and_a_ring() {
        // 0 -> 1 -> ... -> 199_999, and a ring 200_000 -> 200_001 -> 200_002 -> 200_000.
        let n = 200_003;
        let mut adj: Vec<Vec<usize>> = (0..n).map(|i| vec![i + 1]).collect();
        adj[199_999].clear();
        adj[200_002] = vec![200_000];
        let comps = super::strongly_connected(&adj);
        assert_eq!(comps.len(), 200_001);
        let mut ring: Vec<_> = comps.into_iter().find(|c| c.len() > 1).unwrap();
        ring.sort();
        assert_eq!(ring, vec![200_000, 200_001, 200_002]);
    }
}
