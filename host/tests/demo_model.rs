//! The embedded demo model (models/shapes-ldm, trained by scripts/train/)
//! follows its prompts through the demo graphs: the generated image is
//! checked from its pixels the way the guidance study's procedural evaluator
//! does (scripts/train/evaluator.py): background = median of the border,
//! shape = pixels far from it, colour = nearest palette colour of their
//! median, position = their centroid's cell of the 3x3 grid.
mod common;

use std::path::Path;
use std::process::Command;

/// Palette of scripts/train/shapes_data.py (RGB in [0, 1]).
const COLOURS: [(&str, [f32; 3]); 5] = [
    ("red", [0.90, 0.12, 0.10]),
    ("green", [0.12, 0.75, 0.15]),
    ("blue", [0.15, 0.30, 0.95]),
    ("yellow", [0.95, 0.88, 0.10]),
    ("white", [0.95, 0.95, 0.95]),
];
const BACKGROUNDS: [(&str, [f32; 3]); 4] = [
    ("black", [0.06, 0.06, 0.06]),
    ("gray", [0.50, 0.50, 0.50]),
    ("white", [0.95, 0.95, 0.95]),
    ("blue", [0.15, 0.30, 0.95]),
];
const POSITIONS: [&str; 9] = [
    "top left",
    "top center",
    "top right",
    "middle left",
    "center",
    "middle right",
    "bottom left",
    "bottom center",
    "bottom right",
];

/// What the pixels say: (colour, background, position).
fn analyse(png: &Path) -> (String, String, String) {
    let img = image::open(png).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let px = |x: u32, y: u32| img.get_pixel(x, y).0.map(|c| f32::from(c) / 255.0);
    let median = |mut v: Vec<[f32; 3]>| -> [f32; 3] {
        assert!(!v.is_empty());
        std::array::from_fn(|c| {
            v.sort_by(|a, b| a[c].total_cmp(&b[c]));
            v[v.len() / 2][c]
        })
    };
    let border: Vec<_> = (0..w)
        .flat_map(|x| [(x, 0), (x, h - 1)])
        .chain((0..h).flat_map(|y| [(0, y), (w - 1, y)]))
        .map(|(x, y)| px(x, y))
        .collect();
    let bg = median(border);
    let fg: Vec<(u32, u32)> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let p = px(x, y);
            (0..3).map(|c| (p[c] - bg[c]).abs()).fold(0.0, f32::max) > 0.2
        })
        .collect();
    assert!(fg.len() > 20, "{}: no shape found", png.display());
    let colour = median(fg.iter().map(|&(x, y)| px(x, y)).collect());
    let nearest = |palette: &[(&str, [f32; 3])], c: [f32; 3]| {
        let d = |p: &[f32; 3]| (0..3).map(|i| (p[i] - c[i]).powi(2)).sum::<f32>();
        palette
            .iter()
            .min_by(|a, b| d(&a.1).total_cmp(&d(&b.1)))
            .unwrap()
            .0
            .to_string()
    };
    let n = fg.len() as f32;
    let cx = fg.iter().map(|p| p.0 as f32).sum::<f32>() / n;
    let cy = fg.iter().map(|p| p.1 as f32).sum::<f32>() / n;
    let cell = |v: f32, size: u32| ((v * 3.0 / size as f32) as usize).min(2);
    let position = POSITIONS[cell(cy, h) * 3 + cell(cx, w)].to_string();
    (
        nearest(&COLOURS, colour),
        nearest(&BACKGROUNDS, bg),
        position,
    )
}

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
