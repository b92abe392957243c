//! The `diffgraph` command line: run, validate, nodes, info, watch. Argument
//! parsing, progress bars and Ctrl-C live here; everything else is the
//! `diffgraph` library (discovery, validation, execution, reports).
mod args;
mod commands;
mod progress;
mod watch;

use args::{Cli, Command};
use clap::Parser;

fn main() {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run(_) | Command::Watch(_)) {
        // Before anything else: libgomp reads its wait policy at load time
        // (diffgraph::threads). Returns only if no re-execution happened.
        if let Some(e) = diffgraph::threads::reexec_with_passive_wait() {
            eprintln!("warning: could not re-execute with OMP_WAIT_POLICY=passive: {e}");
        }
    }
    let code = match cli.command {
        Command::Run(a) => commands::run(a),
        Command::Validate(a) => commands::validate(a),
        Command::Nodes(a) => commands::nodes(a),
        Command::Info(a) => commands::info(a),
        Command::Watch(a) => watch::watch(a),
    };
    std::process::exit(code)
}
