//! An AVX-512 f32 matrix product in the BLIS layout: the inputs are copied ("packed")
//! into panels the micro-kernel reads sequentially, and a 14 x 32 block of the output
//! stays in 28 of the 32 vector registers across the whole inner dimension. The `gemm`
//! crate reaches only AVX2 on stable Rust, half of the vector width these CPUs have;
//! AVX-512 intrinsics are stable since Rust 1.89.

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::View;

/// Rows of the output block the micro-kernel holds in registers.
pub const MR: usize = 14;
/// Columns of that block: two vectors of 16.
pub const NR: usize = 32;
/// Depth of one packed block: an A panel (MR x KC) and a B panel (KC x NR) fit in L1.
const KC: usize = 256;
/// Rows of A packed at once (MC x KC stays in L2).
const MC: usize = MR * 12;

/// Whether this CPU runs the kernel (checked once; the answer is cached by std).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

thread_local! {
    /// Packing buffers, kept per thread so that a product allocates nothing.
    static BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `out = lhs · rhs` (or `+=` when `accumulate`) on one thread; `out` is `lhs.rows` x
/// `rhs.cols` with row stride `ldc`.
///
/// # Safety
/// `available()` must hold; `out` must be valid for writes at `i * ldc + j` for every
/// output element, and the views must be in bounds (checked by the caller).
pub unsafe fn matmul(out: *mut f32, ldc: usize, lhs: View, rhs: View, accumulate: bool) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    // Row-major A is read in place. Row-major B is too when few row panels share
    // each of its panels: packing it would cost more than it saves.
    let (direct_a, direct_b) = (lhs.col_stride == 1, rhs.col_stride == 1 && m <= MC);
    let kernel = match (direct_a, direct_b) {
        (true, true) => kernel::<true, true>,
        (true, false) => kernel::<true, false>,
        (false, true) => kernel::<false, true>,
        (false, false) => kernel::<false, false>,
    };
    BUFFERS.with(|buffers| {
        let (packed_a, packed_b) = &mut *buffers.borrow_mut();
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            // Later depth blocks add to what the first one wrote.
            let add = accumulate || pc > 0;
            if !direct_b {
                pack_b(packed_b, rhs, pc, kc);
            }
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                if !direct_a {
                    pack_a(packed_a, lhs, ic, mc, pc, kc);
                }
                for jp in 0..n.div_ceil(NR) {
                    let cols = NR.min(n - jp * NR);
                    let (b, b_stride) = if direct_b {
                        (
                            rhs.data[pc * rhs.row_stride + jp * NR..].as_ptr(),
                            rhs.row_stride,
                        )
                    } else {
                        (packed_b[jp * kc * NR..].as_ptr(), NR)
                    };
                    for ip in 0..mc.div_ceil(MR) {
                        let rows = MR.min(mc - ip * MR);
                        let i0 = ic + ip * MR;
                        let (a, a_stride) = if direct_a {
                            (
                                lhs.data[i0 * lhs.row_stride + pc..].as_ptr(),
                                lhs.row_stride,
                            )
                        } else {
                            (packed_a[ip * kc * MR..].as_ptr(), MR)
                        };
                        // SAFETY: A and B are the caller's in-bounds views or the packed
                        // panels (kc x MR and kc x NR numbers), read only at the valid
                        // rows and columns; the rows x cols block at (i0, jp NR) lies
                        // inside `out` (the caller's contract).
                        unsafe {
                            let c = out.add(i0 * ldc + jp * NR);
                            kernel(kc, a, a_stride, b, b_stride, c, ldc, rows, cols, add);
                        }
                    }
                }
            }
        }
    })
}

/// Copies rows `pc..pc + kc` of `rhs` into panels of NR columns, each kc x NR and
/// row-major, zero-padded past the last column.
fn pack_b(buffer: &mut Vec<f32>, rhs: View, pc: usize, kc: usize) {
    let n_panels = rhs.cols.div_ceil(NR);
    buffer.clear();
    buffer.resize(n_panels * kc * NR, 0.0);
    for (jp, panel) in buffer.chunks_exact_mut(kc * NR).enumerate() {
        let j0 = jp * NR;
        let cols = NR.min(rhs.cols - j0);
        for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
            let start = (pc + p) * rhs.row_stride + j0 * rhs.col_stride;
            if rhs.col_stride == 1 {
                row[..cols].copy_from_slice(&rhs.data[start..start + cols]);
            } else {
                for (j, v) in row[..cols].iter_mut().enumerate() {
                    *v = rhs.data[start + j * rhs.col_stride];
                }
            }
        }
    }
}

