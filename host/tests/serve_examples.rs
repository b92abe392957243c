//! ComfyUI's own example clients, unchanged, against `diffgraph serve`:
//! `script_examples/basic_api_example.py` and `websockets_api_example.py`
//! from ComfyUI's repository at the commit `scripts/setup.sh` pins (GPL-3.0:
//! setup fetches them into `.venv/comfyui-script-examples`, checked by
//! SHA-256, instead of committing them), run by the project's Python with
//! websocket-client from PyPI (also installed by setup). Their checkpoint,
//! `v1-5-pruned-emaonly.safetensors`, is the tiny SD 1 fixture in a models
//! folder. The scripts hardcode 127.0.0.1:8188: when that port is taken the
//! test says so and is skipped, as it is when setup could not fetch the
//! scripts (offline). `websockets_api_example_ws_images.py` needs ComfyUI's
//! `SaveImageWebsocket` node type, which diffgraph does not have.
//!
//! Also a client library from PyPI, `comfy-api-simplified` (never skipped:
//! setup installs it from the package registry).
//!
//! Overrides for a machine without the project's .venv set up:
//! `COMFYUI_SCRIPT_EXAMPLES` (a folder with the scripts) and
//! `DIFFGRAPH_TEST_PYTHON` (a Python with websocket-client).
mod serve_support;

use serve_support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `script` to completion (at most `limit`), asserting success.
fn run_script(python: &Path, script: &Path, cwd: &Path, limit: Duration) {
    let mut child = Command::new(python)
        .arg(script)
        .current_dir(cwd)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("{} did not finish within {limit:?}", script.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{}: {status}", script.display());
}

#[test]
fn comfyui_script_examples_run_unchanged() {
    let root = repo_root();
    let examples = std::env::var_os("COMFYUI_SCRIPT_EXAMPLES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/comfyui-script-examples"));
    let scripts = ["websockets_api_example.py", "basic_api_example.py"].map(|s| examples.join(s));
    if let Some(missing) = scripts.iter().find(|s| !s.exists()) {
        eprintln!(
            "SKIPPED: {} is missing (scripts/setup.sh fetches ComfyUI's script_examples; was it offline?)",
            missing.display()
        );
        return;
    }
    let python = std::env::var_os("DIFFGRAPH_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let probe = Command::new(&python)
        .args(["-c", "import websocket"])
        .status()
        .expect("run python");
    assert!(
        probe.success(),
        "{} has no websocket-client: run scripts/setup.sh",
        python.display()
    );
    if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", 8188)) {
        eprintln!("SKIPPED: the example scripts need 127.0.0.1:8188, which is taken ({e})");
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let models = common::tiny_sd1_models_folder();
    let models = models.path();
    let server = Server::start(
        dir.path(),
        &["--port", "8188", "--models", models.to_str().unwrap()],
    );
    assert_eq!(server.port, 8188);

    // Follows the socket to `executing` null, reads the history, downloads
    // every image: any failure is a Python exception and a non-zero exit.
    let limit = Duration::from_secs(300);
    run_script(&python, &scripts[0], dir.path(), limit);
    let (_, history) = server.get("/history");
    let entries = history.as_object().unwrap();
    assert_eq!(entries.len(), 1, "{history}");
    let (_, first) = entries.iter().next().unwrap();
    assert_eq!(first["status"]["status_str"], "success", "{first}");
    assert_eq!(
        first["prompt"][2]["6"]["inputs"]["text"],
        "masterpiece best quality man"
    );
    let image = &first["outputs"]["9"]["images"][0];
    assert_eq!(image["type"], "output", "{first}");

    // Queues the default workflow and exits; the job then runs.
    run_script(&python, &scripts[1], dir.path(), limit);
    server.wait_idle(limit);
    let (_, history) = server.get("/history");
    let entries = history.as_object().unwrap();
    assert_eq!(entries.len(), 2, "{history}");
    for (id, h) in entries {
        assert_eq!(h["status"]["status_str"], "success", "{id}: {h}");
        let img = &h["outputs"]["9"]["images"][0];
        let (status, _, bytes) = server.request(
            "GET",
            &format!(
                "/view?filename={}&subfolder={}&type=output",
                img["filename"].as_str().unwrap(),
                img["subfolder"].as_str().unwrap()
            ),
            &[],
            b"",
        );
        assert_eq!(status, 200);
        // The tiny fixture's VAE upsamples the 64x64 latent by 2.
        let png = image::load_from_memory(&bytes).unwrap();
        assert_eq!((png.width(), png.height()), (128, 128));
        let text = diffgraph::pngtext::read(&bytes).unwrap();
        assert_eq!(text[0].0, "prompt", "ComfyUI's key for the API prompt");
    }
}

/// `comfy-api-simplified` from PyPI (installed by scripts/setup.sh), a
/// client library people script ComfyUI with, through its own calls:
/// workflow titles, queue-and-wait over the WebSocket, history, /view,
/// object_info, system_stats, embeddings, queue and upload
/// (host/tests/serve_clients/comfy_api_simplified_client.py).
#[test]
fn comfy_api_simplified_from_pypi_runs_a_workflow() {
    let root = repo_root();
    let python = std::env::var_os("DIFFGRAPH_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/python"));
    let probe = Command::new(&python)
        .args(["-c", "import comfy_api_simplified"])
        .status()
        .expect("run python");
    assert!(
        probe.success(),
        "{} has no comfy-api-simplified: run scripts/setup.sh",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let models = common::tiny_sd1_models_folder();
    let server = Server::start(dir.path(), &["--models", models.path().to_str().unwrap()]);
    let upload = dir.path().join("upload.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 30]))
        .save(&upload)
        .unwrap();
    let client = root.join("host/tests/serve_clients/comfy_api_simplified_client.py");
    let workflow = root.join("tests/fixtures/comfy/default-api-workflow.json");
    let out = Command::new(&python)
        .arg(&client)
        .arg(format!("http://127.0.0.1:{}", server.port))
        .arg(&workflow)
        .arg(&upload)
        .current_dir(dir.path())
        .output()
        .expect("start python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let result: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    let images = result["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{result}");
    assert!(
        images[0].as_str().unwrap().starts_with("simplified"),
        "{result}"
    );
    // The job is in the history with the client's parameters.
    let (_, history) = server.get("/history");
    let (_, entry) = history.as_object().unwrap().iter().next().unwrap();
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    assert_eq!(entry["prompt"][2]["3"]["inputs"]["seed"], 42);
    assert_eq!(entry["prompt"][2]["6"]["inputs"]["text"], "a red circle");
    // The upload landed in the input folder, in the library's subfolder.
    let name = result["uploaded"]["name"].as_str().unwrap();
    let sub = result["uploaded"]["subfolder"].as_str().unwrap();
    assert_eq!(sub, "default_upload_folder", "{result}");
    assert!(dir.path().join("input").join(sub).join(name).is_file());
}
