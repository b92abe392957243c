//! `run`, `validate`, `nodes` and `info`: library calls and printing.
use crate::args::{
    ConvertArgs, ExecArgs, NodesArgs, PluginArgs, RunArgs, ValidateArgs, EXIT_BAD_INPUT,
    EXIT_INTERRUPTED, EXIT_RUN_FAILED,
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

/// The set-up `run` and `watch` share: the device and libtorch's threads.
/// Returns the device and the line reporting both; Err is the exit code,
/// after printing the error.
pub fn set_up_device(exec: &ExecArgs) -> Result<(tch::Device, String), i32> {
    let (device, line) = device::select(exec.device).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_BAD_INPUT
    })?;
    let threads = diffgraph::threads::configure(exec.threads.map(usize::from));
    Ok((device, format!("{line}; {threads}")))
}

pub fn run(a: RunArgs) -> i32 {
    let (device, line) = match set_up_device(&a.exec) {
        Ok(d) => d,
        Err(code) => return code,
    };
    if !a.quiet {
        eprintln!("{line}");
    }
    let registry = load_plugins(&a.exec.plugins, a.quiet);
    let checked = match diffgraph::load_graph_with(
        &a.graph,
        &a.exec.set,
        &registry,
        true,
        &a.exec.models.folders(),
    ) {
        Ok(c) => c,
        Err(e) => {
            print_graph_errors(&e, a.json);
            return EXIT_BAD_INPUT;
        }
    };
    let observer = progress::observer_for(a.quiet, checked.top_level_ids());
    let profile = report::Profile::new(observer.as_ref());
    if a.exec.isolate {
        let end = crate::isolate::run(&a, &profile);
        if a.profile {
            eprint!("{}", profile.report());
        }
        return end;
    }
    let mut exec = Executor::new(registry);
    exec.set_device(device);
    exec.set_output_dir(a.exec.out.to_string_lossy());
    let flag = exec.interrupt_flag();
    let _ = ctrlc::set_handler(crate::interrupt::handler(move || {
        flag.store(true, Ordering::Relaxed)
    }));
    let result = exec.run(&checked, None, &profile);
    if a.profile {
        eprint!("{}", profile.report());
    }
    match result {
        Ok(outcome) => finish_ok(
            &a,
            &report::output_files(&outcome),
            &report::outcome_json(&outcome),
        ),
        Err(e) => finish_failed(
            &a,
            &report::run_error_json(&e),
            matches!(e, RunError::Interrupted { .. }),
        ),
    }
}

/// A run that succeeded (in process or in a worker): the graph goes into
/// its PNGs, then the files (or the outcome JSON) are printed.
pub fn finish_ok(a: &RunArgs, files: &[String], outcome: &serde_json::Value) -> i32 {
    embed_graph(a, files);
    if a.json {
        println!("{outcome}");
    } else {
        for file in files {
            println!("{file}");
        }
    }
    0
}

/// A run that failed: `error` is `report::run_error_json`'s shape.
pub fn finish_failed(a: &RunArgs, error: &serde_json::Value, interrupted: bool) -> i32 {
    if a.json {
        println!("{error}");
    }
    eprintln!("error: {}", error["error"].as_str().unwrap_or_default());
    if interrupted {
        EXIT_INTERRUPTED
    } else {
        EXIT_RUN_FAILED
    }
}

/// Writes the graph that ran (overrides applied) into every PNG the run
/// wrote (`diffgraph` tEXt chunk), so `diffgraph run image.png` re-runs it.
fn embed_graph(a: &RunArgs, files: &[String]) {
    let Ok(text) = diffgraph::read_graph_text(&a.graph) else {
        return;
    };
    let text = if a.exec.set.is_empty() {
        text
    } else {
        let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(&text) else {
            return;
        };
        if diffgraph::graph::overrides::apply(&mut doc, &a.exec.set).is_err() {
            return;
        }
        doc.to_string()
    };
    for f in files.iter().filter(|f| f.ends_with(".png")) {
        let entry = [(diffgraph::pngtext::NATIVE_KEY, text.as_str())];
        if let Err(e) = diffgraph::pngtext::add_to_file(std::path::Path::new(f), &entry) {
            eprintln!("warning: {e}");
        }
    }
}

pub fn validate(a: ValidateArgs) -> i32 {
    device::init();
    let registry = load_plugins(&a.plugins, a.json);
    match diffgraph::load_graph_with(&a.graph, &a.set, &registry, true, &a.models.folders()) {
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

/// Prints the native graph of a ComfyUI workflow; a native graph is refused
/// (it is already what `convert` would print).
pub fn convert(a: ConvertArgs) -> i32 {
    let models = a.models.folders();
    let translated = diffgraph::read_graph_text(&a.workflow)
        .and_then(|text| diffgraph::translate_comfy(&text, &a.set, &models).map(|t| (t, text)));
    match translated {
        Ok((Some(t), _)) => {
            println!("{}", serde_json::to_string_pretty(&t.doc).expect("json"));
            0
        }
        Ok((None, text)) => {
            let what = match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(doc) => match diffgraph::comfy::detect(&doc) {
                    diffgraph::comfy::Format::Other(what) => {
                        diffgraph::comfy::not_a_graph(&what).to_string()
                    }
                    _ => "it is already a native diffgraph graph".into(),
                },
                Err(e) => format!("not valid JSON: {e}"),
            };
            eprintln!(
                "error: {}: not a ComfyUI workflow: {what}",
                a.workflow.display()
            );
            EXIT_BAD_INPUT
        }
        Err(e) => {
            print_graph_errors(&e, false);
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
