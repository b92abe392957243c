//! Large 3x3 "same" convolutions as Winograd F(2x2, 3x3), computed in Rust.
//!
//! Why: the 3x3 convolutions of an SD-size U-Net's 64x64, 32x32 and 16x16
//! levels (and of the VAE decoder) are about a third of an SD1.5 step on the CPU,
//! and oneDNN's direct kernels already run them near this machine's peak
//! multiply-add rate. Winograd's algorithm needs 2.25x fewer multiply-adds
//! for the same result (BENCHMARKS.md, "Winograd convolutions").
//!
//! How (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural
//! Networks", F(2x2, 3x3)): each 2x2 output tile is A^T [U ⊙ (B^T d B)] A,
//! where d is the 4x4 input tile around it and U = G g G^T the 3x3 filter g
//! transformed to 4x4. Summed over input channels, the 16 positions ξ of the
//! 4x4 transform become 16 independent matrix products
//! M_ξ [out, tiles] = U_ξ [out, in] · V_ξ [in, tiles]: one batched GEMM in
//! libtorch (MKL). The transforms of the input and output are Rust loops
//! over contiguous rows of tiles (vectorised by the compiler), split over
//! libtorch's thread count by channel; the filters' transform is one GEMM
//! with G ⊗ G. Tiles go in chunks of whole tile rows, so that the
//! transformed input and the products stay near the cache size
//! ([`CHUNK_FLOATS`]) and memory does not grow with the image.
//!
//! Numerics: float32 throughout; the transforms add and subtract values
//! (G's halves are exact), so the result differs from a direct convolution
//! by float32 rounding of a few more terms (tests: < 2e-5 relative at
//! fan-ins up to 2880).
//!
//! When: float32 CPU tensors that need no gradient (classifier guidance's
//! gradients stay with libtorch), a 3x3 kernel, stride 1, padding 1, at
//! least [`MIN_OUTPUT_POSITIONS`] output positions and
//! [`MIN_WEIGHT_ELEMENTS`] weights: the rule is by shape alone.
use diffgraph_sdk::OwnedFloats;
use tch::Tensor;

use super::scratch::Scratch;
use super::small_conv::ConvShape;
use super::Switch;

/// Outputs smaller than this (height x width) stay with the other kernels
/// (`conv`'s GEMM form or oneDNN): against the GEMM form, SD1.5's
/// 1280-output convolutions took 0.61-0.76x its time at 16x16, 0.72-0.94x
/// at 12x12, 0.96x at 10x10 and 1.15x at 8x8 (BENCHMARKS.md, "Winograd
/// without copies").
pub const MIN_OUTPUT_POSITIONS: i64 = 12 * 12;

/// Weights smaller than this stay with oneDNN: at 128 channels the
/// transforms cost more than the saved multiply-adds (128 -> 128 at 64x64
/// and 512x512 took 1.5-1.6x oneDNN's time, 256 -> 256 at 256x256 0.83x).
pub const MIN_WEIGHT_ELEMENTS: i64 = 1 << 19;

/// Transformed-input floats per chunk of tiles (16 MiB).
const CHUNK_FLOATS: usize = 1 << 22;

/// On unless a benchmark turns it off ([`super::Switch`]).
pub static ENABLED: Switch = Switch::on();

/// `x.conv2d(weight, bias, 1, 1)` when the call is one this kernel takes
/// (module docs); `None` otherwise, and the caller chooses another kernel.
pub fn try_conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: i64,
    padding: i64,
) -> Option<Result<Tensor, tch::TchError>> {
    let shape = eligible(x, weight, bias, stride, padding)?;
    let threads = tch::get_num_threads().max(1) as usize;
    Some(run(x, weight, bias, shape, threads))
}

