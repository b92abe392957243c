//! The `diffgraph` command line: run, validate, nodes, info.
mod profile;
mod progress;
mod watch;

use crate::device::{self, DeviceRequest};
use crate::graph::overrides::Override;
use crate::plugin::{self, Registry};
use crate::{exec::Executor, value::Value};
use clap::{Args, Parser, Subcommand};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// Exit codes: 0 success, 1 a node failed, 2 bad input (graph, arguments, device).
const EXIT_RUN_FAILED: i32 = 1;
pub(crate) const EXIT_BAD_INPUT: i32 = 2;
const EXIT_INTERRUPTED: i32 = 130;

#[derive(Parser)]
#[command(
    name = "diffgraph",
    version,
    about = "Headless node-graph executor for diffusion models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate and run a graph; prints the files its output nodes wrote.
    Run(RunArgs),
    /// Validate a graph without running anything.
    Validate(ValidateArgs),
    /// List every node type with its inputs and outputs.
    Nodes(NodesArgs),
    /// Show the libtorch build, the CUDA library state and the loaded plugins.
    Info(NodesArgs),
    /// Run a graph, then re-run it whenever a plugin library is rebuilt or the
    /// graph file is edited, reusing every cached result that did not change.
    Watch(watch::WatchArgs),
}

#[derive(Args)]
pub struct PluginArgs {
    /// Plugin folder (every shared library in it) or library file; repeatable.
    /// Default: $DIFFGRAPH_PLUGINS (colon-separated), else the libdiffgraph_nodes_*
    /// libraries next to this executable.
    #[arg(long = "plugins", value_name = "DIR")]
    plugins: Vec<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    /// The graph file (JSON).
    graph: PathBuf,
    /// Override a node's input: NODE.INPUT=VALUE (VALUE as JSON, else a string); repeatable.
    #[arg(long = "set", value_name = "NODE.INPUT=VALUE")]
    set: Vec<Override>,
    /// cpu, cuda, cuda:N or auto (CUDA when available).
    #[arg(long, default_value = "cpu")]
    device: DeviceRequest,
    /// Folder output nodes write into.
    #[arg(long, default_value = "output")]
    out: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    /// Print the time spent in each node (loop bodies summed) at the end.
    #[arg(long)]
    profile: bool,
    /// libtorch intra-op threads (default: libtorch's choice, the core count).
    #[arg(long)]
    threads: Option<i32>,
    /// Print the outcome (outputs, executed and cached nodes) as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ValidateArgs {
    graph: PathBuf,
    #[arg(long = "set", value_name = "NODE.INPUT=VALUE")]
    set: Vec<Override>,
    #[command(flatten)]
    plugins: PluginArgs,
    /// Print errors as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct NodesArgs {
    #[command(flatten)]
    plugins: PluginArgs,
    #[arg(long)]
    json: bool,
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(a) => run(a),
        Command::Validate(a) => validate(a),
        Command::Nodes(a) => nodes(a),
        Command::Info(a) => info(a),
        Command::Watch(a) => watch::watch(a),
    }
}

/// Where plugins were loaded from: a folder (every library whose name starts
/// with `prefix`) or one file in it.
pub struct PluginSource {
    pub dir: PathBuf,
    pub prefix: &'static str,
    pub file: Option<PathBuf>,
}

impl PluginSource {
    /// Whether `path` is a plugin library this source provides.
    pub fn matches(&self, path: &Path) -> bool {
        match &self.file {
            Some(f) => f == path,
            None => {
                path.parent() == Some(self.dir.as_path())
                    && plugin::is_plugin_file(path, self.prefix)
            }
        }
    }
}

impl PluginSource {
    /// The plugin library files this source provides now.
    pub fn files(&self) -> Vec<PathBuf> {
        if let Some(f) = &self.file {
            return vec![f.clone()];
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| self.matches(p))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }
}

