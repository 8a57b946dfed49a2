//! The tile transforms on a vector of channels at a time: 16 with AVX-512, 8 with AVX2,
//! 4 with NEON. The transforms are additions and subtractions only, written once over
//! `Lanes`; each instruction set gets thin wrappers compiled for it, into which the
//! generic code and its intrinsics are inlined.

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::tile::{Strides, VectorTiles};
use crate::nn::kernels::cpu::{self, Level};

/// The widest transforms of the level in use, if any.
pub fn here() -> Option<VectorTiles> {
    of_level(cpu::level())
}

/// Every vector form this CPU can run, whatever level is in use (for the tests).
#[cfg(test)]
pub fn all_here() -> Vec<VectorTiles> {
    cpu::levels().into_iter().filter_map(of_level).collect()
}

/// The transforms compiled for an instruction-set level (none for plain code; `cpu`
/// never uses a level of another architecture).
fn of_level(level: Level) -> Option<VectorTiles> {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => Some(AVX512),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => Some(AVX2),
        #[cfg(target_arch = "aarch64")]
        Level::Neon => Some(NEON),
        _ => None,
    }
}

#[cfg(target_arch = "x86_64")]
const AVX512: VectorTiles = VectorTiles {
    input: avx512_input,
    grad: avx512_grad,
    output: avx512_output,
    width: 16,
};

#[cfg(target_arch = "x86_64")]
const AVX2: VectorTiles = VectorTiles {
    input: avx2_input,
    grad: avx2_grad,
    output: avx2_output,
    width: 8,
};

#[cfg(target_arch = "aarch64")]
const NEON: VectorTiles = VectorTiles {
    input: neon_input,
    grad: neon_grad,
    output: neon_output,
    width: 4,
};

/// A vector of channels, and the few operations the transforms need. Every method
/// requires the instruction set of the implementation.
trait Lanes: Copy {
    /// Which of the first lanes a load or store touches.
    type Mask: Copy;
    unsafe fn mask(lanes: usize) -> Self::Mask;
    /// The masked lanes from `src`, zero elsewhere.
    unsafe fn load(mask: Self::Mask, src: *const f32) -> Self;
    /// The masked lanes to `dst`; the others are not touched.
    unsafe fn store(self, mask: Self::Mask, dst: *mut f32);
    unsafe fn zero() -> Self;
    unsafe fn add(self, other: Self) -> Self;
    unsafe fn sub(self, other: Self) -> Self;
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx512Lanes(__m512);

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512Lanes {
    type Mask = __mmask16;
    #[inline(always)]
    unsafe fn mask(lanes: usize) -> __mmask16 {
        (1u32 << lanes).wrapping_sub(1) as u16
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
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        Avx512Lanes(unsafe { _mm512_add_ps(self.0, other.0) })
    }
    #[inline(always)]
    unsafe fn sub(self, other: Self) -> Self {
        Avx512Lanes(unsafe { _mm512_sub_ps(self.0, other.0) })
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx2Lanes(__m256);

/// AVX2's masked stores are slow on AMD CPUs: a full vector goes without the mask.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx2Mask {
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
                _mm256_set1_epi32(lanes as i32),
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
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        Avx2Lanes(unsafe { _mm256_add_ps(self.0, other.0) })
    }
    #[inline(always)]
    unsafe fn sub(self, other: Self) -> Self {
        Avx2Lanes(unsafe { _mm256_sub_ps(self.0, other.0) })
    }
}

#[cfg(target_arch = "aarch64")]
#[derive(Clone, Copy)]
struct NeonLanes(float32x4_t);

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
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        NeonLanes(unsafe { vaddq_f32(self.0, other.0) })
    }
    #[inline(always)]
    unsafe fn sub(self, other: Self) -> Self {
        NeonLanes(unsafe { vsubq_f32(self.0, other.0) })
    }
}

/// `input_combination` (B^T) on vectors.
#[inline(always)]
unsafe fn input_combination<V: Lanes>([d0, d1, d2, d3]: [V; 4]) -> [V; 4] {
    unsafe { [d0.sub(d2), d1.add(d2), d2.sub(d1), d1.sub(d3)] }
}

/// `output_combination` (A^T) on vectors.
#[inline(always)]
unsafe fn output_combination<V: Lanes>([m0, m1, m2, m3]: [V; 4]) -> [V; 2] {
    unsafe { [m0.add(m1).add(m2), m1.sub(m2).sub(m3)] }
}

