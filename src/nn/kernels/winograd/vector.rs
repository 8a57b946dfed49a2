//! The tile transforms on a vector of channels at a time: 16 with AVX-512, 8 with AVX2,
//! 4 with NEON. The transforms are tile.rs's combinations, written once over
//! `Arithmetic`; each instruction set gets thin wrappers compiled for it, into which the
//! generic code and its intrinsics are inlined.

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::tile::{self, Arithmetic, Strides, Transforms, VectorTiles};
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

/// A vector of channels: its loads and stores, on top of the combinations'
/// arithmetic. Every method here requires the instruction set of the implementation;
/// a value exists only once one of them has run, so its arithmetic (safe methods)
/// runs only where the instruction set is present.
trait Lanes: Arithmetic {
    /// Which of the first lanes a load or store touches.
    type Mask: Copy;
    unsafe fn mask(lanes: usize) -> Self::Mask;
    /// The masked lanes from `src`, zero elsewhere.
    unsafe fn load(mask: Self::Mask, src: *const f32) -> Self;
    /// The masked lanes to `dst`; the others are not touched.
    unsafe fn store(self, mask: Self::Mask, dst: *mut f32);
    unsafe fn zero() -> Self;
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
}

#[cfg(target_arch = "x86_64")]
// SAFETY (of each method): `self` exists, so one of the unsafe constructors above has
// run, which the caller may do only where the CPU has the instructions.
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
}

#[cfg(target_arch = "x86_64")]
// SAFETY (of each method): `self` exists, so one of the unsafe constructors above has
// run, which the caller may do only where the CPU has the instructions.
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
}

#[cfg(target_arch = "aarch64")]
// SAFETY (of each method): `self` exists, so one of the unsafe constructors above has
// run, which the caller may do only where the CPU has the instructions.
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

/// C X C^T on one tile of `lanes` channels: `combine` (C) on the I x I vectors `x(i, j)`'s
/// columns, then on the rows of the result; the O x O results go to `y(i, j, value)`.
#[inline(always)]
unsafe fn separable<V: Lanes, const I: usize, const O: usize>(
    combine: impl Fn([V; I]) -> [V; O],
    x: impl Fn(usize, usize) -> V,
    mut y: impl FnMut(usize, usize, V),
) {
    let mut columns = [[unsafe { V::zero() }; I]; O];
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

/// One tile's transform to positions (an input tile's B^T d B, I = S; an output
/// gradient block's A dY A^T, I = S - 2) for `lanes` channels: the I x I pixels from
/// `src` on, the S x S positions to `dst` on.
#[inline(always)]
unsafe fn to_positions<V: Lanes, const I: usize, const S: usize>(
    combine: impl Fn([V; I]) -> [V; S],
    (src, dst, at, lanes): (*const f32, *mut f32, Strides, usize),
) {
    unsafe {
        let mask = V::mask(lanes);
        separable::<V, I, S>(
            combine,
            |i, j| V::load(mask, src.add(i * at.row + j * at.col)),
            |i, j, v| v.store(mask, dst.add((i * S + j) * at.position)),
        )
    }
}

/// One tile's output transform, A^T m A, for `lanes` channels: the S x S products from
/// `src` on, the O x O pixels to `dst` on.
#[inline(always)]
unsafe fn to_pixels<V: Lanes, const S: usize, const O: usize>(
    combine: impl Fn([V; S]) -> [V; O],
    (src, dst, at, lanes): (*const f32, *mut f32, Strides, usize),
) {
    unsafe {
        let mask = V::mask(lanes);
        separable::<V, S, O>(
            combine,
            |i, j| V::load(mask, src.add((i * S + j) * at.position)),
            |i, j, v| v.store(mask, dst.add(i * at.row + j * at.col)),
        )
    }
}

/// One transform compiled for one instruction set: `$name`, tile.rs's combination of
/// that name, through `$driver` (`to_positions` or `to_pixels`) from `$i` x `$i` to
/// `$o` x `$o` numbers. The combination goes in as a closure, which takes the
/// instruction set of the function it is written in: a function item would be called
/// through a shim compiled without it, and every intrinsic in it would become a call.
///
/// # Safety (of the function)
/// The CPU has the instruction set; every pixel's and position's first `lanes`
/// numbers (at most the vector's width) are readable or writable at the strides given.
macro_rules! tile_fn {
    ($feature:literal, $lanes:ty, $name:ident, $driver:ident, $i:literal, $o:literal) => {
        #[target_feature(enable = $feature)]
        unsafe fn $name(src: *const f32, dst: *mut f32, at: Strides, lanes: usize) {
            unsafe { $driver::<$lanes, $i, $o>(|v| tile::$name(v), (src, dst, at, lanes)) }
        }
    };
}

/// The transforms of both tilings compiled for one instruction set (`$feature`) on its
/// lanes (see `tile_fn`), as a `VectorTiles` of `$width` channels.
macro_rules! tiles_for {
    ($feature:literal, $lanes:ty, $width:literal) => {{
        tile_fn!($feature, $lanes, input2, to_positions, 4, 4);
        tile_fn!($feature, $lanes, grad2, to_positions, 2, 4);
        tile_fn!($feature, $lanes, output2, to_pixels, 4, 2);
        tile_fn!($feature, $lanes, input4, to_positions, 6, 6);
        tile_fn!($feature, $lanes, grad4, to_positions, 4, 6);
        tile_fn!($feature, $lanes, output4, to_pixels, 6, 4);
        VectorTiles {
            two: Transforms {
                input: input2,
                grad: grad2,
                output: output2,
            },
            four: Transforms {
                input: input4,
                grad: grad4,
                output: output4,
            },
            width: $width,
        }
    }};
}

#[cfg(target_arch = "x86_64")]
const AVX512: VectorTiles = tiles_for!("avx512f", Avx512Lanes, 16);

#[cfg(target_arch = "x86_64")]
const AVX2: VectorTiles = tiles_for!("avx2", Avx2Lanes, 8);

#[cfg(target_arch = "aarch64")]
const NEON: VectorTiles = tiles_for!("neon", NeonLanes, 4);
