//! `serve`'s and the hidden `worker`'s arguments.
use super::preview::PreviewMethod;
use crate::args::PluginArgs;
use clap::Args;
use diffgraph::device::DeviceRequest;
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on; loopback unless you choose otherwise.
    #[arg(long, default_value = "127.0.0.1")]
    pub listen: IpAddr,
    /// Port (0: any free port; the `listening on` line says which).
    #[arg(long, default_value_t = 8188)]
    pub port: u16,
    /// Model folder (`GET /models`).
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Output folder: images, `temp/`, and the queue database.
    #[arg(long, default_value = "output")]
    pub output: PathBuf,
    /// Input folder (`POST /upload/image`).
    #[arg(long, default_value = "input")]
    pub input: PathBuf,
    #[command(flatten)]
    pub plugins: PluginArgs,
    /// cpu, cuda, cuda:N or auto (for the worker).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceRequest,
    /// A file holding a bearer token every request must carry.
    #[arg(long, value_name = "F")]
    pub auth_token_file: Option<PathBuf>,
    /// Most jobs waiting; past it `POST /prompt` answers 503.
    #[arg(long, default_value_t = 1000)]
    pub max_queue: usize,
    /// Largest request body in MiB (uploads included).
    #[arg(long, default_value_t = 32)]
    pub max_body_mb: usize,
    /// Keep the queue and history in Redis (redis://HOST:PORT/N) and let
    /// `diffgraph worker --queue` processes run the jobs (docs/scale-out.md).
    #[arg(long, value_name = "URL")]
    pub queue: Option<String>,
    /// With --queue: where workers' outputs come from (folder: --output is
    /// shared with the workers; redis: small files through Redis).
    #[arg(long, value_enum, default_value = "folder")]
    pub output_store: super::queue::storage::StoreKind,
    #[command(flatten)]
    pub preview: PreviewArgs,
    /// Hot reload: plugin libraries rebuilt in the plugin folders are
    /// loaded between jobs, as `diffgraph watch` does.
    #[arg(long)]
    pub watch: bool,
    /// Memory budget of the worker's result cache in MiB: least recently
    /// used idle results (loaded models included) are evicted past it.
    /// Default: no budget; results used by the last two jobs are kept.
    #[arg(long, value_name = "N")]
    pub cache_mb: Option<u64>,
}

/// ComfyUI's live-preview options (`comfy/cli_args.py`), for the worker.
#[derive(Args, Clone)]
pub struct PreviewArgs {
    /// Binary preview frames over the WebSocket after each sampler step.
    #[arg(long, value_enum, default_value = "none")]
    pub preview_method: PreviewMethod,
    /// Largest side of a preview image, in pixels.
    #[arg(long, default_value_t = 512)]
    pub preview_size: u32,
}

impl PreviewArgs {
    /// The same options as worker arguments.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        use clap::ValueEnum;
        let method = self
            .preview_method
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        vec![
            "--preview-method".into(),
            method.into(),
            "--preview-size".into(),
            self.preview_size.to_string().into(),
        ]
    }
}

/// The `worker` subcommand's options that only a server build has (the
/// rest, shared with `run --isolate`, are `crate::worker::WorkerArgs`):
/// with `--queue`, a scale-out worker taking jobs from Redis; without, the
/// child process `serve` drives over stdin/stdout.
#[derive(Args)]
pub struct WorkerArgs {
    /// Take jobs from Redis Streams: redis://HOST:PORT/N.
    #[arg(long, value_name = "URL")]
    pub queue: Option<String>,
    /// Model folder (ComfyUI's layout), as `serve --models`.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Input folder (uploaded images), as `serve --input`.
    #[arg(long, default_value = "input")]
    pub input: PathBuf,
    /// This worker's name in `diffgraph queue status` (default host-pid);
    /// unique per live worker.
    #[arg(long, value_name = "W")]
    pub name: Option<String>,
    /// Where outputs go for the front-ends: a shared folder or Redis.
    #[arg(long, value_enum, default_value = "folder")]
    pub output_store: super::queue::storage::StoreKind,
    /// A job whose worker sends no heartbeat for this long is taken over
    /// by another worker.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub visibility_ms: u64,
    /// A job taken this many times without finishing (its workers died)
    /// goes to the dead-letter stream on the next take.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub max_attempts: u32,
    /// Take jobs in queue order only, ignoring which models are loaded
    /// where (for comparison).
    #[arg(long)]
    pub no_affinity: bool,
    /// With affinity: a job waiting longer than this is taken by any idle
    /// worker, even one that must load its model.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub affinity_wait_ms: u64,
    /// Models kept loaded at once (0: no limit). Taking a job for another
    /// model past it restarts the worker's child process, freeing its cache.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_models: usize,
    #[command(flatten)]
    pub preview: PreviewArgs,
    /// Load plugins from private copies and take reload requests.
    #[arg(long)]
    pub watch: bool,
    /// Result cache budget in MiB, as `serve --cache-mb`.
    #[arg(long)]
    pub cache_mb: Option<u64>,
}