/// Where plugins come from: `--plugins`, else `$DIFFGRAPH_PLUGINS`, else the
/// `libdiffgraph_nodes_*` libraries next to the executable.
fn plugin_sources(args: &PluginArgs) -> Vec<PluginSource> {
    let mut paths: Vec<(PathBuf, &'static str)> =
        args.plugins.iter().map(|p| (p.clone(), "")).collect();
    if paths.is_empty() {
        if let Ok(env) = std::env::var("DIFFGRAPH_PLUGINS") {
            paths.extend(
                env.split(':')
                    .filter(|s| !s.is_empty())
                    .map(|s| (PathBuf::from(s), "")),
            );
        }
    }
    if paths.is_empty() {
        if let Some(dir) = plugin::default_plugin_dir() {
            paths.push((dir, plugin::DEFAULT_PLUGIN_PREFIX));
        }
    }
    paths
        .into_iter()
        .map(|(path, prefix)| {
            let path = std::path::absolute(&path).unwrap_or(path);
            if path.is_dir() {
                PluginSource {
                    dir: path,
                    prefix,
                    file: None,
                }
            } else {
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                PluginSource {
                    dir,
                    prefix,
                    file: Some(path),
                }
            }
        })
        .collect()
}

/// Loads every plugin of every source; failures are warnings (the host keeps
/// running without that plugin).
fn load_plugins(args: &PluginArgs, quiet: bool) -> (Registry, Vec<PluginSource>) {
    let sources = plugin_sources(args);
    let mut registry = Registry::new();
    for source in &sources {
        if source.file.as_ref().is_some_and(|f| !f.exists()) || !source.dir.is_dir() {
            if !quiet {
                eprintln!(
                    "warning: plugin path {} does not exist",
                    source.file.as_ref().unwrap_or(&source.dir).display()
                );
            }
            continue;
        }
        for file in source.files() {
            if let Err(e) = registry.load_file(&file) {
                if !quiet {
                    eprintln!("warning: {e} (not loaded)");
                }
            }
        }
    }
    (registry, sources)
}

fn top_level_ids(checked: &crate::CheckedGraph) -> HashSet<String> {
    checked
        .graph
        .nodes
        .iter()
        .filter(|n| n.scope.is_none())
        .map(|n| n.id.clone())
        .collect()
}

fn print_graph_errors(errors: &crate::GraphErrors, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "ok": false, "errors": errors.0 }));
    } else {
        eprint!("error: {errors}");
    }
}

fn run(a: RunArgs) -> i32 {
    let (device, line) = match device::select(a.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    if !a.quiet {
        eprintln!("{line}");
    }
    if let Some(n) = a.threads {
        tch::set_num_threads(n.max(1));
    }
    let (registry, _) = load_plugins(&a.plugins, a.quiet);
    let checked = match crate::load_graph(&a.graph, &a.set, &registry, true) {
        Ok(c) => c,
        Err(e) => {
            print_graph_errors(&e, a.json);
            return EXIT_BAD_INPUT;
        }
    };
    let mut exec = Executor::new(registry);
    exec.set_device(device);
    exec.set_output_dir(a.out.to_string_lossy());
    let flag = exec.interrupt_flag();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    let observer = progress::observer_for(a.quiet, top_level_ids(&checked));
    let profile = profile::Profile::new(observer.as_ref());
    let result = exec.run(&checked, None, &profile);
    if a.profile {
        eprint!("{}", profile.report());
    }
    match result {
        Ok(outcome) => {
            if a.json {
                let outputs: serde_json::Map<String, serde_json::Value> = outcome
                    .outputs
                    .iter()
                    .map(|(id, outs)| {
                        (
                            id.clone(),
                            outs.iter()
                                .map(|(n, v)| (n.clone(), report_json_value(v)))
                                .collect(),
                        )
                    })
                    .collect();
                let doc = serde_json::json!({
                    "ok": true, "outputs": outputs, "executed": outcome.executed,
                    "cached": outcome.cached, "seconds": outcome.seconds,
                });
                println!("{doc}");
            } else {
                for (_, outs) in &outcome.outputs {
                    for (_, v) in outs {
                        print_paths(v);
                    }
                }
            }
            0
        }
        Err(e) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "node": e.node(), "error": e.to_string() })
                );
            }
            eprintln!("error: {e}");
            if matches!(e, crate::RunError::Interrupted { .. }) {
                EXIT_INTERRUPTED
            } else {
                EXIT_RUN_FAILED
            }
        }
    }
}

