//! The AVX2 + FMA micro-kernel: a 6 x 16 block of the output in 12 of the 16 vector
//! registers, two for a row of B and one for the broadcast of A (the driver, packing
//! and blocking are in `blis`). Against the `gemm` crate's kernel of the same width it
//! reads gathered views (a convolution's image as its column matrix) in place and adds
//! the bias and SiLU while the block is in registers.

use std::arch::x86_64::*;

use super::blis::{BlockFn, MicroKernel, Operand, Store};

/// Rows of the output block the micro-kernel holds in registers.
const MR: usize = 6;
/// Columns of that block: two vectors of 8.
const NR: usize = 16;

/// The kernel for CPUs with AVX2 and FMA.
pub struct Avx2;

impl MicroKernel for Avx2 {
    const MR: usize = MR;
    const NR: usize = NR;
    const KC: usize = 256;
    const MC: usize = MR * 20;

    fn available() -> bool {
        crate::nn::kernels::cpu::avx2()
    }

    fn block<const SOURCE: u8, const DIRECT_B: bool>() -> BlockFn {
        kernel::<SOURCE, DIRECT_B>
    }
}

/// The lanes of the 8 columns from `from` that are below `cols`, as a mask for
/// `maskload` and `maskstore` (a lane is on when its sign bit is set).
#[target_feature(enable = "avx2")]
#[inline]
fn mask(cols: usize, from: usize) -> __m256i {
    let valid = cols.saturating_sub(from).min(8) as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(valid),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// The MR x NR block: `c[i, j] (+)= sum_p A[i, p] b[p, j]` for `i < rows`, `j < cols`,
/// stored as `store` says (see `MicroKernel::block` for `SOURCE` and `DIRECT_B`).
#[target_feature(enable = "avx2,fma")]
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
    let (m0, m1) = (mask(cols, 0), mask(cols, 8));
    // Masked loads and stores cost more than plain ones: a block of all NR columns
    // goes without them.
    let full = cols == NR;
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    for p in 0..kc {
        // SAFETY (here and below): packed panels hold kc x MR and kc x NR numbers; in
        // place, rows < `rows` of A and columns < `cols` of B (the masks) are read,
        // which the caller's views contain. Masked-off lanes are never accessed, so
        // the second half may point past a narrow operand's end.
        let (b0, b1) = unsafe {
            if DIRECT_B {
                let row = b.add(p * b_stride);
                if full {
                    (_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8)))
                } else {
                    (
                        _mm256_maskload_ps(row, m0),
                        _mm256_maskload_ps(row.wrapping_add(8), m1),
                    )
                }
            } else {
                (
                    _mm256_loadu_ps(b.add(p * NR)),
                    _mm256_loadu_ps(b.add(p * NR + 8)),
                )
            }
        };
        let column = unsafe { a.column::<SOURCE, MR>(p) };
        for (acc, ai) in acc.iter_mut().zip(column) {
            let ai = _mm256_set1_ps(ai);
            acc[0] = _mm256_fmadd_ps(ai, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(ai, b1, acc[1]);
        }
    }
    // SAFETY: the bias holds `cols` numbers (the masks).
    let bias = (!store.bias.is_null()).then(|| unsafe {
        (
            _mm256_maskload_ps(store.bias, m0),
            _mm256_maskload_ps(store.bias.wrapping_add(8), m1),
        )
    });
    for (i, acc) in acc.iter().enumerate().take(rows) {
        let row = unsafe { c.add(i * ldc) };
        let (mut v0, mut v1) = (acc[0], acc[1]);
        if store.accumulate {
            unsafe {
                let (c0, c1) = if full {
                    (_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8)))
                } else {
                    (
                        _mm256_maskload_ps(row, m0),
                        _mm256_maskload_ps(row.wrapping_add(8), m1),
                    )
                };
                v0 = _mm256_add_ps(v0, c0);
                v1 = _mm256_add_ps(v1, c1);
            }
        }
        if let Some((b0, b1)) = bias {
            v0 = _mm256_add_ps(v0, b0);
            v1 = _mm256_add_ps(v1, b1);
        }
        if store.silu {
            let (d0, d1) = (one_plus_exp_minus(v0), one_plus_exp_minus(v1));
            if store.sigmoid.is_null() {
                v0 = _mm256_div_ps(v0, d0);
                v1 = _mm256_div_ps(v1, d1);
            } else {
                let one = _mm256_set1_ps(1.0);
                let (s0, s1) = (_mm256_div_ps(one, d0), _mm256_div_ps(one, d1));
                v0 = _mm256_mul_ps(v0, s0);
                v1 = _mm256_mul_ps(v1, s1);
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
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_row(row: *mut f32, v0: __m256, v1: __m256, full: bool, m0: __m256i, m1: __m256i) {
    unsafe {
        if full {
            _mm256_storeu_ps(row, v0);
            _mm256_storeu_ps(row.add(8), v1);
        } else {
            _mm256_maskstore_ps(row, m0, v0);
            _mm256_maskstore_ps(row.wrapping_add(8), m1, v1);
        }
    }
}

/// 1 + e^-v on 8 lanes, the denominator of SiLU and of the sigmoid: e^-v = 2^n e^r as
/// `vmath::exp` computes it (n rounded, r by Cody and Waite's two-part ln 2, degree-6
/// Taylor polynomial). AVX2 has no `scalef`: 2^n is built in the exponent bits, for
/// which v is clamped to ±88 (beyond it e^-v is 0 or saturates, as in `vmath::exp`).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn one_plus_exp_minus(v: __m256) -> __m256 {
    let clamped = _mm256_min_ps(
        _mm256_max_ps(v, _mm256_set1_ps(-88.0)),
        _mm256_set1_ps(88.0),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        clamped,
        _mm256_set1_ps(-std::f32::consts::LOG2_E),
    ));
    // r = -v - n ln 2.
    let r = _mm256_fnmsub_ps(n, _mm256_set1_ps(0.693_145_75), clamped);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    // |n| <= 127, so n + 127 is a valid biased exponent (0 gives 0.0).
    let biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased));
    _mm256_add_ps(_mm256_set1_ps(1.0), _mm256_mul_ps(p, two_n))
}
