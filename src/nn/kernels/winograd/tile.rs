//! What one tile transform is, shared by the scalar driver (winograd.rs) and the
//! vector forms (vector.rs): the two tilings, where a tile's numbers lie, the type of
//! a transform, and the transforms' combinations, written once over [`Arithmetic`] so
//! that one number and a vector of channels go through the very same operations.

use crate::nn::kernels::lanes::Arithmetic;

/// The tilings: F(2x2, 3x3), a 2x2 block of outputs from a 4x4 tile (16 products per
/// 4 outputs), and F(4x4, 3x3), a 4x4 block from a 6x6 tile (36 per 16: 2.25 per
/// output instead of 4, with fewer transformed numbers too). The larger tiles waste
/// more where they overhang a small image and give products of fewer rows, so
/// [`Tiling::for_image`] keeps the small one for small images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiling {
    Two,
    Four,
}

impl Tiling {
    /// The tiling for an `h` x `w` image, when the products' micro-kernel computes
    /// `block_rows` rows at a time: the one with less product work, counting each
    /// product's rows (one per tile) rounded up to whole blocks. So F(4x4) for MNIST's
    /// 28x28 everywhere, and for its 14x14 on AVX2 (16 tiles fill 3 blocks of 6 rows)
    /// but not on AVX-512 (2 blocks of 14, nearly half empty); images below 12 pixels
    /// keep F(2x2), where the 6x6 tiles overhang the image too far.
    pub fn for_image(h: usize, w: usize, block_rows: usize) -> Tiling {
        if h.min(w) < 12 {
            return Tiling::Two;
        }
        let work = |tiling: Tiling| {
            let tiles = h.div_ceil(tiling.out()) * w.div_ceil(tiling.out());
            tiling.positions() * tiles.div_ceil(block_rows.max(1)) * block_rows.max(1)
        };
        if work(Tiling::Four) < work(Tiling::Two) {
            Tiling::Four
        } else {
            Tiling::Two
        }
    }

    /// Side of the block of outputs a tile gives.
    pub fn out(self) -> usize {
        match self {
            Tiling::Two => 2,
            Tiling::Four => 4,
        }
    }

    /// Side of a tile of input (and of its transform): the block and the kernel's
    /// reach of one pixel on either side.
    pub fn side(self) -> usize {
        self.out() + 2
    }

    /// Positions of a transformed tile: one product each.
    pub fn positions(self) -> usize {
        self.side() * self.side()
    }
}

/// How far apart, in numbers, a tile's rows and columns of pixels and the positions of
/// its transform lie.
#[derive(Clone, Copy)]
pub struct Strides {
    pub row: usize,
    pub col: usize,
    pub position: usize,
}

/// One tile's transform on up to a vector of channels: (source, destination, strides,
/// channels).
pub type TileFn = unsafe fn(*const f32, *mut f32, Strides, usize);

/// The vector forms of the three transforms of one tiling.
#[derive(Clone, Copy)]
pub struct Transforms {
    pub input: TileFn,
    pub grad: TileFn,
    pub output: TileFn,
}

/// The vector forms of one instruction set (AVX-512 takes 16 channels at a time, AVX2
/// 8, NEON 4), for both tilings.
#[derive(Clone, Copy)]
pub struct VectorTiles {
    pub two: Transforms,
    pub four: Transforms,
    /// Channels per call (a call takes up to this many).
    pub width: usize,
}

impl VectorTiles {
    pub fn of(&self, tiling: Tiling) -> Transforms {
        match tiling {
            Tiling::Two => self.two,
            Tiling::Four => self.four,
        }
    }
}

/// F(2x2): B^T times a column d0..d3 of a tile (then a row of the result).
#[inline(always)]
pub fn input2<V: Arithmetic>([d0, d1, d2, d3]: [V; 4]) -> [V; 4] {
    [d0.sub(d2), d1.add(d2), d2.sub(d1), d1.sub(d3)]
}