/// Prints the file paths an output node reported (strings naming existing files).
fn print_paths(v: &Value) {
    match v {
        Value::Str(s) if Path::new(s.as_ref()).is_file() => println!("{s}"),
        Value::List(items) => items.iter().for_each(print_paths),
        _ => {}
    }
}

/// A value as JSON for reports (tensors and objects are described, not dumped).
fn report_json_value(v: &Value) -> serde_json::Value {
    match v {
        Value::None => serde_json::Value::Null,
        Value::Int(i) => (*i).into(),
        Value::Float(f) => (*f).into(),
        Value::Bool(b) => (*b).into(),
        Value::Str(s) => s.as_ref().into(),
        Value::List(items) => items.iter().map(report_json_value).collect(),
        Value::Tensor(t) => {
            serde_json::json!({ "tensor": t.tensor().size(), "dtype": format!("{:?}", t.tensor().kind()) })
        }
        Value::Object(o) => serde_json::json!({ "object": o.type_name() }),
    }
}

fn validate(a: ValidateArgs) -> i32 {
    device::init();
    let (registry, _) = load_plugins(&a.plugins, a.json);
    match crate::load_graph(&a.graph, &a.set, &registry, true) {
        Ok(c) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": true, "nodes": c.graph.nodes.len() })
                );
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

fn nodes(a: NodesArgs) -> i32 {
    device::init();
    let (registry, _) = load_plugins(&a.plugins, a.json);
    if a.json {
        let map: serde_json::Map<String, serde_json::Value> = registry
            .types()
            .map(|t| {
                let mut v = serde_json::to_value(&t.schema).expect("schemas serialise");
                v["plugin"] = t.library.name.clone().into();
                (t.schema.type_name.clone(), v)
            })
            .collect();
        println!("{}", serde_json::Value::Object(map));
        return 0;
    }
    println!("Loop  [built-in]  iterate a body sub-graph over `over` (a list or a count), carrying values via `next`");
    for t in registry.types() {
        let s = &t.schema;
        println!(
            "\n{}  [{} · plugin {}]{}",
            s.type_name,
            s.category,
            t.library.name,
            if s.output_node { "  (output)" } else { "" }
        );
        if !s.description.is_empty() {
            println!("  {}", s.description);
        }
        for i in &s.inputs {
            let mut extra = Vec::new();
            if let Some(d) = &i.default {
                extra.push(format!("default {d}"));
            } else if !i.required {
                extra.push("optional".into());
            }
            if let Some(m) = i.min {
                extra.push(format!("min {m}"));
            }
            if let Some(m) = i.max {
                extra.push(format!("max {m}"));
            }
            if let Some(c) = &i.choices {
                extra.push(format!("one of {}", c.join("|")));
            }
            let extra = if extra.is_empty() {
                String::new()
            } else {
                format!(" ({})", extra.join(", "))
            };
            println!("  in  {}: {}{extra}", i.name, i.ty);
        }
        for o in &s.outputs {
            println!("  out {}: {}", o.name, o.ty);
        }
    }
    0
}

fn info(a: NodesArgs) -> i32 {
    let cuda = device::init();
    let cuda_mapped = device::mapped_path("libtorch_cuda.so");
    let (registry, _) = load_plugins(&a.plugins, a.json);
    let cuda_state = match cuda {
        device::CudaLibrary::Loaded(p) => format!("loaded ({})", p.display()),
        device::CudaLibrary::NotShipped => "not shipped (CPU-only libtorch)".into(),
        device::CudaLibrary::Failed(e) => format!("failed: {e}"),
    };
    let plugins: Vec<serde_json::Value> = registry
        .libraries()
        .iter()
        .map(|l| serde_json::json!({ "name": l.name, "path": l.path, "generation": l.generation }))
        .collect();
    let doc = serde_json::json!({
        "abi": diffgraph_sdk::abi::compat_string(),
        "libtorch_dir": device::libtorch_dir(),
        "cuda_library": cuda_state,
        "cuda_library_mapped": cuda_mapped,
        "cuda_available": tch::Cuda::is_available(),
        "cuda_devices": tch::Cuda::device_count(),
        "plugins": plugins,
    });
    if a.json {
        println!("{doc}");
    } else {
        println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    }
    0
}
