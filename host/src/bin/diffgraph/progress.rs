//! Progress reporting for the command line: bars on a terminal (indicatif),
//! plain lines otherwise (logs, CI), nothing with `--quiet`.
use diffgraph::exec::{Event, Observer};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Picks bars or lines depending on whether stderr is a terminal.
pub fn observer_for(quiet: bool, top_level: HashSet<String>) -> Box<dyn Observer> {
    if quiet {
        Box::new(diffgraph::Silent)
    } else if std::io::stderr().is_terminal() {
        Box::new(Bars::new(top_level))
    } else {
        Box::new(Lines::new(top_level))
    }
}

/// Plain lines on stderr: one per top-level node, loop steps at most every
/// 10% or every second.
pub struct Lines {
    top_level: HashSet<String>,
    total: Cell<usize>,
    done: Cell<usize>,
    last_loop_print: Cell<Option<Instant>>,
}

impl Lines {
    pub fn new(top_level: HashSet<String>) -> Lines {
        Lines {
            top_level,
            total: Cell::new(0),
            done: Cell::new(0),
            last_loop_print: Cell::new(None),
        }
    }
}

impl Observer for Lines {
    fn event(&self, e: &Event) {
        match e {
            Event::RunStart { steps } => self.total.set(*steps),
            Event::NodeCached { id } if self.top_level.contains(*id) => {
                self.done.set(self.done.get() + 1);
                eprintln!("[{}/{}] {id}: cached", self.done.get(), self.total.get());
            }
            Event::NodeDone { id, seconds } if self.top_level.contains(*id) => {
                self.done.set(self.done.get() + 1);
                eprintln!(
                    "[{}/{}] {id}: {:.1} ms",
                    self.done.get(),
                    self.total.get(),
                    seconds * 1e3
                );
            }
            Event::LoopStep { id, done, total } => {
                let now = Instant::now();
                let tenth = (*total / 10).max(1);
                let due = self
                    .last_loop_print
                    .get()
                    .is_none_or(|t| now - t >= Duration::from_secs(1));
                if *done == *total || *done % tenth == 0 || due {
                    eprintln!("      {id}: step {done}/{total}");
                    self.last_loop_print.set(Some(now));
                }
            }
            Event::RunDone { seconds } => eprintln!("done in {seconds:.2} s"),
            _ => {}
        }
    }
}

/// Progress bars: one for the graph's nodes, one for the running loop.
pub struct Bars {
    top_level: HashSet<String>,
    multi: MultiProgress,
    nodes: ProgressBar,
    loop_bar: RefCell<Option<ProgressBar>>,
}

impl Bars {
    pub fn new(top_level: HashSet<String>) -> Bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(15));
        let nodes = multi.add(ProgressBar::new(0));
        nodes.set_style(
            ProgressStyle::with_template("{prefix:>6} [{bar:30}] {pos}/{len} nodes  {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        nodes.set_prefix("graph");
        Bars {
            top_level,
            multi,
            nodes,
            loop_bar: RefCell::new(None),
        }
    }
}

impl Observer for Bars {
    fn event(&self, e: &Event) {
        match e {
            Event::RunStart { steps } => self.nodes.set_length(*steps as u64),
            Event::NodeStart { id, type_name } if self.top_level.contains(*id) => {
                self.nodes.set_message(format!("{id} ({type_name})"))
            }
            Event::NodeCached { id } | Event::NodeDone { id, .. }
                if self.top_level.contains(*id) =>
            {
                self.nodes.inc(1);
                if let Some(bar) = self.loop_bar.borrow_mut().take() {
                    bar.finish_and_clear();
                }
            }
            Event::LoopStep { id, done, total } => {
                let mut slot = self.loop_bar.borrow_mut();
                let bar = slot.get_or_insert_with(|| {
                    let b = self.multi.add(ProgressBar::new(*total as u64));
                    b.set_style(
                        ProgressStyle::with_template(
                            "{prefix:>6} [{bar:30}] {pos}/{len} steps  {per_sec} eta {eta}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    b.set_prefix(id.to_string());
                    b
                });
                bar.set_position(*done as u64);
            }
            Event::RunDone { seconds } => {
                self.nodes
                    .finish_with_message(format!("done in {seconds:.2} s"));
            }
            _ => {}
        }
    }
}
