//! The command line's arguments and exit codes.
use clap::{Args, Parser, Subcommand};
use diffgraph::device::DeviceRequest;
use diffgraph::graph::overrides::Override;
use diffgraph::plugin::discovery::{self, PluginSource};
use std::path::PathBuf;

/// Exit codes: 0 success, 1 a node failed, 2 bad input (graph, arguments,
/// device), 130 interrupted.
pub const EXIT_RUN_FAILED: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

#[derive(Parser)]
#[command(
    name = "diffgraph",
    version,
    about = "Headless node-graph executor for diffusion models"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Validate and run a graph; prints the files its output nodes wrote.
    Run(RunArgs),
    /// Validate a graph without running anything.
    Validate(ValidateArgs),
    /// List every node type with its inputs and outputs.
    Nodes(NodesArgs),
    /// Show the libtorch build, the CUDA library state and the loaded plugins.
    Info(NodesArgs),
    /// Print the native graph a ComfyUI workflow (API format, or a PNG carrying
    /// one) becomes: its KSamplers as the denoising Loop they hide.
    Convert(ConvertArgs),
    /// Run a graph, then re-run it whenever a plugin library is rebuilt or the
    /// graph file is edited, reusing every cached result that did not change.
    Watch(WatchArgs),
    /// Serve ComfyUI's HTTP and WebSocket API: a job queue persisted in
    /// SQLite, jobs run in a supervised worker process that keeps models loaded.
    #[cfg(feature = "server")]
    Serve(crate::server::ServeArgs),
    /// Internal: opens plugin libraries in a throw-away process, so that one
    /// whose constructor crashes is refused instead of killing diffgraph.
    #[command(hide = true)]
    ProbePlugins { files: Vec<PathBuf> },
    /// With --queue redis://...: a scale-out worker taking jobs from Redis
    /// Streams (docs/scale-out.md). Without: the worker process `serve` and
    /// `--isolate` start (JSON lines on stdin/stdout).
    Worker(crate::worker::WorkerArgs),
    /// The Redis job queue: `diffgraph queue status --queue redis://...`.
    #[cfg(feature = "server")]
    Queue(crate::server::QueueArgs),
}

#[derive(Args)]
pub struct PluginArgs {
    /// Plugin folder (every shared library in it) or library file; repeatable.
    /// Default: $DIFFGRAPH_PLUGINS (colon-separated), else the libdiffgraph_nodes_*
    /// libraries next to this executable.
    #[arg(long = "plugins", value_name = "DIR")]
    pub plugins: Vec<PathBuf>,
}

impl PluginArgs {
    /// Where plugins come from (`plugin::discovery`).
    pub fn sources(&self) -> Vec<PluginSource> {
        discovery::sources(&self.plugins)
    }
}

/// ComfyUI model folders.
#[derive(Args)]
pub struct ModelArgs {
    /// A model folder with ComfyUI's layout (checkpoints/, vae/, loras/,
    /// embeddings/) where ComfyUI workflows' file names resolve; repeatable,
    /// searched before $DIFFGRAPH_MODELS (colon-separated). The embedded demo
    /// model is always the checkpoint `shapes-ldm`.
    #[arg(long = "models", value_name = "DIR")]
    pub models: Vec<PathBuf>,
}

impl ModelArgs {
    pub fn folders(&self) -> diffgraph::comfy::ModelFolders {
        diffgraph::comfy::ModelFolders::new(&self.models)
    }
}

#[derive(Args)]
pub struct ConvertArgs {
    /// The ComfyUI workflow (API-format JSON, or a PNG ComfyUI saved).
    pub workflow: PathBuf,
    #[arg(long = "set", value_name = "NODE.INPUT=VALUE")]
    pub set: Vec<Override>,
    #[command(flatten)]
    pub models: ModelArgs,
}

/// What `run` and `watch` share: overrides, device, output folder, plugins.
#[derive(Args)]
pub struct ExecArgs {
    /// Override a node's input: NODE.INPUT=VALUE (VALUE as JSON, else a string); repeatable.
    #[arg(long = "set", value_name = "NODE.INPUT=VALUE")]
    pub set: Vec<Override>,
    /// cpu, cuda, cuda:N or auto (CUDA when available).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceRequest,
    /// Folder output nodes write into.
    #[arg(long, default_value = "output")]
    pub out: PathBuf,
    /// libtorch CPU threads. Default: the cores this process may use (its
    /// CPU affinity and cgroup quota). OpenMP threads wait passively unless
    /// $OMP_WAIT_POLICY says otherwise.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    #[command(flatten)]
    pub plugins: PluginArgs,
    #[command(flatten)]
    pub models: ModelArgs,
    /// Run nodes in a supervised worker process: a node that aborts,
    /// segfaults, overflows its stack or calls exit() fails the run, naming
    /// the node, instead of killing diffgraph. `watch` restarts the worker on
    /// a plugin reload and falls back to the previous generation if the new
    /// one crashes it.
    #[arg(long)]
    pub isolate: bool,
}

#[derive(Args)]
pub struct RunArgs {
    /// The graph file (JSON), or a PNG that carries its graph (written by `run` or `serve`).
    pub graph: PathBuf,
    #[command(flatten)]
    pub exec: ExecArgs,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the time spent in each node (loop bodies summed) at the end.
    #[arg(long)]
    pub profile: bool,
    /// Print the outcome (outputs, executed and cached nodes) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ValidateArgs {
    pub graph: PathBuf,
    #[arg(long = "set", value_name = "NODE.INPUT=VALUE")]
    pub set: Vec<Override>,
    #[command(flatten)]
    pub plugins: PluginArgs,
    #[command(flatten)]
    pub models: ModelArgs,
    /// Print errors as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct NodesArgs {
    #[command(flatten)]
    pub plugins: PluginArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct WatchArgs {
    /// The graph file (JSON); edits to it are picked up.
    pub graph: PathBuf,
    #[command(flatten)]
    pub exec: ExecArgs,
    /// Rebuild a plugin crate of the current cargo workspace (`cargo build`)
    /// when its Rust sources change; the rebuilt library is then reloaded.
    #[arg(long)]
    pub build: bool,
    /// Debounce interval for file events, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub debounce_ms: u64,
    /// One JSON object per line on stdout for every event (for tools and tests).
    #[arg(long)]
    pub json: bool,
}