/// F(2x2): A^T times four products.
#[inline(always)]
pub fn output2<V: Arithmetic>([m0, m1, m2, m3]: [V; 4]) -> [V; 2] {
    [m0.add(m1).add(m2), m1.sub(m2).sub(m3)]
}

/// F(2x2): A times two output gradients (the adjoint of `output2`).
#[inline(always)]
pub fn grad2<V: Arithmetic>([y0, y1]: [V; 2]) -> [V; 4] {
    [y0, y0.add(y1), y0.sub(y1), y1.scale(-1.0)]
}

/// F(2x2): G times three weights: g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2.
pub fn kernel2([g0, g1, g2]: [f32; 3]) -> [f32; 4] {
    [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2]
}

/// F(2x2): G^T times four numbers (the adjoint of `kernel2`).
pub fn kernel_grad2([u0, u1, u2, u3]: [f32; 4]) -> [f32; 3] {
    let (sum, difference) = (0.5 * (u1 + u2), 0.5 * (u1 - u2));
    [u0 + sum, difference, sum + u3]
}

/// F(4x4), interpolating at 0, 1, -1, 2, -2 and infinity (Lavin & Gray's matrices):
/// B^T times a column d0..d5, with the shared sums formed once.
#[inline(always)]
pub fn input4<V: Arithmetic>([d0, d1, d2, d3, d4, d5]: [V; 6]) -> [V; 6] {
    let (a, b) = (d1.add(d2).scale(4.0), d3.add(d4));
    let (c, e) = (d1.sub(d2).scale(4.0), d4.sub(d3));
    let (f, g) = (d4.sub(d2), d3.sub(d1).scale(2.0));
    [
        d0.scale(4.0).sub(d2.scale(5.0)).add(d4),
        b.sub(a),
        e.add(c),
        f.add(g),
        f.sub(g),
        d1.scale(4.0).sub(d3.scale(5.0)).add(d5),
    ]
}

/// F(4x4): A^T times six products.
#[inline(always)]
pub fn output4<V: Arithmetic>([m0, m1, m2, m3, m4, m5]: [V; 6]) -> [V; 4] {
    let (sum12, difference12) = (m1.add(m2), m1.sub(m2));
    let (sum34, difference34) = (m3.add(m4), m3.sub(m4));
    [
        m0.add(sum12).add(sum34),
        difference12.add(difference34.scale(2.0)),
        sum12.add(sum34.scale(4.0)),
        difference12.add(difference34.scale(8.0)).add(m5),
    ]
}

/// F(4x4): A times four output gradients (the adjoint of `output4`).
#[inline(always)]
pub fn grad4<V: Arithmetic>([y0, y1, y2, y3]: [V; 4]) -> [V; 6] {
    let (even, odd) = (y0.add(y2), y1.add(y3));
    let (even2, odd2) = (y0.add(y2.scale(4.0)), y1.scale(2.0).add(y3.scale(8.0)));
    [
        y0,
        even.add(odd),
        even.sub(odd),
        even2.add(odd2),
        even2.sub(odd2),
        y3,
    ]
}

/// F(4x4): G times three weights.
pub fn kernel4([g0, g1, g2]: [f32; 3]) -> [f32; 6] {
    let (outer, middle) = (g0 + g2, g1);
    let (outer_q, middle_q) = (g0 / 24.0 + g2 / 6.0, g1 / 12.0);
    [
        g0 / 4.0,
        -(outer + middle) / 6.0,
        -(outer - middle) / 6.0,
        outer_q + middle_q,
        outer_q - middle_q,
        g2,
    ]
}

/// F(4x4): G^T times six numbers (the adjoint of `kernel4`).
pub fn kernel_grad4([u0, u1, u2, u3, u4, u5]: [f32; 6]) -> [f32; 3] {
    let (sum12, difference12) = (u1 + u2, u1 - u2);
    let (sum34, difference34) = (u3 + u4, u3 - u4);
    [
        u0 / 4.0 - sum12 / 6.0 + sum34 / 24.0,
        difference12 / -6.0 + difference34 / 12.0,
        -sum12 / 6.0 + sum34 / 6.0 + u5,
    ]
}
