//! The micro-kernel in plain Rust, compiled for the baseline instruction set (SSE2 on
//! x86-64): what a CPU without AVX2 runs, and what `RUNNER_CPU_FEATURES=scalar`
//! measures and tests on any x86-64 machine. A 4 x 8 block is 8 SSE registers, which
//! the compiler vectorises from the array code.

use super::blis::{BlockFn, MicroKernel, Operand, Store};

/// Rows of the output block.
const MR: usize = 4;
/// Columns of that block.
const NR: usize = 8;

/// The kernel every CPU can run.
pub struct Scalar;

impl MicroKernel for Scalar {
    const MR: usize = MR;
    const NR: usize = NR;
    const KC: usize = 256;
    const MC: usize = MR * 32;

    fn available() -> bool {
        true
    }

    fn block<const SOURCE: u8, const DIRECT_B: bool>() -> BlockFn {
        kernel::<SOURCE, DIRECT_B>
    }
}

/// The MR x NR block: `c[i, j] (+)= sum_p A[i, p] b[p, j]` for `i < rows`, `j < cols`,
/// stored as `store` says (see `MicroKernel::block` for `SOURCE` and `DIRECT_B`).
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const SOURCE: u8, const DIRECT_B: bool>(
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
    let mut acc = [[0.0f32; NR]; MR];
    for p in 0..kc {
        // SAFETY (here and below): packed panels hold kc x MR and kc x NR numbers; in
        // place, rows < `rows` of A and columns < `cols` of B are read, which the
        // caller's views contain.
        let mut b_row = [0.0f32; NR];
        unsafe {
            if DIRECT_B && cols < NR {
                let row = b.add(p * b_stride);
                for (j, v) in b_row[..cols].iter_mut().enumerate() {
                    *v = *row.add(j);
                }
            } else {
                let row = if DIRECT_B {
                    b.add(p * b_stride)
                } else {
                    b.add(p * NR)
                };
                b_row = row.cast::<[f32; NR]>().read_unaligned();
            }
        }
        let column = unsafe { a.column::<SOURCE, MR>(p) };
        for (acc, ai) in acc.iter_mut().zip(column) {
            for (s, bj) in acc.iter_mut().zip(b_row) {
                *s += ai * bj;
            }
        }
    }
    for (i, acc) in acc.iter().enumerate().take(rows) {
        for (j, &sum) in acc.iter().enumerate().take(cols) {
            // SAFETY: (i, j) lies in the block, and the bias holds `cols` numbers.
            unsafe {
                let out = c.add(i * ldc + j);
                let mut v = sum;
                if store.accumulate {
                    v += *out;
                }
                if !store.bias.is_null() {
                    v += *store.bias.add(j);
                }
                if store.silu && store.sigmoid.is_null() {
                    v = crate::nn::kernels::vmath::silu(v);
                } else if store.silu {
                    // As `vmath::silu_keeping_sigmoid`; the sigmoids are laid out as
                    // `c` (`Store::sigmoid`).
                    let s = 1.0 / (1.0 + crate::nn::kernels::vmath::exp(-v));
                    *store.sigmoid.add(i * ldc + j) = s;
                    v *= s;
                }
                *out = v;
            }
        }
    }
}
