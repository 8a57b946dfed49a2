//! An AVX-512 f32 matrix product in the BLIS layout: the inputs are copied ("packed")
//! into panels the micro-kernel reads sequentially, and a 14 x 32 block of the output
//! stays in 28 of the 32 vector registers across the whole inner dimension. The `gemm`
//! crate reaches only AVX2 on stable Rust, half of the vector width these CPUs have;
//! AVX-512 intrinsics are stable since Rust 1.89.

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::operands::{Activation, Epilogue, View};

/// Rows of the output block the micro-kernel holds in registers.
pub const MR: usize = 14;
/// Columns of that block: two vectors of 16.
pub const NR: usize = 32;
/// Depth of one packed block: an A panel (MR x KC) and a B panel (KC x NR) fit in L1.
const KC: usize = 256;
/// Rows of A packed at once (MC x KC stays in L2).
const MC: usize = MR * 12;
/// A right-hand side this small (32 KiB) stays in L1 read in place.
const L1_FLOATS: usize = 8192;

/// Whether the kernel runs here (the CPU has AVX-512F and no narrower level is forced).
pub fn available() -> bool {
    crate::nn::kernels::cpu::avx512()
}

thread_local! {
    /// Packing buffers, kept per thread so that a product allocates nothing.
    static BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// How the micro-kernel reads its MR rows of A.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    /// A packed panel: A(i, p) is `a[p * MR + i]`.
    Packed,
    /// In place, rows contiguous: A(i, p) is `rows[i][p]`.
    Rows,
    /// In place, a gathered column per depth step: A(i, p) is `base[offsets[p] + i]`
    /// (a convolution's image read as its transposed column matrix).
    Columns,
}

/// Where the micro-kernel finds A; which fields it reads depends on the `Source`.
struct Operand {
    packed: *const f32,
    rows: [*const f32; MR],
    base: *const f32,
    offsets: *const usize,
}

/// `out = lhs · rhs` (or `+=` when `accumulate`), then the epilogue's bias and
/// activation, on one thread; `out` is `lhs.rows` x `rhs.cols` with row stride `ldc`.
///
/// # Safety
/// `available()` must hold; `out` must be valid for writes at `i * ldc + j` for every
/// output element, and the views must be in bounds (checked by the caller).
pub unsafe fn matmul(
    out: *mut f32,
    ldc: usize,
    lhs: View,
    rhs: View,
    accumulate: bool,
    epilogue: Epilogue,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    // Row-major A is read in place, and so is a gathered transposed one. Row-major B
    // is too when few row panels share each of its panels, or when all of it fits in
    // L1 (a Winograd position's [cin, cout]): packing it would cost more than it saves.
    let source = if lhs.col_stride == 1 && lhs.col_offsets.is_none() {
        Source::Rows
    } else if lhs.row_stride == 1 && lhs.row_offsets.is_none() && lhs.col_offsets.is_some() {
        Source::Columns
    } else {
        Source::Packed
    };
    let direct_b = rhs.col_stride == 1
        && rhs.row_offsets.is_none()
        && rhs.col_offsets.is_none()
        && (m <= MC || k * n <= L1_FLOATS);
    BUFFERS.with(|buffers| {
        let (packed_a, packed_b) = &mut *buffers.borrow_mut();
        // Depth blocks of equal size: a short last block (k = 288 as 256 + 32) would
        // load and store the output once more for little work.
        let depth = k.div_ceil(k.div_ceil(KC));
        for pc in (0..k).step_by(depth) {
            let kc = depth.min(k - pc);
            // Later depth blocks add to what the first one wrote; the bias enters
            // with the first, the activation with the last.
            let add = accumulate || pc > 0;
            let bias = epilogue.bias.filter(|_| pc == 0);
            let silu = epilogue.activation == Activation::Silu && pc + kc == k;
            if !direct_b {
                pack_b(packed_b, rhs, pc, kc);
            }
            for ic in (0..m).step_by(MC) {
                let mc = MC.min(m - ic);
                if source == Source::Packed {
                    pack_a(packed_a, lhs, ic, mc, pc, kc);
                }
                for jp in 0..n.div_ceil(NR) {
                    let cols = NR.min(n - jp * NR);
                    let (b, b_stride) = if direct_b {
                        (
                            rhs.data[rhs.row_offset(pc) + jp * NR..].as_ptr(),
                            rhs.row_stride,
                        )
                    } else {
                        (packed_b[jp * kc * NR..].as_ptr(), NR)
                    };
                    for ip in 0..mc.div_ceil(MR) {
                        let rows = MR.min(mc - ip * MR);
                        let i0 = ic + ip * MR;
                        let mut a = Operand {
                            packed: packed_a.as_ptr(),
                            rows: [std::ptr::null(); MR],
                            base: std::ptr::null(),
                            offsets: std::ptr::null(),
                        };
                        let mut source = source;
                        match source {
                            Source::Packed => a.packed = packed_a[ip * kc * MR..].as_ptr(),
                            Source::Rows => {
                                // Rows past `rows` re-read the last valid one (their
                                // sums are never stored).
                                a.rows = std::array::from_fn(|i| {
                                    let row = lhs.row_offset(i0 + i.min(rows - 1));
                                    lhs.data[row + pc..].as_ptr()
                                })
                            }
                            Source::Columns if rows == MR => {
                                let offsets = lhs.col_offsets.expect("a gathered view");
                                a.base = lhs.data[i0..].as_ptr();
                                a.offsets = offsets[pc..].as_ptr();
                            }
                            Source::Columns => {
                                // The last, partial panel: reading MR numbers per
                                // column could pass the end of the data.
                                pack_a(packed_a, lhs, i0, rows, pc, kc);
                                a.packed = packed_a.as_ptr();
                                source = Source::Packed;
                            }
                        }
                        let store = Store {
                            accumulate: add,
                            bias: bias.map_or(std::ptr::null(), |b| b[jp * NR..].as_ptr()),
                            silu,
                        };
                        let kernel = match (source, direct_b) {
                            (Source::Packed, false) => kernel::<0, false>,
                            (Source::Packed, true) => kernel::<0, true>,
                            (Source::Rows, false) => kernel::<1, false>,
                            (Source::Rows, true) => kernel::<1, true>,
                            (Source::Columns, false) => kernel::<2, false>,
                            (Source::Columns, true) => kernel::<2, true>,
                        };
                        // SAFETY: A and B are the caller's in-bounds views or the packed
                        // panels (kc x MR and kc x NR numbers), read only at the valid
                        // rows and columns; the rows x cols block at (i0, jp NR) lies
                        // inside `out` (the caller's contract).
                        unsafe {
                            let c = out.add(i0 * ldc + jp * NR);
                            kernel(kc, &a, b, b_stride, c, ldc, rows, cols, store);
                        }
                    }
                }
            }
        }
    })
}

