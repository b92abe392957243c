//! Reusable per-thread float buffers for diffgraph's own CPU kernels
//! (`small_conv`, `small_attention`).
//!
//! Why: those kernels copy their operands out of libtorch and need working
//! buffers (repacked weights, a padded input). A fresh buffer above glibc's
//! mmap threshold (128 KiB at first) is mapped for each call and faulted in
//! page by page: a 64 -> 64-channel 3x3 convolution at 4x6 took 132 us with
//! fresh buffers and 82 us without the faults (BENCHMARKS.md, "Small
//! convolutions"). Buffers taken here go back to a small per-thread pool when
//! dropped, so the same memory serves every call.
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Buffers kept per thread; more are freed when returned.
const POOL_SIZE: usize = 8;
/// Buffers larger than this (in floats, 64 MiB) are freed, not kept.
const MAX_KEPT_LEN: usize = 16 << 20;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A zero-filled float buffer from this thread's pool.
pub struct Scratch(Vec<f32>);

impl Scratch {
    /// `len` zeros, in a buffer reused from earlier calls on this thread when
    /// one is free.
    pub fn zeroed(len: usize) -> Scratch {
        let mut buffer = POOL
            .try_with(|pool| take_fitting(&mut pool.borrow_mut(), len))
            .ok()
            .flatten()
            .unwrap_or_default();
        buffer.clear();
        buffer.resize(len, 0.0);
        Scratch(buffer)
    }

    /// A copy of a CPU tensor's elements (any strides), as float32.
    pub fn read(t: &tch::Tensor) -> Result<Scratch, tch::TchError> {
        let n = t.numel();
        let mut buffer = Scratch::zeroed(n);
        t.f_copy_data(&mut buffer, n)?;
        Ok(buffer)
    }
}

/// The pooled buffer that holds `len` floats with the least spare room; when
/// none holds them, the largest (it grows once and then fits). A buffer that
/// has to grow is reallocated, and fresh memory is faulted in page by page.
fn take_fitting(pool: &mut Vec<Vec<f32>>, len: usize) -> Option<Vec<f32>> {
    let fits = |b: &Vec<f32>| b.capacity() >= len;
    let best = (0..pool.len())
        .filter(|&i| fits(&pool[i]))
        .min_by_key(|&i| pool[i].capacity())
        .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()))?;
    Some(pool.swap_remove(best))
}

impl Deref for Scratch {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.0);
        if buffer.capacity() <= MAX_KEPT_LEN {
            // At thread exit the pool may be gone: the buffer is then freed.
            let _ = POOL.try_with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < POOL_SIZE {
                    pool.push(buffer);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_and_reused() {
        let address = {
            let mut a = Scratch::zeroed(1000);
            a[7] = 3.0;
            a.as_ptr() as usize
        };
        let b = Scratch::zeroed(500);
        assert_eq!(
            b.as_ptr() as usize,
            address,
            "the freed buffer serves the next call"
        );
        assert!(b.iter().all(|&x| x == 0.0));
        assert_eq!(b.len(), 500);
    }

    #[test]
    fn the_smallest_buffer_that_fits_is_taken() {
        let (big, small) = (Scratch::zeroed(4000), Scratch::zeroed(100));
        let (big_at, small_at) = (big.as_ptr() as usize, small.as_ptr() as usize);
        drop(big);
        drop(small);
        assert_eq!(Scratch::zeroed(3000).as_ptr() as usize, big_at);
        assert_eq!(Scratch::zeroed(50).as_ptr() as usize, small_at);
    }

    #[test]
    fn buffers_in_use_are_distinct() {
        let a = Scratch::zeroed(10);
        let b = Scratch::zeroed(10);
        assert_ne!(a.as_ptr(), b.as_ptr());
    }

    #[test]
    fn reads_a_strided_tensor() {
        let t = tch::Tensor::arange(6, (tch::Kind::Float, tch::Device::Cpu))
            .view([2, 3])
            .transpose(0, 1);
        assert_eq!(
            &*Scratch::read(&t).unwrap(),
            &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
    }
}