fn eligible(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: i64,
    padding: i64,
) -> Option<ConvShape> {
    if stride != 1 || padding != 1 || !ENABLED.is_on() {
        return None;
    }
    let weight_fits = |out_ch: i64, in_ch: i64| out_ch * in_ch * 9 >= MIN_WEIGHT_ELEMENTS;
    let shape = ConvShape::of_plain_call(x, weight, bias, 1, 1, weight_fits)?;
    ((shape.h * shape.w) as i64 >= MIN_OUTPUT_POSITIONS).then_some(shape)
}

fn run(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    s: ConvShape,
    threads: usize,
) -> Result<Tensor, tch::TchError> {
    let bias = bias.map(Scratch::read).transpose()?;
    let u = transform_weights(weight)?;
    let out = convolve(
        &Scratch::read(x)?,
        &u,
        bias.as_deref(),
        s,
        threads,
        CHUNK_FLOATS,
    )?;
    Ok(out.into_tensor())
}

/// The convolution of `x` [batch, in_ch, h, w] with the transformed filters
/// `u` [16, out_ch, in_ch] (+ `bias`), as [batch, out_ch, h, w], in chunks of
/// at most `chunk_floats` transformed floats (one tile row at least). The
/// transforms write into and read from libtorch's tensors directly
/// ([`OwnedFloats`]): copying the transformed input, the products and the
/// output in and out of tensors was ~15% of a call.
fn convolve(
    x: &[f32],
    u: &Tensor,
    bias: Option<&[f32]>,
    s: ConvShape,
    threads: usize,
    chunk_floats: usize,
) -> Result<OwnedFloats, tch::TchError> {
    let mut out = OwnedFloats::zeros(&[s.batch, s.out_ch, s.h, s.w].map(|v| v as i64))?;
    let tiles = Tiles::new(s);
    for chunk in tiles.chunks(s, chunk_floats) {
        let size = [16, s.in_ch, chunk.tiles(&tiles)].map(|v| v as i64);
        let mut v = OwnedFloats::zeros(&size)?;
        transform_input(x, s, &tiles, &chunk, threads, v.as_mut_slice());
        // M_ξ = U_ξ V_ξ for every ξ: [16, out, tiles].
        let m = OwnedFloats::bmm(u, &v.into_tensor())?;
        transform_output(
            m.as_slice(),
            bias,
            s,
            &tiles,
            &chunk,
            threads,
            out.as_mut_slice(),
        );
    }
    Ok(out)
}

/// The transform of a 3x3 filter g to U = G g G^T, as a 16 x 9 matrix on
/// g's row-major taps (the Kronecker product G ⊗ G), with
/// G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].
fn filter_transform() -> Tensor {
    const G: [[f32; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut k = [0f32; 16 * 9];
    for (xi, row) in k.chunks_exact_mut(9).enumerate() {
        for (tap, value) in row.iter_mut().enumerate() {
            *value = G[xi / 4][tap / 3] * G[xi % 4][tap % 3];
        }
    }
    Tensor::from_slice(&k).view([16, 9])
}

/// U_ξ for every filter as one [16, out, in] tensor: one GEMM of the
/// transform with the weight's [out * in, 9] taps.
fn transform_weights(weight: &Tensor) -> Result<Tensor, tch::TchError> {
    let size = weight.size();
    let (out_ch, in_ch) = (size[0], size[1]);
    let taps = weight.f_reshape([out_ch * in_ch, 9])?;
    filter_transform()
        .f_mm(&taps.f_transpose(0, 1)?)?
        .f_view([16, out_ch, in_ch])
}

/// The 2x2 output tiles of one image: `rows` x `cols` (the last row and
/// column are cut when the output size is odd).
struct Tiles {
    rows: usize,
    cols: usize,
}

impl Tiles {
    fn new(s: ConvShape) -> Tiles {
        Tiles {
            rows: s.h.div_ceil(2),
            cols: s.w.div_ceil(2),
        }
    }

    /// Consecutive runs of whole tile rows over the batch whose transformed
    /// inputs and products hold at most `floats` floats each (one row at
    /// least).
    fn chunks(&self, s: ConvShape, floats: usize) -> Vec<Chunk> {
        let per_row = 16 * s.in_ch.max(s.out_ch) * self.cols;
        let rows_per_chunk = (floats / per_row).max(1);
        let total = s.batch * self.rows;
        (0..total)
            .step_by(rows_per_chunk)
            .map(|first_row| Chunk {
                first_row,
                rows: rows_per_chunk.min(total - first_row),
            })
            .collect()
    }
}

/// Tile rows `first_row..first_row + rows`, counted over the whole batch
/// (row r is tile row r % tiles.rows of image r / tiles.rows).
struct Chunk {
    first_row: usize,
    rows: usize,
}

impl Chunk {
    fn tiles(&self, tiles: &Tiles) -> usize {
        self.rows * tiles.cols
    }

    /// Image and tile row of the chunk's `r`-th row.
    fn row(&self, r: usize, tiles: &Tiles) -> (usize, usize) {
        let row = self.first_row + r;
        (row / tiles.rows, row % tiles.rows)
    }
}

/// `n` items split into at most `parts` contiguous ranges of near-equal size.
fn split_counts(n: usize, parts: usize) -> Vec<usize> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts)
        .map(|i| n * (i + 1) / parts - n * i / parts)
        .collect()
}