/// Copies the block rows `ic..ic + mc`, columns `pc..pc + kc` of `lhs` into panels of
/// MR rows, each stored column by column (kc x MR), zero-padded past the last row.
fn pack_a(buffer: &mut Vec<f32>, lhs: View, ic: usize, mc: usize, pc: usize, kc: usize) {
    let m_panels = mc.div_ceil(MR);
    buffer.clear();
    buffer.resize(m_panels * kc * MR, 0.0);
    for (ip, panel) in buffer.chunks_exact_mut(kc * MR).enumerate() {
        let i0 = ic + ip * MR;
        let rows = MR.min(ic + mc - i0);
        if lhs.row_stride == 1 {
            // A transposed matrix: each column of the panel is contiguous.
            for (p, column) in panel.chunks_exact_mut(MR).enumerate() {
                let start = i0 + (pc + p) * lhs.col_stride;
                column[..rows].copy_from_slice(&lhs.data[start..start + rows]);
            }
        } else {
            for r in 0..rows {
                let start = (i0 + r) * lhs.row_stride + pc * lhs.col_stride;
                for p in 0..kc {
                    panel[p * MR + r] = lhs.data[start + p * lhs.col_stride];
                }
            }
        }
    }
}

/// The MR x NR block: `c[i, j] (+)= sum_p A[i, p] b[p, j]` for `i < rows`, `j < cols`.
/// When `DIRECT_A`, A(i, p) is `a[i * a_stride + p]` (a row-major matrix), else
/// `a[p * MR + i]` (a packed panel); when `DIRECT_B`, B(p, j) is `b[p * b_stride + j]`
/// (row-major, only the valid columns are read), else `b[p * NR + j]` (a packed
/// panel); the caller passes the matching strides.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const DIRECT_A: bool, const DIRECT_B: bool>(
    kc: usize,
    a: *const f32,
    a_stride: usize,
    b: *const f32,
    b_stride: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    // Masks of the valid columns in each half.
    let mask = |from: usize| -> __mmask16 {
        let valid = cols.saturating_sub(from).min(16);
        ((1u32 << valid) - 1) as __mmask16
    };
    let (m0, m1) = (mask(0), mask(16));
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    // Read in place, rows past `rows` re-read the last valid one (their sums are never
    // stored); a packed panel has zeros there instead.
    let row_starts: [*const f32; MR] =
        std::array::from_fn(|i| a.wrapping_add(i.min(rows - 1) * a_stride));
    for p in 0..kc {
        // SAFETY (here and below): packed panels hold kc x MR and kc x NR numbers; in
        // place, rows < `rows` of A and columns < `cols` of B (the masks) are read,
        // which the caller's views contain.
        let (b0, b1) = unsafe {
            if DIRECT_B {
                let row = b.add(p * b_stride);
                (
                    _mm512_maskz_loadu_ps(m0, row),
                    _mm512_maskz_loadu_ps(m1, row.wrapping_add(16)),
                )
            } else {
                (
                    _mm512_loadu_ps(b.add(p * NR)),
                    _mm512_loadu_ps(b.add(p * NR + 16)),
                )
            }
        };
        for (i, acc) in acc.iter_mut().enumerate() {
            let ai = unsafe {
                if DIRECT_A {
                    *row_starts[i].add(p)
                } else {
                    *a.add(p * MR + i)
                }
            };
            let ai = _mm512_set1_ps(ai);
            acc[0] = _mm512_fmadd_ps(ai, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(ai, b1, acc[1]);
        }
    }
    for (i, acc) in acc.iter().enumerate().take(rows) {
        let row = unsafe { c.add(i * ldc) };
        let (mut v0, mut v1) = (acc[0], acc[1]);
        if accumulate {
            unsafe {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row.wrapping_add(16)));
            }
        }
        unsafe {
            _mm512_mask_storeu_ps(row, m0, v0);
            // Masked-off lanes are not touched, so the second half may point past
            // a narrow output's end.
            _mm512_mask_storeu_ps(row.wrapping_add(16), m1, v1);
        }
    }
}
