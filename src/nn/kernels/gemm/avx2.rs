//! The AVX2 + FMA micro-kernel: a 6 x 16 block of the output in 12 of the 16 vector
//! registers, two for a row of B and one for the broadcast of A (the block's body is
//! `vector::block`; the driver, packing and blocking are in `blis`). Against the `gemm`
//! crate's kernel of the same width it reads gathered views (a convolution's image as
//! its column matrix) in place and adds the bias and SiLU while the block is in
//! registers.

use super::blis::{BlockFn, MicroKernel};
use crate::nn::kernels::lanes::Avx2Lanes;

/// Rows of the output block the micro-kernel holds in registers.
const MR: usize = 6;

/// The kernel for CPUs with AVX2 and FMA.
pub struct Avx2;

impl MicroKernel for Avx2 {
    const MR: usize = MR;
    /// Two vectors of 8.
    const NR: usize = 16;
    const KC: usize = 256;
    const MC: usize = MR * 20;

    fn available() -> bool {
        crate::nn::kernels::cpu::avx2()
    }

    fn block<const SOURCE: u8, const DIRECT_B: bool>() -> BlockFn {
        kernel::<SOURCE, DIRECT_B>
    }
}

super::vector::kernel_for!("avx2,fma", Avx2Lanes, MR);
