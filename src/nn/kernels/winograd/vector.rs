//! The tile transforms on a vector of channels at a time: 16 with AVX-512, 8 with AVX2,
//! 4 with NEON. The transforms are tile.rs's combinations, written once over
//! `Arithmetic`, on the vectors of `lanes`; each instruction set gets thin wrappers
//! compiled for it, into which the generic code and its intrinsics are inlined.

use super::tile::{self, Strides, Transforms, VectorTiles};
use crate::nn::kernels::cpu::{self, Level};
use crate::nn::kernels::lanes::Lanes;
#[cfg(target_arch = "aarch64")]
use crate::nn::kernels::lanes::NeonLanes;
#[cfg(target_arch = "x86_64")]
use crate::nn::kernels::lanes::{Avx2Lanes, Avx512Lanes};

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
