//! Every instruction-set level the CPU has, through the kernels' entry points,
//! against the scalar path (see `cpu`).

use crate::nn::kernels::cpu::{self, Level};

fn numbers(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// What the kernels compute through their public entry points at `level`.
fn outputs(level: Level) -> Vec<Vec<f32>> {
    use crate::nn::kernels::{gemm, transpose, vmath};
    cpu::with_level(level, || {
        let (m, k, n) = (37, 53, 29);
        let (a, b) = (numbers(m * k, 1), numbers(k * n, 2));
        let mut product = vec![0.0; m * n];
        gemm::matmul(
            &mut product,
            gemm::View::rows(&a, m, k),
            gemm::View::rows(&b, k, n),
            false,
            1,
        );
        let mut transposed = vec![0.0; k * m];
        transpose::transpose(&a, k, m, k, &mut transposed, m, None);
        let mut silu = numbers(1000, 3);
        vmath::silu_in_place(&mut silu);
        let mut sums = vec![0.0; 17];
        vmath::add_rows(&mut sums, &numbers(17 * 40, 4));
        let lane = vmath::with_wide_vectors(|| vmath::lane_sum(&numbers(999, 5), |v| v * v));
        vec![product, transposed, silu, sums, vec![lane as f32]]
    })
}

/// Every path the CPU has computes what the scalar path does: exactly for the
/// element-wise kernels and the transpose, to rounding for products (the AVX-512
/// kernel sums in another order than the `gemm` crate).
#[test]
fn every_level_the_cpu_has_computes_what_the_scalar_path_does() {
    let scalar = outputs(Level::Scalar);
    for level in cpu::levels() {
        let got = outputs(level);
        for (i, (g, s)) in got.iter().zip(&scalar).enumerate() {
            for (x, y) in g.iter().zip(s) {
                if i == 0 {
                    assert!(
                        (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                        "{level:?} product: {x} vs {y}"
                    );
                } else {
                    assert_eq!(x.to_bits(), y.to_bits(), "{level:?} output {i}: {x} vs {y}");
                }
            }
        }
    }
}
