//! Matrix products on plain f32 slices, for the CPU kernels that bypass candle's tensor
//! ops (convolutions, the fused MLP): they need products of strided views of their own
//! buffers without allocating a tensor for each. On x86-64 this crate's BLIS-style
//! driver (`blis`) runs with the micro-kernel of the instruction set in use (`cpu`):
//! AVX-512, AVX2 + FMA, or plain code. Elsewhere (aarch64), and for the slivers a
//! register block would mostly waste, the `gemm` crate runs: candle's CPU matmul uses
//! it, so it adds no code to the build, and it has its own NEON kernels.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod blis;
mod operands;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod vector;

pub use operands::{Activation, View};
use operands::{Epilogue, Sigmoids};

/// `out = lhs · rhs`, or `out += lhs · rhs` when `accumulate`; `out` is row-major
/// `lhs.rows` x `rhs.cols`. `threads > 1` splits the product over rayon's pool; kernels
/// that already run one product per thread pass 1.
pub fn matmul(out: &mut [f32], lhs: View, rhs: View, accumulate: bool, threads: usize) {
    let kernel = Kernel::for_shape(lhs, rhs);
    matmul_with(kernel, out, lhs, rhs, accumulate, Epilogue::NONE, threads)
}

/// `out = activation(lhs · rhs + bias)`, `bias` one number per column: a linear
/// layer's forward pass. This crate's kernels add the bias and apply the activation
/// to each output block while it is still in registers, which saves a pass over `out`
/// before the product (filling in the bias) and one after it (the activation).
pub fn matmul_bias(
    out: &mut [f32],
    lhs: View,
    rhs: View,
    bias: &[f32],
    activation: Activation,
    threads: usize,
) {
    assert_eq!(bias.len(), rhs.cols, "one bias per output column");
    let kernel = Kernel::for_shape(lhs, rhs);
    let epilogue = Epilogue {
        bias: Some(bias),
        activation,
        sigmoids: None,
    };
    matmul_with(kernel, out, lhs, rhs, false, epilogue, threads)
}

/// `out = silu(lhs · rhs + bias)` and `sigmoids = sigmoid(lhs · rhs + bias)`: the
/// forward pass of a SiLU layer that a backward pass follows. This crate's kernels
/// write both while the block is in registers; a separate pass over the product
/// (read the pre-activation, write both) was 7% of an MLP training step.
pub fn matmul_bias_silu_keeping_sigmoid(
    out: &mut [f32],
    sigmoids: &mut [f32],
    lhs: View,
    rhs: View,
    bias: &[f32],
    threads: usize,
) {
    assert_eq!(bias.len(), rhs.cols, "one bias per output column");
    let len = lhs.rows * rhs.cols;
    assert!(sigmoids.len() >= len, "one sigmoid per output number");
    let kernel = Kernel::for_shape(lhs, rhs);
    let epilogue = Epilogue {
        bias: Some(bias),
        activation: Activation::Silu,
        sigmoids: Some(Sigmoids(sigmoids[..len].as_mut_ptr())),
    };
    matmul_with(kernel, out, lhs, rhs, false, epilogue, threads)
}

/// Which code computes the products.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kernel {
    /// The AVX-512 micro-kernel, where the CPU has AVX-512.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// The AVX2 + FMA micro-kernel.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// The plain-code micro-kernel: x86-64 CPUs without AVX2, or a forced `scalar`.
    Scalar,
    /// The `gemm` crate (AVX2 + FMA on x86-64, NEON on aarch64, picked at run time).
    Portable,
    /// One dot product per output number, for products with fewer than 4 columns of
    /// contiguous rows and contiguous columns (an MLP's output layer): a kernel's
    /// register block would be mostly empty, and the `gemm` crate's set-up costs more
    /// than the arithmetic.
    Dots,
}

impl Kernel {
    /// The widest kernel of the level in use.
    fn best() -> Kernel {
        Kernel::of_level(crate::nn::kernels::cpu::level())
    }

    /// The micro-kernel compiled for an instruction-set level; for NEON, the `gemm`
    /// crate's (`cpu` never uses a level of another architecture).
    fn of_level(level: crate::nn::kernels::cpu::Level) -> Kernel {
        use crate::nn::kernels::cpu::Level;
        match level {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => Kernel::Avx512,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => Kernel::Avx2,
            Level::Scalar => Kernel::Scalar,
            _ => Kernel::Portable,
        }
    }