/// Copies rows `pc..pc + kc` of `rhs` into panels of NR columns, each kc x NR and
/// row-major, zero-padded past the last column. Every number of the panels is
/// written, so the buffer is not cleared first.
fn pack_b(buffer: &mut Vec<f32>, rhs: View, pc: usize, kc: usize) {
    let n_panels = rhs.cols.div_ceil(NR);
    let len = n_panels * kc * NR;
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    let contiguous = rhs.col_stride == 1 && rhs.col_offsets.is_none();
    for (jp, panel) in buffer[..len].chunks_exact_mut(kc * NR).enumerate() {
        let j0 = jp * NR;
        let cols = NR.min(rhs.cols - j0);
        for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
            if contiguous {
                let start = rhs.row_offset(pc + p) + j0;
                row[..cols].copy_from_slice(&rhs.data[start..start + cols]);
            } else {
                for (j, v) in row[..cols].iter_mut().enumerate() {
                    *v = rhs.at(pc + p, j0 + j);
                }
            }
            if cols < NR {
                row[cols..].fill(0.0);
            }
        }
    }
}

/// Copies the block rows `ic..ic + mc`, columns `pc..pc + kc` of `lhs` into panels of
/// MR rows, each stored column by column (kc x MR), zero-padded past the last row.
/// Every number of the panels is written, so the buffer is not cleared first.
fn pack_a(buffer: &mut Vec<f32>, lhs: View, ic: usize, mc: usize, pc: usize, kc: usize) {
    let m_panels = mc.div_ceil(MR);
    let len = m_panels * kc * MR;
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    for (ip, panel) in buffer[..len].chunks_exact_mut(kc * MR).enumerate() {
        let i0 = ic + ip * MR;
        let rows = MR.min(ic + mc - i0);
        for (p, column) in panel.chunks_exact_mut(MR).enumerate() {
            if lhs.row_stride == 1 && lhs.row_offsets.is_none() {
                // A transposed matrix: each column of the panel is contiguous.
                let start = i0 + lhs.col_offset(pc + p);
                column[..rows].copy_from_slice(&lhs.data[start..start + rows]);
            } else {
                for (r, v) in column[..rows].iter_mut().enumerate() {
                    *v = lhs.at(i0 + r, pc + p);
                }
            }
            if rows < MR {
                column[rows..].fill(0.0);
            }
        }
    }
}

