//! `diffgraph`: starts the engine, `diffgraph-engine` (the command line
//! proper, `src/bin/diffgraph/`), from the same folder, with the same
//! arguments, after setting `OMP_WAIT_POLICY=passive` when it is unset.
//!
//! Why a separate program: libgomp, which libtorch loads, reads its wait
//! policy in a load-time constructor, before any `main` (`diffgraph::threads`
//! explains the policy). The engine links libtorch, so setting the variable
//! itself means re-executing: a second libtorch start-up (~0.1-0.2 s) per
//! command. This program links neither libtorch nor the `diffgraph` library,
//! so its start and `exec` cost about a millisecond. The engine still
//! re-executes itself when started directly without the variable.
//!
//! A value the user set (e.g. `active` on a dedicated machine) is kept.
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The engine's file name, beside this program.
const ENGINE: &str = "diffgraph-engine";
/// libgomp's variable and the policy diffgraph runs with (the same as
/// `diffgraph::threads::WAIT_POLICY_VAR`; this program does not link the
/// library that defines it).
const WAIT_POLICY_VAR: &str = "OMP_WAIT_POLICY";

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
    let mut command = Command::new(&engine);
    command.arg0(argv0).args(args);
    if std::env::var_os(WAIT_POLICY_VAR).is_none() {
        command.env(WAIT_POLICY_VAR, "passive");
    }
    let err = command.exec();
    eprintln!("error: cannot start {}: {err}", engine.display());
    std::process::exit(127);
}