/// Splits `data` into consecutive pieces of `counts[i] * unit` elements.
fn split_by<'a>(mut data: &'a mut [f32], counts: &[usize], unit: usize) -> Vec<&'a mut [f32]> {
    let mut pieces = Vec::with_capacity(counts.len());
    for &c in counts {
        let (head, tail) = data.split_at_mut(c * unit);
        pieces.push(head);
        data = tail;
    }
    pieces
}

/// Each part's pieces of every block of `data` (blocks of `block` elements,
/// each split by `counts` of `unit`): part p gets piece p of every block.
fn split_blocks<'a>(
    data: &'a mut [f32],
    block: usize,
    counts: &[usize],
    unit: usize,
) -> Vec<Vec<&'a mut [f32]>> {
    let mut parts: Vec<Vec<&mut [f32]>> = counts.iter().map(|_| Vec::new()).collect();
    for b in data.chunks_exact_mut(block) {
        for (part, piece) in parts.iter_mut().zip(split_by(b, counts, unit)) {
            part.push(piece);
        }
    }
    parts
}

/// V = B^T d B for every tile of the chunk and input channel, as
/// [16][in][chunk tiles]. B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0],
/// [0, 1, 0, -1]]. Threads take ranges of input channels.
fn transform_input(
    x: &[f32],
    s: ConvShape,
    tiles: &Tiles,
    chunk: &Chunk,
    threads: usize,
    v: &mut [f32],
) {
    let n_tiles = chunk.tiles(tiles);
    assert_eq!(v.len(), 16 * s.in_ch * n_tiles, "transformed input");
    let counts = split_counts(s.in_ch, threads);
    let parts = split_blocks(v, s.in_ch * n_tiles, &counts, n_tiles);
    std::thread::scope(|scope| {
        let mut first_ch = 0;
        for (mut part, &count) in parts.into_iter().zip(&counts) {
            let channels = first_ch..first_ch + count;
            first_ch += count;
            scope.spawn(move || {
                let mut rows = InputRows::new(tiles.cols);
                for (local_c, c) in channels.enumerate() {
                    for r in 0..chunk.rows {
                        let (n, ty) = chunk.row(r, tiles);
                        let plane = &x[(n * s.in_ch + c) * s.h * s.w..][..s.h * s.w];
                        rows.load(plane, s.h, s.w, ty);
                        let at = local_c * n_tiles + r * tiles.cols;
                        rows.transform_into(&mut part, at);
                    }
                }
            });
        }
    });
}

