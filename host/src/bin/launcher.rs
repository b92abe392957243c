//! `diffgraph`: starts the engine, `diffgraph-engine` (the command line
//! proper, `src/bin/diffgraph/`), from the same folder, with the same
//! arguments, after adding what is missing of the environment it runs in
//! (`engine_env`: `OMP_WAIT_POLICY=passive` and glibc malloc's tunables).
//!
//! Why a separate program: libgomp, which libtorch loads, reads its wait
//! policy in a load-time constructor, before any `main`, and glibc reads its
//! tunables when the process starts (`diffgraph::threads` and
//! `engine_env` explain the settings). The engine links libtorch, so setting
//! them itself means re-executing: a second libtorch start-up (~0.1-0.2 s)
//! per command. This program links neither libtorch nor the `diffgraph`
//! library, so its start and `exec` cost about a millisecond. The engine
//! still re-executes itself when started directly without them.
//!
//! What the user set (e.g. `OMP_WAIT_POLICY=active` on a dedicated machine)
//! is kept.
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The settings' one home, shared with the library (std only).
#[path = "../engine_env.rs"]
mod engine_env;

/// The engine's file name, beside this program.
const ENGINE: &str = "diffgraph-engine";

fn main() {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "diffgraph".into());
    let engine = match std::env::current_exe() {
        Ok(me) => me.with_file_name(ENGINE),
        Err(e) => {
            eprintln!("error: cannot find this program's folder (to start {ENGINE}): {e}");
            std::process::exit(127);
        }
    };
    let err = Command::new(&engine)
        .arg0(argv0)
        .args(args)
        .envs(engine_env::missing_here())
        .exec();
    eprintln!("error: cannot start {}: {err}", engine.display());
    std::process::exit(127);
}