    /// The kernel for a product of these shapes.
    fn for_shape(lhs: View, rhs: View) -> Kernel {
        let best = Kernel::best();
        if rhs.cols < 4 && Kernel::dots_fit(lhs, rhs) {
            Kernel::Dots
        } else if (lhs.rows < 4 || rhs.cols < 4) && best != Kernel::Scalar {
            // One or two rows or columns (an MLP's input and output layers) would
            // fill a sliver of a wide kernel's register block. (The `gemm` crate
            // uses AVX2, so a forced `scalar` keeps the plain kernel.)
            Kernel::Portable
        } else {
            best
        }
    }

    /// Whether the dot-product kernel reads these views: rows of `lhs` and columns
    /// of `rhs` contiguous, neither gathered.
    fn dots_fit(lhs: View, rhs: View) -> bool {
        lhs.col_stride == 1
            && rhs.row_stride == 1
            && [
                lhs.row_offsets,
                lhs.col_offsets,
                rhs.row_offsets,
                rhs.col_offsets,
            ]
            .iter()
            .all(Option::is_none)
    }
}

/// Rows of the output the micro-kernel of the level in use holds at once: a product
/// whose rows are not a multiple of it computes part of a block for nothing (what
/// the Winograd tiling weighs). For the `gemm` crate, its widest f32 block (two
/// vectors of rows).
pub fn block_rows() -> usize {
    use blis::MicroKernel;
    match Kernel::best() {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => avx512::Avx512::MR,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => avx2::Avx2::MR,
        Kernel::Scalar => scalar::Scalar::MR,
        Kernel::Portable | Kernel::Dots => 8,
    }
}

fn matmul_with(
    kernel: Kernel,
    out: &mut [f32],
    lhs: View,
    rhs: View,
    accumulate: bool,
    epilogue: Epilogue,
    threads: usize,
) {
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
        // SAFETY: the whole output, which the sigmoids cover (`matmul_bias_silu_keeping_sigmoid`).
        unsafe { epilogue.apply(&mut out[..m * n], n) };
        return;
    }
    match kernel {
        // SAFETY: `best` and the tests pick a kernel only where it is available; the
        // views were checked in bounds and `out` holds m x n numbers.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe {
            blis::split::<avx512::Avx512>(out, lhs, rhs, accumulate, epilogue, threads)
        },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe {
            blis::split::<avx2::Avx2>(out, lhs, rhs, accumulate, epilogue, threads)
        },
        Kernel::Scalar => unsafe {
            blis::split::<scalar::Scalar>(out, lhs, rhs, accumulate, epilogue, threads)
        },
        Kernel::Portable => {
            portable(out, lhs, rhs, accumulate, threads);
            // SAFETY: as above.
            unsafe { epilogue.apply(&mut out[..m * n], n) };
        }
        Kernel::Dots => {
            assert!(Kernel::dots_fit(lhs, rhs), "the dot kernel's views");
            dots(&mut out[..m * n], lhs, rhs, accumulate);
            // SAFETY: as above.
            unsafe { epilogue.apply(&mut out[..m * n], n) };
        }
    }
}

/// `out[i][j] (+)= lhs row i · rhs column j`, in 16 lanes (compiled for AVX-512 where
/// the CPU has it), for views that `Kernel::dots_fit`.
fn dots(out: &mut [f32], lhs: View, rhs: View, accumulate: bool) {
    let (k, n) = (lhs.cols, rhs.cols);
    crate::nn::kernels::vmath::with_wide_vectors(
        #[inline(always)]
        || {
            for (i, out_row) in out.chunks_exact_mut(n).enumerate() {
                let row = &lhs.data[i * lhs.row_stride..][..k];
                for (j, v) in out_row.iter_mut().enumerate() {
                    let column = &rhs.data[j * rhs.col_stride..][..k];
                    let dot = crate::nn::kernels::vmath::lane_sum2(row, column, |a, b| (a * b, 0.0))
                        .0 as f32;
                    *v = if accumulate { *v + dot } else { dot };
                }
            }
        },
    )
}

