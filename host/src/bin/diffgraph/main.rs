//! The `diffgraph` command line: run, validate, nodes, info, watch. Argument
//! parsing, progress bars and Ctrl-C live here; everything else is the
//! `diffgraph` library (discovery, validation, execution, reports). Built as
//! `diffgraph-engine`; users start it through the `diffgraph` launcher
//! (`src/bin/launcher.rs`), which sets libgomp's wait policy first.
mod args;
mod commands;
mod interrupt;
mod isolate;
mod progress;
#[cfg(feature = "server")]
mod server;
mod watch;
mod worker;

use args::{Cli, Command};
use clap::Parser;

fn main() {
    let cli = Cli::parse();
    // The commands that run nodes (serve's worker inherits the policy).
    let runs_nodes = match &cli.command {
        Command::Run(_) | Command::Watch(_) => true,
        Command::Worker(_) => true,
        #[cfg(feature = "server")]
        Command::Serve(_) => true,
        _ => false,
    };
    if runs_nodes {
        // Before anything else: libgomp reads its wait policy at load time,
        // glibc its malloc tunables at start (diffgraph::engine_env). Started
        // through the `diffgraph` launcher they are set and nothing happens;
        // started directly, this re-executes. Returns only if no
        // re-execution happened.
        if let Some(e) = diffgraph::threads::reexec_with_engine_env() {
            eprintln!("warning: could not re-execute with diffgraph's environment: {e}");
        }
    }
    if !matches!(cli.command, Command::ProbePlugins { .. }) {
        // Every library is opened in a child process before this one opens it.
        if let Ok(exe) = std::env::current_exe() {
            diffgraph::plugin::probe::enable(exe, vec!["probe-plugins".into()]);
        }
    }
    let code = match cli.command {
        Command::ProbePlugins { files } => diffgraph::plugin::probe::child_main(&files),
        Command::Run(a) => commands::run(a),
        Command::Validate(a) => commands::validate(a),
        Command::Nodes(a) => commands::nodes(a),
        Command::Info(a) => commands::info(a),
        Command::Convert(a) => commands::convert(a),
        Command::Watch(a) => watch::watch(a),
        #[cfg(feature = "server")]
        Command::Serve(a) => server::serve(a),
        Command::Worker(a) => worker::worker(a),
        #[cfg(feature = "server")]
        Command::Queue(a) => server::queue_command(a),
    };
    std::process::exit(code)
}