/// How the micro-kernel stores its block: `c = silu?(sum + c? + bias?)`.
#[derive(Clone, Copy)]
struct Store {
    /// Add to what `c` holds.
    accumulate: bool,
    /// The bias of the block's first column (its `cols` numbers are read), or null.
    bias: *const f32,
    /// Apply SiLU last.
    silu: bool,
}

/// The MR x NR block: `c[i, j] (+)= sum_p A[i, p] b[p, j]` for `i < rows`, `j < cols`,
/// stored as `store` says.
/// `SOURCE` is a `Source` as a number (0 packed, 1 rows, 2 columns), saying how A is
/// read from `a`; when `DIRECT_B`, B(p, j) is `b[p * b_stride + j]` (row-major, only
/// the valid columns are read), else `b[p * NR + j]` (a packed panel).
#[target_feature(enable = "avx512f")]
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
    // Masks of the valid columns in each half.
    let mask = |from: usize| -> __mmask16 {
        let valid = cols.saturating_sub(from).min(16);
        ((1u32 << valid) - 1) as __mmask16
    };
    let (m0, m1) = (mask(0), mask(16));
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let row_starts = a.rows;
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
        let column = if SOURCE == 2 {
            unsafe { a.base.add(*a.offsets.add(p)) }
        } else {
            a.packed
        };
        for (i, acc) in acc.iter_mut().enumerate() {
            let ai = unsafe {
                match SOURCE {
                    0 => *a.packed.add(p * MR + i),
                    1 => *row_starts[i].add(p),
                    _ => *column.add(i),
                }
            };
            let ai = _mm512_set1_ps(ai);
            acc[0] = _mm512_fmadd_ps(ai, b0, acc[0]);
            acc[1] = _mm512_fmadd_ps(ai, b1, acc[1]);
        }
    }
    // SAFETY: the bias holds `cols` numbers (the masks).
    let bias = (!store.bias.is_null()).then(|| unsafe {
        (
            _mm512_maskz_loadu_ps(m0, store.bias),
            _mm512_maskz_loadu_ps(m1, store.bias.wrapping_add(16)),
        )
    });
    // Masked stores cost several times a plain one on some CPUs (AMD Zen 4): a block
    // of all NR columns is stored without masks.
    let full = cols == NR;
    for (i, acc) in acc.iter().enumerate().take(rows) {
        let row = unsafe { c.add(i * ldc) };
        let (mut v0, mut v1) = (acc[0], acc[1]);
        if store.accumulate {
            unsafe {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row.wrapping_add(16)));
            }
        }
        if let Some((b0, b1)) = bias {
            v0 = _mm512_add_ps(v0, b0);
            v1 = _mm512_add_ps(v1, b1);
        }
        if store.silu {
            v0 = silu(v0);
            v1 = silu(v1);
        }
        unsafe {
            if full {
                _mm512_storeu_ps(row, v0);
                _mm512_storeu_ps(row.add(16), v1);
            } else {
                _mm512_mask_storeu_ps(row, m0, v0);
                // Masked-off lanes are not touched, so the second half may point
                // past a narrow output's end.
                _mm512_mask_storeu_ps(row.wrapping_add(16), m1, v1);
            }
        }
    }
}

/// `vmath::silu` on 16 lanes: v / (1 + e^-v), with e^-v = 2^n e^r computed as
/// `vmath::exp` does (n rounded, r by Cody and Waite's two-part ln 2, degree-6 Taylor
/// polynomial) and 2^n applied by `scalef`. (A reciprocal estimate refined by a
/// Newton step in place of the division measured no faster on AMD Zen 4.)
#[target_feature(enable = "avx512f")]
#[inline]
fn silu(v: __m512) -> __m512 {
    // e^-v saturates at e^88, as in `vmath::exp`.
    let clamped = _mm512_max_ps(v, _mm512_set1_ps(-88.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(clamped, _mm512_set1_ps(-std::f32::consts::LOG2_E)),
    );
    // r = -v - n ln 2.
    let r = _mm512_fnmsub_ps(n, _mm512_set1_ps(0.693_145_75), clamped);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let denominator = _mm512_add_ps(_mm512_set1_ps(1.0), _mm512_scalef_ps(p, n));
    _mm512_div_ps(v, denominator)
}