/// The 4 input rows under one tile row, split into even and odd padded
/// columns: tile t reads padded columns 2t..2t+3, that is even[t], odd[t],
/// even[t + 1], odd[t + 1], so every tap is a contiguous slice over tiles.
struct InputRows {
    even: [Vec<f32>; 4],
    odd: [Vec<f32>; 4],
    /// B^T applied to one row pair, even and odd columns.
    row_even: Vec<f32>,
    row_odd: Vec<f32>,
}

impl InputRows {
    fn new(cols: usize) -> InputRows {
        let row = || vec![0f32; cols + 1];
        InputRows {
            even: std::array::from_fn(|_| row()),
            odd: std::array::from_fn(|_| row()),
            row_even: row(),
            row_odd: row(),
        }
    }

    /// Rows 2ty - 1 .. 2ty + 2 of `plane` (zero outside it); padded column
    /// p is column p - 1, so column q lands in odd[q / 2] (q even) or
    /// even[q / 2 + 1] (q odd).
    fn load(&mut self, plane: &[f32], h: usize, w: usize, ty: usize) {
        for i in 0..4 {
            let (even, odd) = (&mut self.even[i], &mut self.odd[i]);
            let Some(y) = (2 * ty + i).checked_sub(1).filter(|&y| y < h) else {
                even.fill(0.0);
                odd.fill(0.0);
                continue;
            };
            let row = &plane[y * w..][..w];
            even[0] = 0.0;
            let pairs = row.chunks_exact(2);
            let last = pairs.remainder().first().copied();
            let n = pairs.len();
            for ((pair, o), e) in pairs.zip(odd.iter_mut()).zip(even[1..].iter_mut()) {
                *o = pair[0];
                *e = pair[1];
            }
            // An odd width leaves one column for odd[n]; past the row, zeros.
            odd[n] = last.unwrap_or(0.0);
            odd[n + 1..].fill(0.0);
            even[n + 1..].fill(0.0);
        }
    }

    /// Writes B^T d B of this row's tiles into `v` (one [in][chunk tiles]
    /// piece per ξ) at `at`.
    fn transform_into(&mut self, v: &mut [&mut [f32]], at: usize) {
        let cols = self.even[0].len() - 1;
        // B^T on the rows: r0 - r2, r1 + r2, r2 - r1, r1 - r3.
        const ROWS: [(usize, usize, f32); 4] =
            [(0, 2, -1.0), (1, 2, 1.0), (2, 1, -1.0), (1, 3, -1.0)];
        for (k, (a, b, sign)) in ROWS.into_iter().enumerate() {
            for (dst, src) in [
                (&mut self.row_even, &self.even),
                (&mut self.row_odd, &self.odd),
            ] {
                for ((d, &p), &q) in dst.iter_mut().zip(&src[a]).zip(&src[b]) {
                    *d = p + sign * q;
                }
            }
            let (e0, e1) = (&self.row_even[..cols], &self.row_even[1..]);
            let (o0, o1) = (&self.row_odd[..cols], &self.row_odd[1..]);
            // B on the columns: d0 - d2, d1 + d2, d2 - d1, d1 - d3.
            let [v0, v1, v2, v3] = &mut v[4 * k..4 * k + 4] else {
                unreachable!("16 pieces")
            };
            let (v0, v1) = (&mut v0[at..at + cols], &mut v1[at..at + cols]);
            let (v2, v3) = (&mut v2[at..at + cols], &mut v3[at..at + cols]);
            for t in 0..cols {
                v0[t] = e0[t] - e1[t];
                v1[t] = o0[t] + e1[t];
                v2[t] = e1[t] - o0[t];
                v3[t] = o0[t] - o1[t];
            }
        }
    }
}

