//! Time spent per node (loop bodies summed over their iterations), as a
//! table when the run ends (`diffgraph run --profile`).
use crate::exec::{Event, Observer};
use std::cell::RefCell;
use std::collections::HashMap;

/// Wraps another observer and adds up NodeDone times per node id.
pub struct Profile<'a> {
    inner: &'a dyn Observer,
    totals: RefCell<HashMap<String, (f64, usize)>>,
}

impl<'a> Profile<'a> {
    pub fn new(inner: &'a dyn Observer) -> Profile<'a> {
        Profile {
            inner,
            totals: RefCell::new(HashMap::new()),
        }
    }

    /// The table, slowest first (a loop's time includes its body's).
    pub fn report(&self) -> String {
        let totals = self.totals.borrow();
        let mut rows: Vec<_> = totals.iter().collect();
        rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        let mut out = format!(
            "{:<24} {:>8} {:>12} {:>12}\n",
            "node", "calls", "total ms", "per call ms"
        );
        for (id, (seconds, calls)) in rows {
            out += &format!(
                "{id:<24} {calls:>8} {:>12.2} {:>12.3}\n",
                seconds * 1e3,
                seconds * 1e3 / *calls as f64
            );
        }
        out
    }
}

impl Observer for Profile<'_> {
    fn event(&self, e: &Event) {
        if let Event::NodeDone { id, seconds } = e {
            let mut totals = self.totals.borrow_mut();
            let entry = totals.entry(id.to_string()).or_default();
            entry.0 += seconds;
            entry.1 += 1;
        }
        self.inner.event(e);
    }
}
