//! File paths in a native graph resolve relative to the graph file's folder
//! (`graph::relative`), and a relative path that already names a file from
//! the working directory keeps meaning that file.
mod common;

use std::path::Path;
use std::process::Command;

fn run(graph: &Path, cwd: &Path, out: &Path) -> std::process::Output {
    Command::new(common::diffgraph_bin())
        .args(["run", graph.to_str().unwrap(), "--quiet", "--threads", "1"])
        .args(["--out", out.to_str().unwrap()])
        .current_dir(cwd)
        .env_remove("DIFFGRAPH_PLUGINS")
        .output()
        .unwrap()
}

fn pixels(p: &Path) -> Vec<u8> {
    image::open(p).unwrap().to_rgb8().into_raw()
}

#[test]
fn paths_resolve_next_to_the_graph_file_unless_they_resolve_from_the_working_directory() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let images = repo.join("tests/fixtures/comfy/images");
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("graphs");
    std::fs::create_dir_all(&folder).unwrap();
    // Next to the graph: rgb.png; from the working directory (the repo):
    // tests/fixtures/comfy/images/rgba.png.
    std::fs::copy(images.join("rgb.png"), folder.join("rgb.png")).unwrap();
    let graph = serde_json::json!({ "nodes": {
        "a": { "type": "LoadImage", "inputs": { "path": "rgb.png" } },
        "b": { "type": "LoadImage", "inputs": { "path": "tests/fixtures/comfy/images/rgba.png" } },
        "sa": { "type": "SaveImage", "inputs": { "image": ["a", "image"], "filename_prefix": "beside" } },
        "sb": { "type": "SaveImage", "inputs": { "image": ["b", "image"], "filename_prefix": "cwd" } },
    }});
    let file = folder.join("graph.json");
    std::fs::write(&file, graph.to_string()).unwrap();
    let out = dir.path().join("out");
    let o = run(&file, &repo, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        pixels(&out.join("beside.png")),
        pixels(&images.join("rgb.png"))
    );
    assert_eq!(
        pixels(&out.join("cwd.png")),
        pixels(&images.join("rgba.png"))
    );
    // From elsewhere, the second path names nothing: a validation error.
    let o = run(&file, dir.path(), &out);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("rgba.png") && !err.contains("\"rgb.png\""),
        "{err}"
    );
}
