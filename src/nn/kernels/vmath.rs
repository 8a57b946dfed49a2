//! Elementary functions written so that the compiler vectorises loops over them: the
//! library `expf`, `sinf` and `cosf` are a call per element, which made SiLU and the
//! time embeddings cost more than the matrix products around them.

/// 1.5 * 2^23: adding it rounds an f32 of magnitude below 2^22 to an integer, which
/// then sits in the low bits of the sum.
const SHIFTER: f32 = 12_582_912.0;

/// exp(v) to about 2 ulp for the range SiLU needs: 2^n · e^r with |r| <= ln2/2 and a
/// degree-6 polynomial for e^r.
#[inline(always)]
pub fn exp(v: f32) -> f32 {
    let v = v.clamp(-87.0, 88.0);
    // Round to nearest by the 1.5 * 2^23 trick: `round()` is a library call unless
    // the target has SSE4.1, and would stop the vectorisation.
    // The low bits of `shifted` hold n itself, in two's complement: 2^n is built from
    // them, as `n as i32` (a saturating conversion) would not vectorise.
    let shifted = v * std::f32::consts::LOG2_E + SHIFTER;
    let n = shifted - SHIFTER;
    // ln 2 in two parts (Cody and Waite), so that n ln 2 is subtracted exactly.
    let r = (v - n * 0.693_145_75) - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(shifted.to_bits().wrapping_add(127) << 23)
}

/// SiLU, x · sigmoid(x).
#[inline(always)]
pub fn silu(v: f32) -> f32 {
    v / (1.0 + exp(-v))
}

/// d silu / dx = s (1 + x (1 - s)) with s = sigmoid(x).
#[inline(always)]
pub fn silu_grad(v: f32) -> f32 {
    let s = 1.0 / (1.0 + exp(-v));
    s * (1.0 + v * (1.0 - s))
}

/// (sin v, cos v) for |v| up to about 10^5 (time embeddings reach 1000 rad): v is
/// reduced to r in [-pi/4, pi/4] by a multiple n of pi/2 subtracted in three exact
/// parts (Cody and Waite), then Taylor polynomials of degree 9 and 8 (error below
/// 2e-9 there) and the quadrant n mod 4 give both values.
pub fn sin_cos(v: f32) -> (f32, f32) {
    let shifted = v * std::f32::consts::FRAC_2_PI + SHIFTER;
    let n = shifted - SHIFTER;
    let r = ((v - n * 1.570_312_5) - n * 4.837_513e-4) - n * 7.549_79e-8;
    let r2 = r * r;
    let s = r
        * (1.0
            + r2 * (-1.0 / 6.0
                + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0 + r2 * (1.0 / 362_880.0)))));
    let c = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0 + r2 * (1.0 / 40_320.0))));
    let quadrant = shifted.to_bits() & 3;
    // Quadrants 1 and 3 swap the two; sin is negative in 2 and 3, cos in 1 and 2.
    let (s, c) = if quadrant & 1 == 1 { (c, s) } else { (s, c) };
    let sin = if quadrant & 2 == 2 { -s } else { s };
    let cos = if (quadrant + 1) & 2 == 2 { -c } else { c };
    (sin, cos)
}

/// Σ f(v) over `values`, in 16 f32 lanes (so the loop vectorises) totalled in f64.
#[inline(always)]
pub fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    lane_sum2(values, values, |v, _| (f(v), 0.0)).0
}

/// Σ f(a, b).0 and Σ f(a, b).1 over the pairs of `a` and `b`, as `lane_sum` does.
#[inline(always)]
pub fn lane_sum2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f64, f64) {
    const LANES: usize = 16;
    let (mut first, mut second) = ([0f32; LANES], [0f32; LANES]);
    let (chunks_a, chunks_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (tail_a, tail_b) = (chunks_a.remainder(), chunks_b.remainder());
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for l in 0..LANES {
            let (x, y) = f(ca[l], cb[l]);
            first[l] += x;
            second[l] += y;
        }
    }
    let total = |lanes: [f32; LANES]| lanes.iter().map(|&v| v as f64).sum::<f64>();
    let (mut s1, mut s2) = (total(first), total(second));
    for (&x, &y) in tail_a.iter().zip(tail_b) {
        let (x, y) = f(x, y);
        s1 += x as f64;
        s2 += y as f64;
    }
    (s1, s2)
}

/// `sums[j] += Σ_i rows[i][j]` over the rows of `rows`, each `sums.len()` wide: a
/// bias's gradient, or partial sums (one row) added up; compiled for AVX-512 where the
/// CPU has it.
pub fn add_rows(sums: &mut [f32], rows: &[f32]) {
    if sums.is_empty() {
        return;
    }
    with_wide_vectors(
        #[inline(always)]
        || {
            for row in rows.chunks_exact(sums.len()) {
                sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
            }
        },
    )
}

