//! The embedded demo model (models/shapes-ldm, trained by scripts/train/)
//! follows its prompts through the demo graphs: the generated image is
//! checked from its pixels the way the guidance study's procedural evaluator
//! does (scripts/train/evaluator.py): background = median of the border,
//! shape = pixels far from it, colour = nearest palette colour of their
//! median, position = their centroid's cell of the 3x3 grid.
mod common;

use common::shapes::analyse;
use std::process::Command;

/// Runs a graph of graphs/ with `--set` overrides; returns the output folder.
fn run(graph: &str, sets: &[&str]) -> tempfile::TempDir {
    let out_dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(common::diffgraph_bin());
    // One thread each: the tests run in parallel, and libtorch's OpenMP
    // threads spin rather than share a busy core.
    cmd.args(["run", graph, "--quiet", "--threads", "1", "--out"])
        .arg(out_dir.path())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env_remove("DIFFGRAPH_PLUGINS");
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out_dir
}

#[test]
fn the_demo_graph_draws_its_default_prompt() {
    // "a large red star in the center on a blue background"
    let out = run("graphs/demo.json", &[]);
    let got = analyse(&out.path().join("demo.png"));
    assert_eq!(got, ("red".into(), "blue".into(), "center".into()));
}

#[test]
fn the_demo_graph_follows_another_prompt() {
    let out = run(
        "graphs/demo.json",
        &["prompt.text=a small yellow square in the top left on a black background"],
    );
    let got = analyse(&out.path().join("demo.png"));
    assert_eq!(got, ("yellow".into(), "black".into(), "top left".into()));
}

#[test]
fn the_classifier_guided_demo_writes_a_batch() {
    let out = run(
        "graphs/demo_classifier_guidance.json",
        &["size.batch=2", "guide.scale=3", "guide.target=[1]"],
    );
    for i in 0..2 {
        let png = out.path().join(format!("demo_classifier_guidance_{i}.png"));
        let img = image::open(&png).unwrap();
        assert_eq!((img.width(), img.height()), (64, 64));
    }
}
