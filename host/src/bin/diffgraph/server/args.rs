//! `serve`'s arguments (the hidden `worker`'s are in `crate::worker`).
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
}
