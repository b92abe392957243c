//! Small ops run on one thread.
//!
//! Why: diffgraph runs libtorch's OpenMP threads with the passive wait policy
//! (`diffgraph::threads`: spinning collapses on a busy machine). A passive
//! worker sleeps between parallel regions, and waking it costs 30-150 us on
//! the development machine, more than a small op's whole work. libtorch
//! parallelises elementwise ops only above its grain size, but oneDNN
//! convolutions, MKL GEMMs and the norms open a parallel region whatever the
//! size. Measured with 2 threads against 1 (BENCHMARKS.md, "Small ops on one
//! thread"): a 3x3 convolution of 4.7M multiply-adds takes 1.3-1.8x longer on
//! 2 threads, one of 14-19M about as long, larger ones less; a linear layer
//! of 4.2M multiply-adds takes 1.0-1.1x as long, one of 8.4M 0.77x;
//! GroupNorm and LayerNorm break even at ~100k elements. The tiny and demo
//! models are made of such ops, and ran 1.4-1.8x slower per U-Net call at 2
//! threads than at 1.
//!
//! The rule is by op size alone, so the same shapes always run the same way.
//! Switching libtorch's thread count costs well under a microsecond (an
//! OpenMP and MKL per-thread setting); the previous count is restored after
//! the op, also when it panics. CUDA ops are left alone. libtorch keeps the
//! count per thread, but a thread that makes its first parallel call while
//! another is inside a small op starts from that op's count (1): the
//! executor runs a graph's nodes on one thread, so in diffgraph no other
//! thread is doing tensor work then.
use crate::cpu_kernels::Switch;
use tch::{Device, Tensor};

/// Convolutions of fewer multiply-adds than this run on one thread.
pub const CONV_SERIAL_BELOW_MACS: i64 = 1 << 24;
/// Linear layers of fewer multiply-adds than this run on one thread.
pub const LINEAR_SERIAL_BELOW_MACS: i64 = 1 << 23;
/// GroupNorm and LayerNorm over fewer elements than this run on one thread.
pub const NORM_SERIAL_BELOW_ELEMENTS: i64 = 1 << 16;

/// Attention over fewer scores (batch x heads x queries x keys) than this
/// runs on one thread.
pub const ATTENTION_SERIAL_BELOW_SCORES: i64 = 1 << 18;

/// The rule is on unless a benchmark turns it off to compare both in one run.
pub static ENABLED: Switch = Switch::on();

/// Runs `op` on one libtorch thread when `x` is on the CPU and `work` is below
/// `serial_below`; otherwise at the configured thread count.
pub fn sized<T>(x: &Tensor, work: i64, serial_below: i64, op: impl FnOnce() -> T) -> T {
    if work >= serial_below || !ENABLED.is_on() || x.device() != Device::Cpu {
        return op();
    }
    let threads = tch::get_num_threads();
    if threads <= 1 {
        return op();
    }
    tch::set_num_threads(1);
    let _restore = Restore(threads);
    op()
}

/// Sets the thread count back when dropped (also on unwinding).
struct Restore(i32);

impl Drop for Restore {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

/// Multiply-adds of a 2-D convolution of `x` [N, C, H, W] with `weight`
/// [O, C, K, K] (0 when the shapes are not those; the op then reports them).
pub fn conv_macs(x: &Tensor, weight: &Tensor, stride: i64, padding: i64) -> i64 {
    match (x.size().as_slice(), weight.size().as_slice()) {
        (&[n, _, h, w], &[o, c, kh, kw]) if stride > 0 => {
            let out_h = ((h + 2 * padding - kh) / stride + 1).max(0);
            let out_w = ((w + 2 * padding - kw) / stride + 1).max(0);
            n * out_h * out_w * o * c * kh * kw
        }
        _ => 0,
    }
}

/// `scaled_dot_product_attention(q, k, v)` (no mask, no dropout; `scale`
/// `None`: 1/sqrt(head dim)), on one thread when it has few scores; small
/// heads go to [`crate::cpu_kernels::small_attention`]; bfloat16 operands
/// on a CPU without bfloat16 arithmetic run in float32
/// ([`crate::cpu_precision`]).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    is_causal: bool,
    scale: Option<f64>,
) -> Result<Tensor, tch::TchError> {
    use crate::cpu_precision::{float32, widened_kind};
    if let Some(kind) = widened_kind(q, k).filter(|_| widened_kind(q, v).is_some()) {
        let out = attention(&float32(q), &float32(k), &float32(v), is_causal, scale)?;
        return Ok(out.to_kind(kind));
    }
    if let Some(out) = crate::cpu_kernels::small_attention::try_attention(q, k, v, is_causal, scale)
    {
        return out;
    }
    let scores = attention_scores(q, k);
    sized(q, scores, ATTENTION_SERIAL_BELOW_SCORES, || {
        Tensor::f_scaled_dot_product_attention(
            q,
            k,
            v,
            None::<Tensor>,
            0.0,
            is_causal,
            scale,
            false,
        )
    })
}

