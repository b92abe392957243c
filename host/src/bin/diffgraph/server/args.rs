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

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub plugins: PluginArgs,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceRequest,
    #[arg(long, default_value = "output")]
    pub out: PathBuf,
    #[command(flatten)]
    pub preview: PreviewArgs,
    /// Load plugins from private copies and take reload requests.
    #[arg(long)]
    pub watch: bool,
    #[arg(long)]
    pub cache_mb: Option<u64>,
}