/// `grad_combination` (A) on vectors.
#[inline(always)]
unsafe fn grad_combination<V: Lanes>([y0, y1]: [V; 2]) -> [V; 4] {
    unsafe { [y0, y0.add(y1), y0.sub(y1), V::zero().sub(y1)] }
}

/// C X C^T on one tile of `lanes` channels: `combine` on the I x I vectors `x(i, j)`'s
/// columns, then on the rows of the result; the O x O results go to `y(i, j, value)`.
#[inline(always)]
unsafe fn separable<V: Lanes, const I: usize, const O: usize>(
    combine: impl Fn([V; I]) -> [V; O],
    x: impl Fn(usize, usize) -> V,
    mut y: impl FnMut(usize, usize, V),
) {
    unsafe {
        let mut columns = [[V::zero(); I]; O];
        for j in 0..I {
            let column = combine(std::array::from_fn(|i| x(i, j)));
            for i in 0..O {
                columns[i][j] = column[i];
            }
        }
        for (i, row) in columns.iter().enumerate() {
            for (j, value) in combine(*row).into_iter().enumerate() {
                y(i, j, value);
            }
        }
    }
}

/// One tile's input transform for `lanes` channels: the 4x4 pixels from `src` on, the
/// 16 positions to `dst` on.
#[inline(always)]
unsafe fn input_tile<V: Lanes>(src: *const f32, dst: *mut f32, at: Strides, lanes: usize) {
    unsafe {
        let mask = V::mask(lanes);
        separable::<V, 4, 4>(
            |v| input_combination(v),
            |i, j| V::load(mask, src.add(i * at.row + j * at.col)),
            |i, j, v| v.store(mask, dst.add((i * 4 + j) * at.position)),
        )
    }
}

/// One tile's output transform for `lanes` channels: the 16 products from `src` on,
/// the 2x2 pixels to `dst` on.
#[inline(always)]
unsafe fn output_tile<V: Lanes>(src: *const f32, dst: *mut f32, at: Strides, lanes: usize) {
    unsafe {
        let mask = V::mask(lanes);
        separable::<V, 4, 2>(
            |v| output_combination(v),
            |i, j| V::load(mask, src.add((i * 4 + j) * at.position)),
            |i, j, v| v.store(mask, dst.add(i * at.row + j * at.col)),
        )
    }
}

/// One tile's output-gradient transform for `lanes` channels: the 2x2 pixels from
/// `src` on, the 16 positions to `dst` on.
#[inline(always)]
unsafe fn grad_tile<V: Lanes>(src: *const f32, dst: *mut f32, at: Strides, lanes: usize) {
    unsafe {
        let mask = V::mask(lanes);
        separable::<V, 2, 4>(
            |v| grad_combination(v),
            |i, j| V::load(mask, src.add(i * at.row + j * at.col)),
            |i, j, v| v.store(mask, dst.add((i * 4 + j) * at.position)),
        )
    }
}

/// The three transforms compiled for one instruction set (`$feature`) on its lanes.
///
/// # Safety (of each)
/// The CPU has the instruction set; every pixel's and position's first `lanes`
/// numbers (at most the vector's width) are readable or writable at the strides given.
macro_rules! tiles_for {
    ($feature:literal, $lanes:ty, $input:ident, $output:ident, $grad:ident) => {
        #[target_feature(enable = $feature)]
        unsafe fn $input(src: *const f32, dst: *mut f32, at: Strides, lanes: usize) {
            unsafe { input_tile::<$lanes>(src, dst, at, lanes) }
        }

        #[target_feature(enable = $feature)]
        unsafe fn $output(src: *const f32, dst: *mut f32, at: Strides, lanes: usize) {
            unsafe { output_tile::<$lanes>(src, dst, at, lanes) }
        }

        #[target_feature(enable = $feature)]
        unsafe fn $grad(src: *const f32, dst: *mut f32, at: Strides, lanes: usize) {
            unsafe { grad_tile::<$lanes>(src, dst, at, lanes) }
        }
    };
}

#[cfg(target_arch = "x86_64")]
tiles_for!(
    "avx512f",
    Avx512Lanes,
    avx512_input,
    avx512_output,
    avx512_grad
);
#[cfg(target_arch = "x86_64")]
tiles_for!("avx2", Avx2Lanes, avx2_input, avx2_output, avx2_grad);
#[cfg(target_arch = "aarch64")]
tiles_for!("neon", NeonLanes, neon_input, neon_output, neon_grad);
