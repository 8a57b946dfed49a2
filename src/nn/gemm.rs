//! Matrix products on plain f32 slices, for the CPU kernels that bypass candle's tensor
//! ops (convolutions, the fused MLP): they need products of strided views of their own
//! buffers without allocating a tensor for each. The `gemm` crate is the one candle's
//! CPU matmul uses, so this adds no code to the build.

/// The f32 numbers of a contiguous CPU tensor, as a custom op's `cpu_fwd` receives it
/// (every CPU kernel of this crate makes its inputs contiguous before the op).
pub fn contiguous_f32<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 tensors are supported on the CPU")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the tensor must be contiguous"),
    }
}

/// A read-only matrix over a slice: element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// A row-major `rows` x `cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> View<'a> {
        View {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The same numbers read as the transpose.
    pub fn t(self) -> View<'a> {
        View {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Whether every element lies inside `data` (what makes the product safe).
    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `out = lhs · rhs`, or `out += lhs · rhs` when `accumulate`; `out` is row-major
/// `lhs.rows` x `rhs.cols`. `threads > 1` splits the product over rayon's pool; kernels
/// that already run one product per thread pass 1.
pub fn matmul(out: &mut [f32], lhs: View, rhs: View, accumulate: bool, threads: usize) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(k, rhs.rows, "inner dimensions of a product");
    assert!(out.len() >= m * n && lhs.in_bounds() && rhs.in_bounds());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out[..m * n].fill(0.0);
        }
        return;
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every index gemm computes from the shapes and
    // strides inside the three slices, and `out` is borrowed mutably, so it aliases
    // neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop.
    fn naive(lhs: View, rhs: View) -> Vec<f32> {
        let mut out = vec![0.0; lhs.rows * rhs.cols];
        for i in 0..lhs.rows {
            for j in 0..rhs.cols {
                for p in 0..lhs.cols {
                    out[i * rhs.cols + j] += lhs.data[i * lhs.row_stride + p * lhs.col_stride]
                        * rhs.data[p * rhs.row_stride + j * rhs.col_stride];
                }
            }
        }
        out
    }

    #[test]
    fn products_of_views_and_transposes_match_the_triple_loop() {
        let a: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..63).map(|i| (i as f32 * 0.11).cos()).collect();
        let lhs = View::rows(&a, 5, 7);
        let rhs = View::rows(&b, 7, 9);
        for threads in [1, 2] {
            let mut out = vec![0.0; 45];
            matmul(&mut out, lhs, rhs, false, threads);
            for (x, y) in out.iter().zip(naive(lhs, rhs)) {
                assert!((x - y).abs() < 1e-5);
            }
            // Accumulating adds the product once more.
            matmul(&mut out, lhs, rhs, true, threads);
            for (x, y) in out.iter().zip(naive(lhs, rhs)) {
                assert!((x - 2.0 * y).abs() < 1e-5);
            }
        }
        // (b^T)(a^T) = (ab)^T.
        let mut out = vec![0.0; 45];
        matmul(&mut out, rhs.t(), lhs.t(), false, 1);
        let ab = naive(lhs, rhs);
        for i in 0..9 {
            for j in 0..5 {
                assert!((out[i * 5 + j] - ab[j * 9 + i]).abs() < 1e-5);
            }
        }
    }

    #[test]
    #[should_panic]
    fn a_view_past_its_slice_is_refused() {
        let a = vec![0.0; 10];
        let mut out = vec![0.0; 4];
        matmul(
            &mut out,
            View::rows(&a, 2, 6),
            View::rows(&a, 6, 2),
            false,
            1,
        );
    }
}
