//! `ProceduralImages`: a small fixed data set of simple drawn scenes, the
//! "training set" of the demo's exact denoiser. Deterministic, computed with
//! plain loops, no files.
use diffgraph_sdk::prelude::*;

/// The scenes, in the order of the output batch.
pub const SCENES: [&str; 8] = [
    "red circle on blue",
    "yellow square on green",
    "white triangle on black",
    "cyan and magenta stripes",
    "orange and purple checkerboard",
    "landscape with sky, sun and grass",
    "white ring on dark red",
    "blue cross on light gray",
];

type Rgb = [f32; 3];

/// Colour in [0, 1] of scene `k` at (u, v) in [0, 1]² (v downwards).
fn scene(k: usize, u: f32, v: f32) -> Rgb {
    let r = ((u - 0.5).powi(2) + (v - 0.5).powi(2)).sqrt();
    let pick = |inside: bool, a: Rgb, b: Rgb| if inside { a } else { b };
    match k {
        0 => pick(r <= 0.3, [0.9, 0.1, 0.1], [0.1, 0.2, 0.8]),
        1 => pick(
            (u - 0.5).abs() < 0.25 && (v - 0.5).abs() < 0.25,
            [1.0, 0.9, 0.1],
            [0.1, 0.6, 0.2],
        ),
        2 => {
            let inside = (0.15..=0.85).contains(&v) && (u - 0.5).abs() <= 0.35 * (v - 0.15) / 0.7;
            pick(inside, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
        }
        3 => pick(
            (v * 6.0).floor() as i32 % 2 == 0,
            [0.0, 0.9, 0.9],
            [0.9, 0.0, 0.8],
        ),
        4 => pick(
            ((u * 4.0).floor() + (v * 4.0).floor()) as i32 % 2 == 0,
            [1.0, 0.55, 0.0],
            [0.45, 0.1, 0.6],
        ),
        5 => {
            let sun = ((u - 0.75).powi(2) + (v - 0.25).powi(2)).sqrt() <= 0.1;
            if v >= 0.6 {
                [0.2, 0.55, 0.15]
            } else if sun {
                [1.0, 0.85, 0.2]
            } else {
                let s = v / 0.6;
                [0.3 + 0.55 * s, 0.5 + 0.4 * s, 0.95 + 0.05 * s]
            }
        }
        6 => pick(
            (0.2..=0.32).contains(&r),
            [1.0, 1.0, 1.0],
            [0.4, 0.05, 0.05],
        ),
        _ => pick(
            (u - 0.5).abs() < 0.1 || (v - 0.5).abs() < 0.1,
            [0.1, 0.2, 0.7],
            [0.95, 0.95, 0.95],
        ),
    }
}

/// The scenes as a float32 CPU tensor [8, 3, height, width] in [-1, 1].
pub fn procedural_images(width: i64, height: i64) -> Result<Tensor, NodeError> {
    let (w, h) = (usize::try_from(width).ok(), usize::try_from(height).ok());
    let (Some(w @ 1..), Some(h @ 1..)) = (w, h) else {
        return Err(format!("width and height must be positive, got {width}x{height}").into());
    };
    let k = SCENES.len();
    let mut data = vec![0f32; k * 3 * h * w];
    for (s, image) in data.chunks_exact_mut(3 * h * w).enumerate() {
        for y in 0..h {
            for x in 0..w {
                let rgb = scene(s, (x as f32 + 0.5) / w as f32, (y as f32 + 0.5) / h as f32);
                for (c, value) in rgb.iter().enumerate() {
                    image[(c * h + y) * w + x] = value * 2.0 - 1.0;
                }
            }
        }
    }
    Ok(Tensor::from_slice(&data).f_view([k as i64, 3, height, width])?)
}

pub struct ProceduralImages;

impl Node for ProceduralImages {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ProceduralImages", "demo")
            .description(&format!(
                "Eight simple procedurally drawn scenes ({}), as a batch in [-1, 1]. Deterministic.",
                SCENES.join("; ")
            ))
            .input(InputSpec::int("width").default(64).range(8.0, 2048.0))
            .input(InputSpec::int("height").default(64).range(8.0, 2048.0))
            .output(OutputSpec::new("images", PortType::Tensor).doc("float32 [8, 3, height, width] in [-1, 1]"))
    }

    fn run(&self, ctx: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let images = procedural_images(inputs.int("width")?, inputs.int("height")?)?;
        Ok(vec![images.f_to_device(ctx.device())?.into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_distinct_and_in_range() {
        let t = procedural_images(32, 24).unwrap();
        assert_eq!(t.size(), vec![8, 3, 24, 32]);
        assert!(t.min().double_value(&[]) >= -1.0 && t.max().double_value(&[]) <= 1.0);
        let flat = t.view([8, -1]);
        for a in 0..8 {
            for b in 0..a {
                let d = (flat.get(a) - flat.get(b)).abs().max().double_value(&[]);
                assert!(d > 0.5, "scenes {a} and {b} are too alike");
            }
        }
        // The circle's centre is red, its corner blue.
        assert!(t.double_value(&[0, 0, 12, 16]) > 0.7 && t.double_value(&[0, 2, 0, 0]) > 0.5);
    }
}
