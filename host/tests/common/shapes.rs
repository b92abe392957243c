//! The guidance study's procedural evaluator (scripts/train/evaluator.py)
//! in Rust: what an image of the embedded demo model shows (colour,
//! background, position), for tests that check a generated image's content.
use std::path::Path;

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
pub fn analyse(png: &Path) -> (String, String, String) {
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
