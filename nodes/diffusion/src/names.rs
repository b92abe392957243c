//! [`ConfigName`]: the names of a config enum, as diffusers'
//! `scheduler_config.json` and graph files write them.
use crate::{Error, Result};

/// A config enum with a name table: `ALL` lists (name, value) pairs, the
/// canonical name of each value first (later pairs are aliases).
pub trait ConfigName: Sized + Copy + PartialEq + 'static {
    const ALL: &'static [(&'static str, Self)];

    /// The canonical name of `self`.
    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Every accepted name, aliases included.
    fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|(n, _)| *n).collect()
    }

    /// The value named `s`; `what` names the setting in the error.
    fn parse(what: &str, s: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{what} `{s}` is not supported; use one of: {}",
                    Self::names().join(", ")
                ))
            })
    }
}
