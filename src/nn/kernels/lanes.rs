//! A vector of f32 lanes of one instruction set (16 with AVX-512, 8 with AVX2, 4 with
//! NEON): the one home of the intrinsics that the vector kernels are written over
//! (Winograd's tile transforms, the GEMM micro-kernel). A kernel's body is generic over
//! these traits and `#[inline(always)]`; each instruction set gets a thin
//! `#[target_feature]` wrapper into which the body and these methods are inlined, so
//! every form is the same code.
//!
//! A value of a vector type exists only once one of its unsafe constructors has run,
//! which the caller may do only where the CPU has the instructions; its arithmetic is
//! then safe to call.

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Additions and scalings: one number, or a vector of them. No fused multiply-adds, so
/// that Winograd's scalar and vector transforms round alike.
pub trait Arithmetic: Copy {
    fn add(self, other: Self) -> Self;
    fn sub(self, other: Self) -> Self;
    fn scale(self, factor: f32) -> Self;
}

impl Arithmetic for f32 {
    #[inline(always)]
    fn add(self, other: f32) -> f32 {
        self + other
    }
    #[inline(always)]
    fn sub(self, other: f32) -> f32 {
        self - other
    }
    #[inline(always)]
    fn scale(self, factor: f32) -> f32 {
        self * factor
    }
}

/// A vector's loads and stores, on top of its arithmetic. Every unsafe method requires
/// the instruction set of the implementation.
pub trait Lanes: Arithmetic {
    /// Which of the first lanes a load or store touches.
    type Mask: Copy;
    /// The first `lanes` lanes (all of them from the width on).
    ///
    /// # Safety
    /// The CPU has the instruction set.
    unsafe fn mask(lanes: usize) -> Self::Mask;
    /// The masked lanes from `src`, zero elsewhere; masked-off lanes are not read.
    ///
    /// # Safety
    /// The CPU has the instruction set; the masked lanes at `src` are readable.
    unsafe fn load(mask: Self::Mask, src: *const f32) -> Self;
    /// The masked lanes to `dst`; the others are not touched.
    ///
    /// # Safety
    /// The masked lanes at `dst` are writable.
    unsafe fn store(self, mask: Self::Mask, dst: *mut f32);
    /// Zero in every lane.
    ///
    /// # Safety
    /// The CPU has the instruction set.
    unsafe fn zero() -> Self;
}

/// What a matrix product's micro-kernel needs beyond `Lanes`: full-width loads and
/// stores (masked ones cost several times more on AMD CPUs), broadcasts, fused
/// multiply-adds, and the epilogue's arithmetic. (x86-64 only: on aarch64 the products
/// run the `gemm` crate's NEON kernel.)
#[cfg(target_arch = "x86_64")]
pub trait ProductLanes: Lanes {
    /// Numbers in a vector.
    const WIDTH: usize;
    /// All `WIDTH` lanes from `src`.
    ///
    /// # Safety
    /// The CPU has the instruction set; `WIDTH` numbers at `src` are readable.
    unsafe fn load_full(src: *const f32) -> Self;
    /// All `WIDTH` lanes to `dst`.
    ///
    /// # Safety
    /// `WIDTH` numbers at `dst` are writable.
    unsafe fn store_full(self, dst: *mut f32);
    /// `x` in every lane.
    ///
    /// # Safety
    /// The CPU has the instruction set.
    unsafe fn splat(x: f32) -> Self;
    /// `self * b + acc`, rounded once.
    fn mul_add(self, b: Self, acc: Self) -> Self;
    /// `self * b - c`, rounded once.
    fn mul_sub(self, b: Self, c: Self) -> Self;
    fn mul(self, other: Self) -> Self;
    fn div(self, other: Self) -> Self;
    /// 1 + e^-v per lane, the denominator of SiLU and of the sigmoid: e^-v = 2^n e^r as
    /// `vmath::exp` computes it (n rounded, r by Cody and Waite's two-part ln 2,
    /// degree-6 Taylor polynomial), saturating at e^88.
    fn one_plus_exp_minus(self) -> Self;
}

/// The part of `one_plus_exp_minus` every instruction set shares: for v clamped below
/// at -88, n = round(-v log2 e) and the polynomial p(r) ~ e^r at r = -v - n ln 2; then
/// e^-v = p 2^n.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn exp_minus_parts<V: ProductLanes>(clamped: V, round: impl Fn(V) -> V) -> (V, V) {
    // SAFETY: `clamped` exists, so the instruction set is present.
    let splat = |x| unsafe { V::splat(x) };
    let n = round(clamped.mul(splat(-std::f32::consts::LOG2_E)));
    // r = -v - n ln 2, ln 2 in two parts, each step rounded once.
    let r = n.mul_sub(splat(-0.693_145_75), clamped);
    let r = n.mul_add(splat(-1.428_606_8e-6), r);
    let mut p = splat(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = p.mul_add(r, splat(c));
    }
    (p, n)
}

