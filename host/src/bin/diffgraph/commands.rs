//! `run`, `validate`, `nodes` and `info`: library calls and printing.
use crate::args::{
    NodesArgs, PluginArgs, RunArgs, ValidateArgs, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_RUN_FAILED,
};
use crate::progress;
use diffgraph::plugin::discovery;
use diffgraph::{device, report, Executor, GraphErrors, Registry, RunError};
use std::sync::atomic::Ordering;

/// Loads every plugin; what was skipped is a warning (unless `quiet`).
fn load_plugins(args: &PluginArgs, quiet: bool) -> Registry {
    let (registry, skipped) = discovery::load(&args.sources());
    if !quiet {
        for s in skipped {
            eprintln!("warning: {s}");
        }
    }
    registry
}

fn print_graph_errors(errors: &GraphErrors, json: bool) {
    if json {
        println!("{}", report::graph_errors_json(errors));
    } else {
        eprint!("error: {errors}");
    }
}

pub fn run(a: RunArgs) -> i32 {
    let (device, line) = match device::select(a.exec.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let threads = diffgraph::threads::configure(a.exec.threads.map(usize::from));
    if !a.quiet {
        eprintln!("{line}; {threads}");
    }
    let registry = load_plugins(&a.exec.plugins, a.quiet);
    let checked = match diffgraph::load_graph(&a.graph, &a.exec.set, &registry, true) {
        Ok(c) => c,
        Err(e) => {
            print_graph_errors(&e, a.json);
            return EXIT_BAD_INPUT;
        }
    };
    let mut exec = Executor::new(registry);
    exec.set_device(device);
    exec.set_output_dir(a.exec.out.to_string_lossy());
    let flag = exec.interrupt_flag();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    let observer = progress::observer_for(a.quiet, checked.top_level_ids());
    let profile = report::Profile::new(observer.as_ref());
    let result = exec.run(&checked, None, &profile);
    if a.profile {
        eprint!("{}", profile.report());
    }
    match result {
        Ok(outcome) => {
            if a.json {
                println!("{}", report::outcome_json(&outcome));
            } else {
                for file in report::output_files(&outcome) {
                    println!("{file}");
                }
            }
            0
        }
        Err(e) => {
            if a.json {
                println!("{}", report::run_error_json(&e));
            }
            eprintln!("error: {e}");
            if matches!(e, RunError::Interrupted { .. }) {
                EXIT_INTERRUPTED
            } else {
                EXIT_RUN_FAILED
            }
        }
    }
}

pub fn validate(a: ValidateArgs) -> i32 {
    device::init();
    let registry = load_plugins(&a.plugins, a.json);
    match diffgraph::load_graph(&a.graph, &a.set, &registry, true) {
        Ok(c) => {
            if a.json {
                println!("{}", report::valid_json(&c));
            } else {
                println!(
                    "{}: valid ({} nodes)",
                    a.graph.display(),
                    c.graph.nodes.len()
                );
            }
            0
        }
        Err(e) => {
            print_graph_errors(&e, a.json);
            EXIT_BAD_INPUT
        }
    }
}

pub fn nodes(a: NodesArgs) -> i32 {
    device::init();
    let registry = load_plugins(&a.plugins, a.json);
    if a.json {
        println!("{}", report::nodes_json(&registry));
    } else {
        print!("{}", report::nodes_text(&registry));
    }
    0
}

pub fn info(a: NodesArgs) -> i32 {
    let cuda = device::init();
    let cuda_mapped = device::mapped_path("libtorch_cuda.so");
    let registry = load_plugins(&a.plugins, a.json);
    let doc = report::info_json(&registry, cuda, cuda_mapped);
    if a.json {
        println!("{doc}");
    } else {
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    }
    0
}
