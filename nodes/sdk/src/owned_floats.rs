//! Float32 CPU tensors whose elements a node can borrow as Rust slices.
//!
//! Why: a node's own CPU kernel (`diffgraph-nodes-sd`'s Winograd
//! convolution, say) works on `&[f32]`, while libtorch works on tensors.
//! Without this, every hand-over is a copy: the kernel's result copied into a
//! new tensor, a libtorch result copied out of its tensor. For an SD-size
//! convolution those copies were ~15% of the call (BENCHMARKS.md).
//!
//! How it stays sound: an [`OwnedFloats`] is made here (zeros, or the output
//! of one libtorch op written into a tensor made here), and the tensor is
//! never lent out as a `Tensor` while the value lives: no other handle to its
//! storage can exist, so `&self`/`&mut self` borrows are the only way to its
//! elements, exactly as for a `Vec<f32>`. [`OwnedFloats::into_tensor`] gives
//! the tensor away and ends the borrows. This is the plugin side's only
//! unsafe code outside `export.rs`, and it is two slice constructions.
use tch::{Device, Kind, TchError, Tensor};

/// A contiguous float32 CPU tensor that only this value reaches.
pub struct OwnedFloats {
    tensor: Tensor,
    len: usize,
}

impl OwnedFloats {
    /// Zeros of `size`.
    pub fn zeros(size: &[i64]) -> Result<OwnedFloats, TchError> {
        OwnedFloats::of_fresh(Tensor::f_zeros(size, (Kind::Float, Device::Cpu))?)
    }

    /// The batched matrix product `a.bmm(b)` (`a` [batch, n, k], `b` [batch,
    /// k, m], float32 CPU), written into a tensor made here.
    pub fn bmm(a: &Tensor, b: &Tensor) -> Result<OwnedFloats, TchError> {
        let (sa, sb) = (a.size(), b.size());
        if sa.len() != 3 || sb.len() != 3 {
            let message = format!("bmm of sizes {sa:?} and {sb:?}: both must be 3-D");
            return Err(TchError::Shape(message));
        }
        // Uninitialised until bmm_out writes every element; on an error it is
        // dropped unread.
        let out = Tensor::f_empty([sa[0], sa[1], sb[2]], (Kind::Float, Device::Cpu))?;
        // bmm_out returns another handle to `out`: dropped at once, so `out`
        // stays the only one.
        drop(a.f_bmm_out(&out, b)?);
        OwnedFloats::of_fresh(out)
    }

    /// Takes a tensor just made by a libtorch op in this module, checking
    /// what the slices rely on: float32, CPU, contiguous.
    fn of_fresh(tensor: Tensor) -> Result<OwnedFloats, TchError> {
        let plain = tensor.kind() == Kind::Float
            && tensor.device() == Device::Cpu
            && tensor.is_contiguous();
        if !plain {
            let message = format!(
                "expected a contiguous float32 CPU tensor, got {:?} on {:?}",
                tensor.kind(),
                tensor.device()
            );
            return Err(TchError::Kind(message));
        }
        let len = tensor.numel();
        Ok(OwnedFloats { tensor, len })
    }

    pub fn size(&self) -> Vec<i64> {
        self.tensor.size()
    }

    pub fn as_slice(&self) -> &[f32] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the tensor is contiguous float32 on the CPU with `len`
        // elements (checked in `of_fresh`; nothing here resizes it), its
        // data pointer is valid and aligned for f32 while the tensor lives,
        // and its elements are initialised (zeros, or an op's output). No
        // other handle to the storage exists (module docs), so nothing
        // writes to it while this shared borrow of `self` lasts.
        unsafe { std::slice::from_raw_parts(self.tensor.data_ptr() as *const f32, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as in `as_slice`; the exclusive borrow of `self` makes
        // this the only access to the elements while it lasts.
        unsafe { std::slice::from_raw_parts_mut(self.tensor.data_ptr() as *mut f32, self.len) }
    }

    /// The tensor, for libtorch ops or a node's output; no slice outlives it.
    pub fn into_tensor(self) -> Tensor {
        self.tensor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_write_into_the_tensor_that_is_given_away() {
        let mut a = OwnedFloats::zeros(&[2, 3]).unwrap();
        assert_eq!(a.as_slice(), &[0.0; 6]);
        a.as_mut_slice()[4] = 7.0;
        let t = a.into_tensor();
        assert_eq!(t.size(), [2, 3]);
        assert_eq!(t.double_value(&[1, 1]), 7.0);
    }

    #[test]
    fn bmm_matches_libtorch() {
        let opts = (Kind::Float, Device::Cpu);
        tch::manual_seed(3);
        let (a, b) = (
            Tensor::randn([4, 5, 6], opts),
            Tensor::randn([4, 6, 7], opts),
        );
        let m = OwnedFloats::bmm(&a, &b).unwrap();
        assert_eq!(m.size(), [4, 5, 7]);
        let expected = a.bmm(&b);
        let mut values = vec![0f32; 4 * 5 * 7];
        let n = values.len();
        expected.copy_data(&mut values, n);
        assert_eq!(m.as_slice(), values.as_slice());
    }

    #[test]
    fn bad_operands_are_errors() {
        let opts = (Kind::Float, Device::Cpu);
        let (a, b) = (Tensor::zeros([5, 6], opts), Tensor::zeros([6, 7], opts));
        assert!(OwnedFloats::bmm(&a, &b).is_err());
        let (a, b) = (
            Tensor::zeros([2, 5, 6], opts),
            Tensor::zeros([2, 5, 7], opts),
        );
        assert!(OwnedFloats::bmm(&a, &b).is_err());
        let empty = OwnedFloats::zeros(&[0, 3]).unwrap();
        assert!(empty.as_slice().is_empty());
    }
}
