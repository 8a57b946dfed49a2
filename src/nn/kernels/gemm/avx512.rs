//! The AVX-512 micro-kernel: a 14 x 32 block of the output stays in 28 of the 32
//! vector registers across a depth block (the block's body is `vector::block`; the
//! driver, packing and blocking are in `blis`). The `gemm` crate reaches only AVX2 on
//! stable Rust, half of the vector width these CPUs have; AVX-512 intrinsics are stable
//! since Rust 1.89.

use super::blis::{BlockFn, MicroKernel};
use crate::nn::kernels::lanes::Avx512Lanes;

/// Rows of the output block the micro-kernel holds in registers.
const MR: usize = 14;

/// The kernel for CPUs with AVX-512F.
pub struct Avx512;

impl MicroKernel for Avx512 {
    const MR: usize = MR;
    /// Two vectors of 16.
    const NR: usize = 32;
    const KC: usize = 256;
    const MC: usize = MR * 12;

    fn available() -> bool {
        crate::nn::kernels::cpu::avx512()
    }

    fn block<const SOURCE: u8, const DIRECT_B: bool>() -> BlockFn {
        kernel::<SOURCE, DIRECT_B>
    }
}

super::vector::kernel_for!("avx512f", Avx512Lanes, MR);
