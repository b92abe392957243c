//! The hidden `diffgraph worker` subcommand: the supervised worker process
//! that `serve`, `run --isolate` and `watch --isolate` start
//! (`diffgraph::worker`): JSON lines on stdin/stdout, one job at a time.
use crate::args::{PluginArgs, EXIT_BAD_INPUT};
use clap::Args;
use diffgraph::device;
use diffgraph::device::DeviceRequest;
use std::path::PathBuf;

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub plugins: PluginArgs,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceRequest,
    #[arg(long, default_value = "output")]
    pub out: PathBuf,
    /// libtorch CPU threads (default: the cores this process may use).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Redis queue, previews, hot reload and the cache budget.
    #[cfg(feature = "server")]
    #[command(flatten)]
    pub server: crate::server::WorkerArgs,
}

/// Serves jobs on stdin/stdout until stdin closes.
pub fn worker(a: WorkerArgs) -> i32 {
    #[cfg(feature = "server")]
    if let Some(url) = a.server.queue.clone() {
        // A scale-out worker: a process of its own, with its own Ctrl-C.
        return crate::server::queue_worker(a, &url);
    }
    // Ctrl-C on a terminal reaches the whole process group: the parent
    // decides (it sends an interrupt request, or exits on the second press,
    // which closes our stdin and ends us), so the worker ignores SIGINT.
    let _ = ctrlc::set_handler(|| {});
    let device = match device::select(a.device) {
        Ok((d, _)) => d,
        Err(e) => {
            eprintln!("worker: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    diffgraph::threads::configure(a.threads.map(usize::from));
    #[cfg(feature = "server")]
    crate::server::child_worker(&a, device);
    #[cfg(not(feature = "server"))]
    {
        use diffgraph::{plugin::discovery, Executor};
        let (registry, skipped) = discovery::load(&a.plugins.sources());
        for s in skipped {
            eprintln!("worker: warning: {s}");
        }
        let mut exec = Executor::new(registry);
        exec.set_device(device);
        exec.set_output_dir(a.out.to_string_lossy());
        let input = std::io::BufReader::new(std::io::stdin());
        diffgraph::worker::child::serve(exec, input, std::io::stdout(), true);
    }
    0
}

/// The device as the worker's `--device` argument.
pub fn device_arg(d: DeviceRequest) -> String {
    match d {
        DeviceRequest::Cpu => "cpu".to_string(),
        DeviceRequest::Cuda(n) => format!("cuda:{n}"),
        DeviceRequest::Auto => "auto".to_string(),
    }
}
