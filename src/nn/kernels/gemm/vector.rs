//! The micro-kernel of the vector instruction sets, written once over `ProductLanes`:
//! an MR x 2-vector block of the output stays in registers across a depth block, and
//! the bias, SiLU and sigmoid are applied while it is there. avx2.rs and avx512.rs give
//! it its sizes and compile it for their instruction set.

use super::blis::{Operand, Store};
use crate::nn::kernels::lanes::ProductLanes;

/// The MR x NR block (NR two vectors): `c[i, j] (+)= sum_p A[i, p] b[p, j]` for
/// `i < rows`, `j < cols`, stored as `store` says (see `MicroKernel::block` for
/// `SOURCE` and `DIRECT_B`).
///
/// # Safety
/// As `blis::BlockFn`; the caller is compiled for `V`'s instruction set, and this body
/// is inlined into it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn block<V: ProductLanes, const MR: usize, const SOURCE: u8, const DIRECT_B: bool>(
    kc: usize,
    a: &Operand,
    b: *const f32,
    b_stride: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    store: Store,
) {
    let width = V::WIDTH;
    let nr = 2 * width;
    // SAFETY (of every block below): the caller runs on `V`'s instruction set. Packed
    // panels hold kc x MR and kc x NR numbers; in place, rows < `rows` of A and
    // columns < `cols` of B (the masks) are read, which the caller's views contain.
    // Masked-off lanes are never accessed, so the second half may point past a narrow
    // operand's end. Masked loads and stores cost more than plain ones: a block of
    // all NR columns goes without them.
    let (m0, m1) = unsafe { (V::mask(cols), V::mask(cols.saturating_sub(width))) };
    let full = cols == nr;
    let mut acc = [[unsafe { V::zero() }; 2]; MR];
    for p in 0..kc {
        let (b0, b1) = unsafe {
            if DIRECT_B {
                pair(b.add(p * b_stride), full, (m0, m1))
            } else {
                let row = b.add(p * nr);
                (V::load_full(row), V::load_full(row.add(width)))
            }
        };
        let column = unsafe { a.column::<SOURCE, MR>(p) };
        for (acc, ai) in acc.iter_mut().zip(column) {
            let ai = unsafe { V::splat(ai) };
            acc[0] = ai.mul_add(b0, acc[0]);
            acc[1] = ai.mul_add(b1, acc[1]);
        }
    }
    // SAFETY: the bias holds `cols` numbers (the masks).
    let bias = if store.bias.is_null() {
        None
    } else {
        Some(unsafe {
            (
                V::load(m0, store.bias),
                V::load(m1, store.bias.wrapping_add(width)),
            )
        })
    };
    for (i, acc) in acc.iter().enumerate().take(rows) {
        let row = unsafe { c.add(i * ldc) };
        let (mut v0, mut v1) = (acc[0], acc[1]);
        if store.accumulate {
            let (c0, c1) = unsafe { pair(row, full, (m0, m1)) };
            (v0, v1) = (v0.add(c0), v1.add(c1));
        }
        if let Some((b0, b1)) = bias {
            (v0, v1) = (v0.add(b0), v1.add(b1));
        }
        if store.silu {
            let (d0, d1) = (v0.one_plus_exp_minus(), v1.one_plus_exp_minus());
            if store.sigmoid.is_null() {
                (v0, v1) = (v0.div(d0), v1.div(d1));
            } else {
                let one = unsafe { V::splat(1.0) };
                let (s0, s1) = (one.div(d0), one.div(d1));
                (v0, v1) = (v0.mul(s0), v1.mul(s1));
                // SAFETY: the sigmoids are laid out as `c` (`Store::sigmoid`).
                unsafe { store_pair(store.sigmoid.add(i * ldc), (s0, s1), full, (m0, m1)) };
            }
        }
        // SAFETY: the block's row `i` lies in the output; the masks keep to `cols`.
        unsafe { store_pair(row, (v0, v1), full, (m0, m1)) };
    }
}

/// The two vectors of a row from `at`: all of them when `full`, else the lanes the masks
/// leave on (the others zero).
///
/// # Safety
/// `at` is readable for NR numbers, or for the masked-on lanes.
#[inline(always)]
unsafe fn pair<V: ProductLanes>(
    at: *const f32,
    full: bool,
    (m0, m1): (V::Mask, V::Mask),
) -> (V, V) {
    unsafe {
        if full {
            (V::load_full(at), V::load_full(at.add(V::WIDTH)))
        } else {
            (V::load(m0, at), V::load(m1, at.wrapping_add(V::WIDTH)))
        }
    }
}

/// Stores the two vectors of a row at `at`: all NR numbers when `full`, else the lanes
/// the masks leave on.
///
/// # Safety
/// `at` is writable for NR numbers, or for the masked-on lanes.
#[inline(always)]
unsafe fn store_pair<V: ProductLanes>(
    at: *mut f32,
    (v0, v1): (V, V),
    full: bool,
    (m0, m1): (V::Mask, V::Mask),
) {
    unsafe {
        if full {
            v0.store_full(at);
            v1.store_full(at.add(V::WIDTH));
        } else {
            v0.store(m0, at);
            v1.store(m1, at.wrapping_add(V::WIDTH));
        }
    }
}

/// `kernel::<SOURCE, DIRECT_B>`, a `blis::BlockFn`: `block` on `$lanes` with `$mr` rows,
/// compiled for `$feature` (the one wrapper each instruction set writes).
macro_rules! kernel_for {
    ($feature:literal, $lanes:ty, $mr:expr) => {
        /// `vector::block` compiled for this instruction set.
        ///
        /// # Safety
        /// As `blis::BlockFn`.
        #[target_feature(enable = $feature)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn kernel<const SOURCE: u8, const DIRECT_B: bool>(
            kc: usize,
            a: &super::blis::Operand,
            b: *const f32,
            b_stride: usize,
            c: *mut f32,
            ldc: usize,
            rows: usize,
            cols: usize,
            store: super::blis::Store,
        ) {
            unsafe {
                super::vector::block::<$lanes, { $mr }, SOURCE, DIRECT_B>(
                    kc, a, b, b_stride, c, ldc, rows, cols, store,
                )
            }
        }
    };
}
pub(super) use kernel_for;