/// Runs `body` compiled for the widest vectors the kernels may use here (AVX-512F, else
/// AVX2 with FMA, see [`super::cpu`]): baseline x86-64 vectorises loops only four lanes
/// wide. `body` and what it calls must be `#[inline(always)]` (closures included), or
/// they keep the baseline instructions. No fused multiply-adds are introduced (Rust does
/// not contract `a * b + c`), so every level computes the same numbers.
#[inline(always)]
pub fn with_wide_vectors<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu::avx512() {
            #[target_feature(enable = "avx512f")]
            fn wide<R>(body: impl FnOnce() -> R) -> R {
                body()
            }
            // SAFETY: the CPU has AVX-512F (cpu::avx512 never exceeds what it has).
            return unsafe { wide(body) };
        }
        if super::cpu::avx2() {
            #[target_feature(enable = "avx2,fma")]
            fn wide<R>(body: impl FnOnce() -> R) -> R {
                body()
            }
            // SAFETY: the CPU has AVX2 and FMA (cpu::avx2 never exceeds what it has).
            return unsafe { wide(body) };
        }
    }
    body()
}

/// `values[i] = silu(values[i])`.
pub fn silu_in_place(values: &mut [f32]) {
    with_wide_vectors(
        #[inline(always)]
        || values.iter_mut().for_each(|v| *v = silu(*v)),
    )
}

/// The forward pass through SiLU keeping what its backward pass needs: replaces each
/// pre-activation v by v sigmoid(v) and writes sigmoid(v) to `sigmoids`, so that the
/// derivative is then two multiply-adds (`mul_silu_grad`) instead of another
/// exponential and division.
pub fn silu_keeping_sigmoid(values: &mut [f32], sigmoids: &mut [f32]) {
    assert_eq!(values.len(), sigmoids.len(), "one sigmoid per value");
    with_wide_vectors(
        #[inline(always)]
        || {
            for (v, s) in values.iter_mut().zip(sigmoids) {
                *s = 1.0 / (1.0 + exp(-*v));
                *v *= *s;
            }
        },
    )
}

/// `grads[i] *= silu'(v_i)`, the backward pass through SiLU, from what
/// `silu_keeping_sigmoid` kept: silu' = s (1 + v (1 - s)) = s + y (1 - s) with the
/// sigmoid s and the output y = v s.
pub fn mul_silu_grad(grads: &mut [f32], sigmoids: &[f32], outputs: &[f32]) {
    with_wide_vectors(
        #[inline(always)]
        || {
            for ((g, s), y) in grads.iter_mut().zip(sigmoids).zip(outputs) {
                *g *= s + y * (1.0 - s);
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_silu_are_accurate() {
        for i in -2000..=2000 {
            let v = i as f32 * 0.02;
            let rel = (exp(v) - v.exp()).abs() / v.exp();
            assert!(rel < 2e-6, "exp({v}): {} vs {}", exp(v), v.exp());
            let want = v / (1.0 + (-v).exp());
            assert!(
                (silu(v) - want).abs() <= 1e-6 * want.abs().max(1.0),
                "silu({v})"
            );
            let s = 1.0 / (1.0 + (-v as f64).exp());
            let grad = s * (1.0 + v as f64 * (1.0 - s));
            assert!((silu_grad(v) as f64 - grad).abs() < 1e-6, "silu'({v})");
        }
        // The slice versions (AVX-512 here) give the scalar functions' numbers.
        let values: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.02).collect();
        let mut activated = values.clone();
        silu_in_place(&mut activated);
        let (mut kept, mut sigmoids) = (values.clone(), vec![0.0; values.len()]);
        silu_keeping_sigmoid(&mut kept, &mut sigmoids);
        let mut grads = vec![2.0; values.len()];
        mul_silu_grad(&mut grads, &sigmoids, &kept);
        for (i, v) in values.iter().enumerate() {
            let want = silu(*v);
            assert!((activated[i] - want).abs() <= 1e-6 * want.abs().max(1.0));
            assert!((kept[i] - want).abs() <= 1e-6 * want.abs().max(1.0));
            assert!((sigmoids[i] - 1.0 / (1.0 + (-v).exp())).abs() <= 1e-6);
            assert!((grads[i] - 2.0 * silu_grad(*v)).abs() <= 1e-6, "silu'({v})");
        }
        assert_eq!(exp(-200.0), exp(-87.0));
        assert!(silu(-200.0).abs() < 1e-30 && silu(200.0) == 200.0);
    }

    /// Against f64 sin and cos of the same f32 argument, over every quadrant and the
    /// arguments the embeddings produce (|v| <= 1000, and beyond).
    #[test]
    fn sin_cos_is_accurate_over_a_wide_range() {
        for i in -400_000..=400_000 {
            let v = i as f32 * 0.0123;
            let (s, c) = sin_cos(v);
            let (ws, wc) = ((v as f64).sin(), (v as f64).cos());
            assert!(
                (s as f64 - ws).abs() < 1e-6 && (c as f64 - wc).abs() < 1e-6,
                "sin_cos({v}) = ({s}, {c}), want ({ws}, {wc})"
            );
        }
    }
}