/// 16 lanes of AVX-512F.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Avx512Lanes(__m512);

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512Lanes {
    type Mask = __mmask16;
    #[inline(always)]
    unsafe fn mask(lanes: usize) -> __mmask16 {
        (1u32 << lanes.min(16)).wrapping_sub(1) as u16
    }
    #[inline(always)]
    unsafe fn load(mask: __mmask16, src: *const f32) -> Self {
        Avx512Lanes(unsafe { _mm512_maskz_loadu_ps(mask, src) })
    }
    #[inline(always)]
    unsafe fn store(self, mask: __mmask16, dst: *mut f32) {
        unsafe { _mm512_mask_storeu_ps(dst, mask, self.0) }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        Avx512Lanes(unsafe { _mm512_setzero_ps() })
    }
}

#[cfg(target_arch = "x86_64")]
// SAFETY (of each safe method): `self` exists (see the module's note).
impl Arithmetic for Avx512Lanes {
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        Avx512Lanes(unsafe { _mm512_add_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        Avx512Lanes(unsafe { _mm512_sub_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn scale(self, factor: f32) -> Self {
        Avx512Lanes(unsafe { _mm512_mul_ps(self.0, _mm512_set1_ps(factor)) })
    }
}

#[cfg(target_arch = "x86_64")]
// SAFETY (of each safe method): `self` exists (see the module's note).
impl ProductLanes for Avx512Lanes {
    const WIDTH: usize = 16;
    #[inline(always)]
    unsafe fn load_full(src: *const f32) -> Self {
        Avx512Lanes(unsafe { _mm512_loadu_ps(src) })
    }
    #[inline(always)]
    unsafe fn store_full(self, dst: *mut f32) {
        unsafe { _mm512_storeu_ps(dst, self.0) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Avx512Lanes(unsafe { _mm512_set1_ps(x) })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, acc: Self) -> Self {
        Avx512Lanes(unsafe { _mm512_fmadd_ps(self.0, b.0, acc.0) })
    }
    #[inline(always)]
    fn mul_sub(self, b: Self, c: Self) -> Self {
        Avx512Lanes(unsafe { _mm512_fmsub_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    fn mul(self, other: Self) -> Self {
        Avx512Lanes(unsafe { _mm512_mul_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn div(self, other: Self) -> Self {
        Avx512Lanes(unsafe { _mm512_div_ps(self.0, other.0) })
    }
    /// 2^n applied by `scalef`, which saturates by itself above. (A reciprocal estimate
    /// refined by a Newton step in place of the divisions measured no faster on AMD
    /// Zen 4.)
    #[inline(always)]
    fn one_plus_exp_minus(self) -> Self {
        unsafe {
            let clamped = Avx512Lanes(_mm512_max_ps(self.0, _mm512_set1_ps(-88.0)));
            let (p, n) = exp_minus_parts(clamped, |x: Avx512Lanes| {
                Avx512Lanes(_mm512_roundscale_ps::<
                    { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                >(x.0))
            });
            Avx512Lanes(_mm512_add_ps(
                _mm512_set1_ps(1.0),
                _mm512_scalef_ps(p.0, n.0),
            ))
        }
    }
}

/// 8 lanes of AVX2 with FMA.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Avx2Lanes(__m256);

/// AVX2's masked loads and stores are slow on AMD CPUs: a full vector goes without the
/// mask.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Avx2Mask {
    full: bool,
    lanes: __m256i,
}

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx2Lanes {
    type Mask = Avx2Mask;
    #[inline(always)]
    unsafe fn mask(lanes: usize) -> Avx2Mask {
        let on = unsafe {
            _mm256_cmpgt_epi32(
                _mm256_set1_epi32(lanes.min(8) as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        };
        Avx2Mask {
            full: lanes >= 8,
            lanes: on,
        }
    }
    #[inline(always)]
    unsafe fn load(mask: Avx2Mask, src: *const f32) -> Self {
        Avx2Lanes(unsafe {
            if mask.full {
                _mm256_loadu_ps(src)
            } else {
                _mm256_maskload_ps(src, mask.lanes)
            }
        })
    }
    #[inline(always)]
    unsafe fn store(self, mask: Avx2Mask, dst: *mut f32) {
        unsafe {
            if mask.full {
                _mm256_storeu_ps(dst, self.0)
            } else {
                _mm256_maskstore_ps(dst, mask.lanes, self.0)
            }
        }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        Avx2Lanes(unsafe { _mm256_setzero_ps() })
    }
}

#[cfg(target_arch = "x86_64")]
// SAFETY (of each safe method): `self` exists (see the module's note).
impl Arithmetic for Avx2Lanes {
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        Avx2Lanes(unsafe { _mm256_add_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        Avx2Lanes(unsafe { _mm256_sub_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn scale(self, factor: f32) -> Self {
        Avx2Lanes(unsafe { _mm256_mul_ps(self.0, _mm256_set1_ps(factor)) })
    }
}

#[cfg(target_arch = "x86_64")]
// SAFETY (of each safe method): `self` exists (see the module's note); FMA comes with
// AVX2 wherever `cpu` picks this level.
impl ProductLanes for Avx2Lanes {
    const WIDTH: usize = 8;
    #[inline(always)]
    unsafe fn load_full(src: *const f32) -> Self {
        Avx2Lanes(unsafe { _mm256_loadu_ps(src) })
    }
    #[inline(always)]
    unsafe fn store_full(self, dst: *mut f32) {
        unsafe { _mm256_storeu_ps(dst, self.0) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Avx2Lanes(unsafe { _mm256_set1_ps(x) })
    }
    #[inline(always)]
    fn mul_add(self, b: Self, acc: Self) -> Self {
        Avx2Lanes(unsafe { _mm256_fmadd_ps(self.0, b.0, acc.0) })
    }
    #[inline(always)]
    fn mul_sub(self, b: Self, c: Self) -> Self {
        Avx2Lanes(unsafe { _mm256_fmsub_ps(self.0, b.0, c.0) })
    }
    #[inline(always)]
    fn mul(self, other: Self) -> Self {
        Avx2Lanes(unsafe { _mm256_mul_ps(self.0, other.0) })
    }
    #[inline(always)]
    fn div(self, other: Self) -> Self {
        Avx2Lanes(unsafe { _mm256_div_ps(self.0, other.0) })
    }
    /// AVX2 has no `scalef`: 2^n is built in the exponent bits, for which v is clamped
    /// to ±88 as well (|n| <= 127, so n + 127 is a valid biased exponent).
    #[inline(always)]
    fn one_plus_exp_minus(self) -> Self {
        unsafe {
            let clamped = Avx2Lanes(_mm256_min_ps(
                _mm256_max_ps(self.0, _mm256_set1_ps(-88.0)),
                _mm256_set1_ps(88.0),
            ));
            let (p, n) = exp_minus_parts(clamped, |x: Avx2Lanes| {
                Avx2Lanes(_mm256_round_ps::<
                    { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                >(x.0))
            });
            let biased = _mm256_add_epi32(_mm256_cvtps_epi32(n.0), _mm256_set1_epi32(127));
            let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased));
            Avx2Lanes(_mm256_add_ps(
                _mm256_set1_ps(1.0),
                _mm256_mul_ps(p.0, two_n),
            ))
        }
    }
}

/// 4 lanes of NEON.
#[cfg(target_arch = "aarch64")]
#[derive(Clone, Copy)]
pub struct NeonLanes(float32x4_t);

/// NEON has no masked loads or stores: a part of a vector goes through a buffer.
#[cfg(target_arch = "aarch64")]
impl Lanes for NeonLanes {
    type Mask = usize;
    #[inline(always)]
    unsafe fn mask(lanes: usize) -> usize {
        lanes.min(4)
    }
    #[inline(always)]
    unsafe fn load(lanes: usize, src: *const f32) -> Self {
        NeonLanes(unsafe {
            if lanes == 4 {
                vld1q_f32(src)
            } else {
                let mut part = [0f32; 4];
                std::ptr::copy_nonoverlapping(src, part.as_mut_ptr(), lanes);
                vld1q_f32(part.as_ptr())
            }
        })
    }
    #[inline(always)]
    unsafe fn store(self, lanes: usize, dst: *mut f32) {
        unsafe {
            if lanes == 4 {
                vst1q_f32(dst, self.0)
            } else {
                let mut part = [0f32; 4];
                vst1q_f32(part.as_mut_ptr(), self.0);
                std::ptr::copy_nonoverlapping(part.as_ptr(), dst, lanes);
            }
        }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        NeonLanes(unsafe { vdupq_n_f32(0.0) })
    }
}

#[cfg(target_arch = "aarch64")]
// SAFETY (of each safe method): `self` exists (see the module's note).
impl Arithmetic for NeonLanes {
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        NeonLanes(unsafe { vaddq_f32(self.0, other.0) })
    }
    #[inline(always)]
    fn sub(self, other: Self) -> Self {
        NeonLanes(unsafe { vsubq_f32(self.0, other.0) })
    }
    #[inline(always)]
    fn scale(self, factor: f32) -> Self {
        NeonLanes(unsafe { vmulq_f32(self.0, vdupq_n_f32(factor)) })
    }
}