fn portable(out: &mut [f32], lhs: View, rhs: View, accumulate: bool, threads: usize) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    // The `gemm` crate takes strided matrices only: gathered views are copied out.
    let gathered = |view: &View| view.row_offsets.is_some() || view.col_offsets.is_some();
    let (lhs_copy, rhs_copy);
    let lhs = if gathered(&lhs) {
        lhs_copy = lhs.dense();
        View::rows(&lhs_copy, m, k)
    } else {
        lhs
    };
    let rhs = if gathered(&rhs) {
        rhs_copy = rhs.dense();
        View::rows(&rhs_copy, k, n)
    } else {
        rhs
    };
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller's asserts keep every index gemm computes from the shapes and
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

    /// `len` seeded normal draws.
    fn numbers(len: usize, seed: usize, label: &str) -> Vec<f32> {
        crate::nn::kernels::random_tensor(&[len], seed as u64, label)
            .to_vec1::<f32>()
            .unwrap()
    }

    /// The general kernels this CPU runs: the portable one, the plain one, and the
    /// AVX2 and AVX-512 ones where the CPU has them (whatever level is in use).
    fn kernels_here() -> Vec<Kernel> {
        let mut kernels = vec![Kernel::Portable];
        for level in crate::nn::kernels::cpu::levels() {
            let kernel = Kernel::of_level(level);
            if !kernels.contains(&kernel) {
                kernels.push(kernel);
            }
        }
        kernels
    }

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

    /// Every kernel against the triple loop, on shapes that leave partial register
    /// blocks in both directions, span several depth and row blocks, read transposed
    /// views, and split over threads by rows and by columns.
    #[test]
    fn every_kernel_matches_the_triple_loop_on_ragged_shapes() {
        let kernels = kernels_here();
        let shapes = [
            (1, 1, 1),
            (3, 5, 2),
            (14, 32, 7),
            (15, 33, 300),
            // Over MC rows: B (4K numbers) read in place, and B (10K) packed.
            (200, 64, 64),
            (300, 40, 260),
            (64, 64, 700),
            (29, 200, 513),
            (2, 300, 40),
        ];
        for kernel in kernels {
            for (i, &(m, n, k)) in shapes.iter().enumerate() {
                let (a, b) = (numbers(m * k, i, "gemm/a"), numbers(k * n, i, "gemm/b"));
                for transposed in [false, true] {
                    let lhs = if transposed {
                        View::rows(&a, k, m).t()
                    } else {
                        View::rows(&a, m, k)
                    };
                    let rhs = if transposed {
                        View::rows(&b, n, k).t()
                    } else {
                        View::rows(&b, k, n)
                    };
                    let want = naive(lhs, rhs);
                    for threads in [1, 2, 3] {
                        let mut out = vec![1.0; m * n];
                        matmul_with(kernel, &mut out, lhs, rhs, true, Epilogue::NONE, threads);
                        for (x, y) in out.iter().zip(&want) {
                            let tol = 1e-4 * (k as f32).sqrt();
                            assert!(
                                (x - 1.0 - y).abs() < tol,
                                "{kernel:?} {m}x{n}x{k} t{transposed} {threads}: {x} vs 1 + {y}"
                            );
                        }
                        matmul_with(kernel, &mut out, lhs, rhs, false, Epilogue::NONE, threads);
                        for (x, y) in out.iter().zip(&want) {
                            assert!((x - y).abs() < 1e-4 * (k as f32).sqrt());
                        }
                    }
                }
            }
        }
    }

    /// A layer's forward pass, `matmul_bias`, on every kernel (the dot kernel too)
    /// against the triple loop plus the bias, then SiLU (keeping the sigmoids or not): on ragged blocks, several
    /// depth blocks (the bias must enter once, SiLU once, at the end), splits over
    /// threads by rows and by columns, and outputs 1 to 3 wide. The output starts as
    /// garbage, which must be overwritten.
    #[test]
    fn biased_products_and_their_activation_match_the_triple_loop() {
        let kernels = [kernels_here(), vec![Kernel::Dots]].concat();
        let shapes = [
            (1, 1, 1),
            (14, 32, 7),
            (15, 33, 300),
            (200, 64, 64),
            (5, 70, 700),
            (37, 2, 128),
            (600, 3, 34),
        ];
        for kernel in kernels {
            for (i, &(m, n, k)) in shapes.iter().enumerate() {
                let (a, w) = (numbers(m * k, i, "gemm/a"), numbers(n * k, i, "gemm/w"));
                let bias = numbers(n, i, "gemm/bias");
                // x · W^T with W stored [n, k], as linear layers keep their weights.
                let (lhs, rhs) = (View::rows(&a, m, k), View::rows(&w, n, k).t());
                let product = naive(lhs, rhs);
                for activation in [Activation::Identity, Activation::Silu] {
                    let want: Vec<f32> = (product.iter().enumerate())
                        .map(|(at, v)| v + bias[at % n])
                        .map(|v| match activation {
                            Activation::Identity => v,
                            Activation::Silu => crate::nn::kernels::vmath::silu(v),
                        })
                        .collect();
                    for threads in [1, 2] {
                        let mut out = vec![7.0; m * n];
                        let epilogue = Epilogue {
                            bias: Some(&bias),
                            activation,
                            sigmoids: None,
                        };
                        matmul_with(kernel, &mut out, lhs, rhs, false, epilogue, threads);
                        for (x, y) in out.iter().zip(&want) {
                            assert!(
                                (x - y).abs() < 1e-4 * (k as f32).sqrt(),
                                "{kernel:?} {m}x{n}x{k} {activation:?} {threads}: {x} vs {y}"
                            );
                        }
                    }
                }
                // SiLU keeping the sigmoids: the same outputs, and sigmoid(v) of each
                // pre-activation v in the same place of its own buffer.
                for threads in [1, 2] {
                    let (mut out, mut sigmoids) = (vec![7.0; m * n], vec![9.0; m * n]);
                    let epilogue = Epilogue {
                        bias: Some(&bias),
                        activation: Activation::Silu,
                        sigmoids: Some(Sigmoids(sigmoids.as_mut_ptr())),
                    };
                    matmul_with(kernel, &mut out, lhs, rhs, false, epilogue, threads);
                    for (at, v) in product.iter().enumerate() {
                        let v = v + bias[at % n];
                        let sigmoid = 1.0 / (1.0 + (-v).exp());
                        let tol = 1e-4 * (k as f32).sqrt();
                        assert!(
                            (sigmoids[at] - sigmoid).abs() < tol
                                && (out[at] - v * sigmoid).abs() < tol,
                            "{kernel:?} {m}x{n}x{k} {threads} at {at}: sigmoid {} and output {}, want {sigmoid} and {}",
                            sigmoids[at],
                            out[at],
                            v * sigmoid
                        );
                    }
                }
            }
        }
        // The public entry picks the dot kernel for narrow outputs and the others
        // elsewhere, with the same numbers.
        let a: Vec<f32> = (0..600).map(|i| (i as f32 * 0.1).sin()).collect();
        for n in [2, 8] {
            let (lhs, rhs) = (View::rows(&a, 300 / n, 2 * n), View::rows(&a, n, 2 * n).t());
            let bias = vec![0.5; n];
            let mut out = vec![0.0; 300 / n * n];
            matmul_bias(&mut out, lhs, rhs, &bias, Activation::Identity, 1);
            for (x, y) in out.iter().zip(naive(lhs, rhs)) {
                assert!((x - 0.5 - y).abs() < 1e-4);
            }
        }
        assert_eq!(
            Kernel::for_shape(View::rows(&a, 300, 2), View::rows(&a, 2, 2).t()),
            Kernel::Dots
        );
    }

    /// Gathered views (rows at arbitrary offsets, or their transposes: a convolution's
    /// image read as its column matrix) multiply like row-major copies of themselves,
    /// on every kernel, on both sides of the product, split over threads, with the
    /// partial last row panel that the in-place column reader must not overrun.
    #[test]
    fn gathered_views_multiply_like_their_dense_copies() {
        let kernels = kernels_here();
        let data: Vec<f32> = (0..40_000).map(|i| (i as f32 * 0.013).sin()).collect();
        for &(m, k, n) in &[(30, 300, 40), (100, 20, 33), (5, 7, 3), (200, 600, 64)] {
            // Overlapping, unordered rows, as a convolution's shifted planes are.
            let offsets_k: Vec<usize> = (0..k).map(|p| (p * 37) % (40_000 - 2 * m)).collect();
            let offsets_m: Vec<usize> = (0..m).map(|i| (i * 53) % (40_000 - k)).collect();
            let offsets_n: Vec<usize> = (0..n).map(|j| (j * 71) % (40_000 - k)).collect();
            let lhs_cases = [
                // A(i, p) = data[offsets_k[p] + i]: the forward product's operand.
                View::gathered(&data, &offsets_k, m).t(),
                // A(i, p) = data[offsets_m[i] + p]: the kernel gradient's operand.
                View::gathered(&data, &offsets_m, k),
            ];
            let rhs_cases = [
                View::rows(&data[..k * n], k, n),
                View::gathered(&data, &offsets_n, k).t(),
            ];
            for (a, b) in lhs_cases
                .iter()
                .flat_map(|a| rhs_cases.iter().map(move |b| (a, b)))
            {
                let (a_copy, b_copy) = (a.dense(), b.dense());
                let want = naive(View::rows(&a_copy, m, k), View::rows(&b_copy, k, n));
                for &kernel in &kernels {
                    for threads in [1, 2, 3] {
                        let mut out = vec![0.0; m * n];
                        matmul_with(kernel, &mut out, *a, *b, false, Epilogue::NONE, threads);
                        for (x, y) in out.iter().zip(&want) {
                            assert!(
                                (x - y).abs() < 1e-4 * (k as f32).sqrt(),
                                "{kernel:?} {m}x{n}x{k} {threads}: {x} vs {y}"
                            );
                        }
                    }
                }
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