/// Scores of an attention of `q` [..., queries, d] with `k` [..., keys, d]:
/// one per query and key in every batch and head.
fn attention_scores(q: &Tensor, k: &Tensor) -> i64 {
    let (qs, ks) = (q.size(), k.size());
    match (qs.len(), ks.len()) {
        (a, b) if a >= 2 && b >= 2 => qs[..a - 1].iter().product::<i64>() * ks[b - 2],
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// Runs `f` on a fresh thread with 2 libtorch threads, one test at a
    /// time: the OpenMP setting is per thread, but libtorch initialises a
    /// thread's setting from its process-wide count, which `sized` changes.
    fn on_two_threads(f: impl FnOnce() + Send + 'static) {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _lock = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(move || {
            tch::set_num_threads(2);
            f()
        })
        .join()
        .unwrap();
    }

    #[test]
    fn small_work_runs_on_one_thread_and_restores_the_count() {
        on_two_threads(|| {
            let x = Tensor::zeros([4], (Kind::Float, Device::Cpu));
            assert_eq!(sized(&x, 10, 100, tch::get_num_threads), 1);
            assert_eq!(tch::get_num_threads(), 2);
            assert_eq!(sized(&x, 100, 100, tch::get_num_threads), 2);
        });
    }

    #[test]
    fn the_count_is_restored_when_the_op_panics() {
        on_two_threads(|| {
            let x = Tensor::zeros([4], (Kind::Float, Device::Cpu));
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                sized(&x, 1, 100, || panic!("op failed"))
            }));
            assert!(r.is_err());
            assert_eq!(tch::get_num_threads(), 2);
        });
    }

    /// bfloat16 attention on a CPU without bfloat16 arithmetic is the float32
    /// attention rounded; either way within bfloat16 rounding of libtorch's
    /// own kernel (outputs are averages of values of scale 1).
    #[test]
    fn bfloat16_attention_rounds_the_float32_one() {
        use crate::cpu_precision::{float32, native_bfloat16};
        tch::manual_seed(7);
        let kind = Kind::BFloat16;
        let r = |s: [i64; 4]| Tensor::randn(s, (Kind::Float, Device::Cpu)).to_kind(kind);
        let (q, k, v) = (r([2, 3, 50, 40]), r([2, 3, 20, 40]), r([2, 3, 20, 40]));
        let ours = attention(&q, &k, &v, false, None).unwrap();
        assert_eq!(ours.kind(), kind);
        if !native_bfloat16() {
            let wide = attention(&float32(&q), &float32(&k), &float32(&v), false, None);
            assert!(ours.equal(&wide.unwrap().to_kind(kind)));
        }
        let theirs = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let err = (float32(&ours) - float32(&theirs))
            .abs()
            .max()
            .double_value(&[]);
        assert!(err < 0.03, "{err}");
    }

    #[test]
    fn conv_macs_counts_output_positions_times_weight() {
        let x = Tensor::zeros([2, 4, 8, 12], (Kind::Float, Device::Cpu));
        let w = Tensor::zeros([32, 4, 3, 3], (Kind::Float, Device::Cpu));
        assert_eq!(conv_macs(&x, &w, 1, 1), 2 * 8 * 12 * 32 * 4 * 9);
        assert_eq!(conv_macs(&x, &w, 2, 1), 2 * 4 * 6 * 32 * 4 * 9);
        let bad = Tensor::zeros([4, 8], (Kind::Float, Device::Cpu));
        assert_eq!(conv_macs(&bad, &w, 1, 1), 0);
    }
}
