//! The `diffgraph` command line: run, validate, nodes, info, watch. Argument
//! parsing, progress bars and Ctrl-C live here; everything else is the
//! `diffgraph` library (discovery, validation, execution, reports).
mod args;
mod commands;
mod interrupt;
mod progress;
#[cfg(feature = "server")]
mod server;
mod watch;

use args::{Cli, Command};
use clap::Parser;

fn main() {
    let code = match Cli::parse().command {
        Command::Run(a) => commands::run(a),
        Command::Validate(a) => commands::validate(a),
        Command::Nodes(a) => commands::nodes(a),
        Command::Info(a) => commands::info(a),
        Command::Convert(a) => commands::convert(a),
        Command::Watch(a) => watch::watch(a),
        #[cfg(feature = "server")]
        Command::Serve(a) => server::serve(a),
        #[cfg(feature = "server")]
        Command::Worker(a) => server::worker(a),
    };
    std::process::exit(code)
}
