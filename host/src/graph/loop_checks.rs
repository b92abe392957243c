//! Validation of `Loop` nodes: the list or count to iterate, the carried
//! variables and their `next` values.
use super::constants::short;
use super::errors::{ErrorKind, GraphError};
use super::model::{Input, Node, LOOP_INDEX, LOOP_ITEM, LOOP_OVER};
use super::resolved::Resolved;
use super::validate::{Kind, Validator};
use crate::value::Value;
use diffgraph_sdk::PortType;

impl Validator<'_> {
    /// Resolves a loop's inputs: `over` first, then the carried variables.
    pub(super) fn check_loop_inputs(
        &mut self,
        i: usize,
        node: &Node,
        carried: &[String],
    ) -> Vec<Resolved> {
        let mut out = Vec::new();
        match node.input(LOOP_OVER) {
            None => self.errors.push(
                GraphError::new(
                    ErrorKind::MalformedLoop,
                    "a Loop needs `over`: a list to iterate, or an int count",
                )
                .node(&node.id)
                .input(LOOP_OVER)
                .expected("LIST<...> or INT"),
            ),
            Some(inp) => {
                let ty = self.type_of_input(inp);
                if !matches!(ty, PortType::List(_) | PortType::Int | PortType::Any) {
                    self.errors.push(
                        GraphError::new(
                            ErrorKind::MalformedLoop,
                            "`over` must be a list or an int",
                        )
                        .node(&node.id)
                        .input(LOOP_OVER)
                        .expected("LIST<...> or INT")
                        .received(ty.to_string()),
                    );
                }
            }
        }
        for name in std::iter::once(LOOP_OVER.to_string()).chain(carried.iter().cloned()) {
            if name == LOOP_ITEM || name == LOOP_INDEX {
                self.errors.push(
                    GraphError::new(
                        ErrorKind::MalformedLoop,
                        format!("`{name}` is reserved for the loop's per-iteration value"),
                    )
                    .node(&node.id)
                    .input(&name),
                );
            }
            out.push(match node.input(&name) {
                Some(Input::Const(v)) => Value::from_json(v)
                    .map(Resolved::Const)
                    .unwrap_or(Resolved::Absent),
                Some(Input::Link(link)) => self
                    .resolve_link(i, &name, link, false)
                    .map(|(src, k, _)| Resolved::Link {
                        node: src,
                        output: k,
                    })
                    .unwrap_or(Resolved::Absent),
                None => Resolved::Absent,
            });
        }
        out
    }

    pub(super) fn check_next(&mut self, i: usize) -> Vec<Resolved> {
        let node = self.graph.nodes[i].clone();
        let Some(Kind::Loop { carried }) = self.kinds[i].clone() else {
            return Vec::new();
        };
        let outs = self.outputs_of(i);
        for (name, _) in &node.next {
            if !carried.contains(name) {
                self.errors.push(
                    GraphError::new(
                        ErrorKind::MalformedLoop,
                        format!("`next` sets `{name}`, which is not a carried variable"),
                    )
                    .node(&node.id)
                    .input(name)
                    .expected(format!(
                        "one of the loop's inputs other than `over`: {}",
                        carried.join(", ")
                    )),
                );
            }
        }
        carried
            .iter()
            .enumerate()
            .map(
                |(k, name)| match node.next.iter().find(|(n, _)| n == name).map(|(_, v)| v) {
                    None => {
                        self.errors.push(
                            GraphError::new(
                                ErrorKind::MalformedLoop,
                                format!("carried variable `{name}` has no `next` value"),
                            )
                            .node(&node.id)
                            .input(name)
                            .expected("a link from the body in `next`"),
                        );
                        Resolved::Absent
                    }
                    Some(Input::Const(v)) => {
                        self.errors.push(
                            GraphError::new(
                                ErrorKind::MalformedLoop,
                                format!("`next.{name}` must be a link"),
                            )
                            .node(&node.id)
                            .input(name)
                            .received(short(v)),
                        );
                        Resolved::Absent
                    }
                    Some(Input::Link(link)) => match self.resolve_link(i, name, link, true) {
                        Some((src, out, ty)) => {
                            if !outs[k].1.accepts(&ty) {
                                self.errors.push(
                                    GraphError::new(
                                        ErrorKind::TypeMismatch,
                                        format!(
                                            "`next.{name}` changes the carried variable's type"
                                        ),
                                    )
                                    .node(&node.id)
                                    .input(name)
                                    .expected(outs[k].1.to_string())
                                    .received(ty.to_string()),
                                );
                            }
                            Resolved::Link {
                                node: src,
                                output: out,
                            }
                        }
                        None => Resolved::Absent,
                    },
                },
            )
            .collect()
    }
}
