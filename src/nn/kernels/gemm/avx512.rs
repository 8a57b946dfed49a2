//! The AVX-512 micro-kernel: a 14 x 32 block of the output stays in 28 of the 32
//! vector registers across a depth block (the driver, packing and blocking are in
//! `blis`). The `gemm` crate reaches only AVX2 on stable Rust, half of the vector width
//! these CPUs have; AVX-512 intrinsics are stable since Rust 1.89.

use std::arch::x86_64::*;

use super::blis::{BlockFn, MicroKernel, Operand, Store};

/// Rows of the output block the micro-kernel holds in registers.
const MR: usize = 14;
/// Columns of that block: two vectors of 16.
const NR: usize = 32;

/// The kernel for CPUs with AVX-512F.
pub struct Avx512;

impl MicroKernel for Avx512 {
    const MR: usize = MR;
    const NR: usize = NR;
    const KC: usize = 256;
    const MC: usize = MR * 12;

    fn available() -> bool {
        crate::nn::kernels::cpu::avx512()
    }

    fn block<const SOURCE: u8, const DIRECT_B: bool>() -> BlockFn {
        kernel::<SOURCE, DIRECT_B>
    }
}

/// The MR x NR block: `c[i, j] (+)= sum_p A[i, p] b[p, j]` for `i < rows`, `j < cols`,
/// stored as `store` says (see `MicroKernel::block` for `SOURCE` and `DIRECT_B`).
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
        let column = unsafe { a.column::<SOURCE, MR>(p) };
        for (acc, ai) in acc.iter_mut().zip(column) {
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
            let (d0, d1) = (one_plus_exp_minus(v0), one_plus_exp_minus(v1));
            if store.sigmoid.is_null() {
                v0 = _mm512_div_ps(v0, d0);
                v1 = _mm512_div_ps(v1, d1);
            } else {
                let one = _mm512_set1_ps(1.0);
                let (s0, s1) = (_mm512_div_ps(one, d0), _mm512_div_ps(one, d1));
                v0 = _mm512_mul_ps(v0, s0);
                v1 = _mm512_mul_ps(v1, s1);
                // SAFETY: the sigmoids are laid out as `c` (`Store::sigmoid`).
                unsafe { store_row(store.sigmoid.add(i * ldc), s0, s1, full, m0, m1) };
            }
        }
        // SAFETY: the block's row `i` lies in the output; the masks keep to `cols`.
        unsafe { store_row(row, v0, v1, full, m0, m1) };
    }
}

/// Stores the two vectors of a row of the block: all NR numbers when `full`, else the
/// lanes the masks leave on.
///
/// # Safety
/// `row` is writable for NR numbers, or for the masked-on lanes.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store_row(
    row: *mut f32,
    v0: __m512,
    v1: __m512,
    full: bool,
    m0: __mmask16,
    m1: __mmask16,
) {
    unsafe {
        if full {
            _mm512_storeu_ps(row, v0);
            _mm512_storeu_ps(row.add(16), v1);
        } else {
            _mm512_mask_storeu_ps(row, m0, v0);
            // Masked-off lanes are not touched, so the second half may point past a
            // narrow output's end.
            _mm512_mask_storeu_ps(row.wrapping_add(16), m1, v1);
        }
    }
}

/// 1 + e^-v on 16 lanes, the denominator of SiLU and of the sigmoid: e^-v = 2^n e^r
/// computed as `vmath::exp` does (n rounded, r by Cody and Waite's two-part ln 2,
/// degree-6 Taylor polynomial) and 2^n applied by `scalef`. (A reciprocal estimate
/// refined by a Newton step in place of the divisions measured no faster on AMD Zen 4.)
#[target_feature(enable = "avx512f")]
#[inline]
fn one_plus_exp_minus(v: __m512) -> __m512 {
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
    _mm512_add_ps(_mm512_set1_ps(1.0), _mm512_scalef_ps(p, n))
}