/// Y = A^T M_ξ A (+ bias) for the chunk's tiles into `out`, from the
/// products `m` [16][out][chunk tiles]; threads take ranges of output
/// channels. A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].
fn transform_output(
    m: &[f32],
    bias: Option<&[f32]>,
    s: ConvShape,
    tiles: &Tiles,
    chunk: &Chunk,
    threads: usize,
    out: &mut [f32],
) {
    let n_tiles = chunk.tiles(tiles);
    let plane_len = s.h * s.w;
    let counts = split_counts(s.out_ch, threads);
    // Each thread's output planes, per image.
    let parts = split_blocks(out, s.out_ch * plane_len, &counts, plane_len);
    std::thread::scope(|scope| {
        let mut first_o = 0;
        for (mut planes, &count) in parts.into_iter().zip(&counts) {
            let channels = first_o..first_o + count;
            first_o += count;
            scope.spawn(move || {
                let mut rows = OutputRows::new(tiles.cols);
                for (local_o, o) in channels.enumerate() {
                    let b = bias.map_or(0.0, |b| b[o]);
                    for r in 0..chunk.rows {
                        let (n, ty) = chunk.row(r, tiles);
                        let at = o * n_tiles + r * tiles.cols;
                        rows.transform(m, s.out_ch * n_tiles, at, b);
                        let plane = &mut planes[n][local_o * plane_len..][..plane_len];
                        rows.store(plane, s.h, s.w, ty);
                    }
                }
            });
        }
    });
}

/// One tile row's 2x2 outputs: y[i][j][t] is output (2ty + i, 2t + j).
struct OutputRows {
    y: [[Vec<f32>; 2]; 2],
    /// A^T applied on the rows: s[i][j][t].
    s: [[Vec<f32>; 4]; 2],
}

impl OutputRows {
    fn new(cols: usize) -> OutputRows {
        let row = || vec![0f32; cols];
        OutputRows {
            y: std::array::from_fn(|_| std::array::from_fn(|_| row())),
            s: std::array::from_fn(|_| std::array::from_fn(|_| row())),
        }
    }

    /// Y = A^T M A + bias for the tiles at `at` of every ξ block of `m`
    /// (blocks of `block` floats).
    fn transform(&mut self, m: &[f32], block: usize, at: usize, bias: f32) {
        let cols = self.y[0][0].len();
        let m = |xi: usize| &m[xi * block + at..][..cols];
        // A^T on the rows: s0j = m0j + m1j + m2j, s1j = m1j - m2j - m3j.
        for j in 0..4 {
            let (m0, m1, m2, m3) = (m(j), m(4 + j), m(8 + j), m(12 + j));
            let [s0, s1] = &mut self.s;
            let (s0, s1) = (&mut s0[j][..cols], &mut s1[j][..cols]);
            for t in 0..cols {
                s0[t] = m0[t] + m1[t] + m2[t];
                s1[t] = m1[t] - m2[t] - m3[t];
            }
        }
        // A on the columns.
        for (y, s) in self.y.iter_mut().zip(&self.s) {
            let [y0, y1] = y;
            let (y0, y1) = (&mut y0[..cols], &mut y1[..cols]);
            let (s0, s1, s2, s3) = (&s[0][..cols], &s[1][..cols], &s[2][..cols], &s[3][..cols]);
            for t in 0..cols {
                y0[t] = s0[t] + s1[t] + s2[t] + bias;
                y1[t] = s1[t] - s2[t] - s3[t] + bias;
            }
        }
    }

    /// Writes the tile row's outputs into `plane` [h, w], cutting the last
    /// row or column of an odd size.
    fn store(&self, plane: &mut [f32], h: usize, w: usize, ty: usize) {
        for (i, [y0, y1]) in self.y.iter().enumerate() {
            let y = 2 * ty + i;
            if y >= h {
                break;
            }
            let row = &mut plane[y * w..][..w];
            let mut pairs = row.chunks_exact_mut(2);
            for ((pair, &a), &b) in (&mut pairs).zip(y0).zip(y1) {
                pair[0] = a;
                pair[1] = b;
            }
            if let Some(last) = pairs.into_remainder().first_mut() {
                *last = y0[w / 2];
            }
        }
    }
}

#[cfg(test)]
mod tests;
