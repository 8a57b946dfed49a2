//! 3x3 convolutions with stride 1 and padding 1 (nearly every convolution of a U-Net)
//! by Winograd's minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", 2016), F(2x2, 3x3) or F(4x4, 3x3) (`Tiling`). With F(2x2), a 2x2
//! block of outputs from a 4x4 tile of input costs 16 multiplications per input and
//! output channel instead of 36; with F(4x4), a 4x4 block from a 6x6 tile costs 36
//! instead of 144. Each tile and each kernel is transformed once (additions and a few
//! multiplications by constants), the positions of the transformed tile become
//! independent products [tiles, cin] x [cin, cout], and a last transform folds the
//! products back into outputs. The input gradient is the same convolution with the
//! kernel flipped, and the kernel gradient is the adjoint of the three steps
//! (`KernelGrad`), so all three products of a training step get the saving
//! (BENCHMARKS.md has what it bought).
//!
//! The tiles are laid out with the channels innermost, so every transform is a few
//! operations on whole channel vectors and each product reads its operands in place.

#![allow(clippy::needless_range_loop)] // the transforms index tiles by row and column

use super::gemm::{View, matmul};
use super::transpose::transpose;

mod tile;
pub use tile::Tiling;
use tile::{Strides, TileFn, VectorTiles};

/// A kernel [cout, cin, 3, 3] transformed for `convolve`: U = G g G^T per (input,
/// output) channel pair, stored as one matrix [cin, cout] per position.
pub struct Kernel {
    cin: usize,
    cout: usize,
    tiling: Tiling,
    u: Vec<f32>,
}

impl Kernel {
    /// The transform for `tiling` of the kernel whose weight for output channel `o`,
    /// input channel `c` at offset (i, j) is `weight(o, c, i, j)` (a flipped and
    /// transposed kernel for an input gradient is then only another closure).
    pub fn new(
        cin: usize,
        cout: usize,
        tiling: Tiling,
        weight: impl Fn(usize, usize, usize, usize) -> f32,
    ) -> Kernel {
        let side = tiling.side();
        let mut u = vec![0f32; tiling.positions() * cin * cout];
        for o in 0..cout {
            for c in 0..cin {
                let x = |i, j| weight(o, c, i, j);
                let y =
                    |i: usize, j: usize, value| u[((i * side + j) * cin + c) * cout + o] = value;
                match tiling {
                    Tiling::Two => separable(tile::kernel2, x, y),
                    Tiling::Four => separable(tile::kernel4, x, y),
                }
            }
        }
        Kernel {
            cin,
            cout,
            tiling,
            u,
        }
    }

    /// Numbers of scratch `convolve` needs for an `h` x `w` image.
    pub fn scratch_len(&self, h: usize, w: usize) -> usize {
        Tiles::new(h, w, self.tiling).scratch_len(self.cin, self.cout)
    }

    /// y [cout, h, w] = x [cin, h, w] convolved with the kernel, zero-padded by 1, plus
    /// `bias[o]` on every pixel of output channel `o`. `scratch` (at least
    /// `scratch_len`) need not be zeroed; `threads` goes to each of the products.
    #[allow(clippy::too_many_arguments)]
    pub fn convolve(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        bias: &[f32],
        y: &mut [f32],
        scratch: &mut [f32],
        threads: usize,
    ) {
        self.convolve_with(x, (h, w), bias, y, scratch, threads, vectors())
    }

    /// `convolve`, with the transforms on a vector of channels at a time, or one.
    #[allow(clippy::too_many_arguments)]
    fn convolve_with(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        bias: &[f32],
        y: &mut [f32],
        scratch: &mut [f32],
        threads: usize,
        vector: Option<VectorTiles>,
    ) {
        let (cin, cout, positions) = (self.cin, self.cout, self.tiling.positions());
        assert!(
            x.len() == cin * h * w && y.len() == cout * h * w && bias.len() == cout,
            "winograd: image, output or bias does not fit the kernel"
        );
        let tiles = Tiles::new(h, w, self.tiling);
        let n = tiles.count();
        let (padded, rest) = scratch.split_at_mut(tiles.padded_len(cin));
        let (v, rest) = rest.split_at_mut(positions * n * cin);
        let (m, rest) = rest.split_at_mut(positions * n * cout);
        let out = &mut rest[..tiles.output_len(cout)];
        tiles.pad(x, cin, padded);
        let vector = vector.map(|t| (t.of(self.tiling), t.width));
        tiles.transform_input(padded, cin, v, vector.map(|(t, width)| (t.input, width)));
        for (position, product) in m.chunks_exact_mut(n * cout).enumerate() {
            let lhs = View::rows(&v[position * n * cin..][..n * cin], n, cin);
            let rhs = View::rows(&self.u[position * cin * cout..][..cin * cout], cin, cout);
            matmul(product, lhs, rhs, false, threads);
        }
        tiles.transform_output(m, cout, out, vector.map(|(t, width)| (t.output, width)));
        // The valid pixels of each output row, channel-major, plus the bias.
        let row_len = tiles.out_width() * cout;
        for (row, line) in out.chunks_exact(row_len).take(h).enumerate() {
            transpose(line, cout, w, cout, &mut y[row * w..], h * w, Some(bias));
        }
    }
}

/// The kernel's gradient, the adjoint of `convolve`: with Y = A^T [U . V] A per tile
/// and U = G g G^T, the gradient of g is G^T dU G, where dU at each position is the
/// sum over tiles of V^T times A dY A^T (the output gradient of the tile carried back
/// to its positions). The sum over a batch stays transformed, [positions][cin][cout],
/// until `KernelGrad::finish`.
pub struct KernelGrad {
    cin: usize,
    cout: usize,
    tiling: Tiling,
}

impl KernelGrad {
    pub fn new(cin: usize, cout: usize, tiling: Tiling) -> KernelGrad {
        KernelGrad { cin, cout, tiling }
    }

    /// Numbers of the transformed sum `accumulate` adds to.
    pub fn sum_len(&self) -> usize {
        self.tiling.positions() * self.cin * self.cout
    }

    /// Numbers of scratch `accumulate` needs for an `h` x `w` image.
    pub fn scratch_len(&self, h: usize, w: usize) -> usize {
        Tiles::new(h, w, self.tiling).scratch_len(self.cin, self.cout)
    }

    /// Adds image x [cin, h, w]'s share of the gradient, given the gradient grad_y
    /// [cout, h, w] of its output, to the transformed `sum`.
    #[allow(clippy::too_many_arguments)]
    pub fn accumulate(
        &self,
        x: &[f32],
        grad_y: &[f32],
        (h, w): (usize, usize),
        sum: &mut [f32],
        scratch: &mut [f32],
        threads: usize,
    ) {
        self.accumulate_with(x, grad_y, (h, w), sum, scratch, threads, vectors())
    }

    #[allow(clippy::too_many_arguments)]
    fn accumulate_with(
        &self,
        x: &[f32],
        grad_y: &[f32],
        (h, w): (usize, usize),
        sum: &mut [f32],
        scratch: &mut [f32],
        threads: usize,
        vector: Option<VectorTiles>,
    ) {
        let (cin, cout, positions) = (self.cin, self.cout, self.tiling.positions());
        assert!(
            x.len() == cin * h * w && grad_y.len() == cout * h * w && sum.len() == self.sum_len(),
            "winograd: image, gradient or sum does not fit the kernel"
        );
        let tiles = Tiles::new(h, w, self.tiling);
        let n = tiles.count();
        let (padded, rest) = scratch.split_at_mut(tiles.padded_len(cin));
        let (v, rest) = rest.split_at_mut(positions * n * cin);
        let (dm, rest) = rest.split_at_mut(positions * n * cout);
        let grad_tiles = &mut rest[..tiles.output_len(cout)];
        tiles.pad(x, cin, padded);
        let vector = vector.map(|t| (t.of(self.tiling), t.width));
        tiles.transform_input(padded, cin, v, vector.map(|(t, width)| (t.input, width)));
        tiles.spread(grad_y, cout, grad_tiles);
        tiles.transform_grad(
            grad_tiles,
            cout,
            dm,
            vector.map(|(t, width)| (t.grad, width)),
        );
        for (position, du) in sum.chunks_exact_mut(cin * cout).enumerate() {
            let lhs = View::rows(&v[position * n * cin..][..n * cin], n, cin).t();
            let rhs = View::rows(&dm[position * n * cout..][..n * cout], n, cout);
            matmul(du, lhs, rhs, true, threads);
        }
    }

    /// The gradient [cout, cin, 3, 3] from the transformed sum: G^T dU G per channel
    /// pair.
    pub fn finish(&self, sum: &[f32]) -> Vec<f32> {
        let (cin, cout, side) = (self.cin, self.cout, self.tiling.side());
        let mut grad = vec![0f32; cout * cin * 9];
        for o in 0..cout {
            for c in 0..cin {
                let x = |i: usize, j: usize| sum[((i * side + j) * cin + c) * cout + o];
                let y = |i, j, value| grad[((o * cin + c) * 3 + i) * 3 + j] = value;
                match self.tiling {
                    Tiling::Two => separable(tile::kernel_grad2, x, y),
                    Tiling::Four => separable(tile::kernel_grad4, x, y),
                }
            }
        }
        grad
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod vector;

/// The vector transforms of the level in use (none on x86-64 without AVX2, nor on
/// architectures other than x86-64 and aarch64).
fn vectors() -> Option<VectorTiles> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    return vector::here();
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    None
}

/// The blocks of outputs covering an h x w image, and the layouts around them.
#[derive(Clone, Copy)]
struct Tiles {
    h: usize,
    w: usize,
    tiling: Tiling,
    /// Side of a block of outputs (2 or 4).
    out: usize,
    /// Tiles down and across.
    rows: usize,
    cols: usize,
}

impl Tiles {
    fn new(h: usize, w: usize, tiling: Tiling) -> Tiles {
        let out = tiling.out();
        Tiles {
            h,
            w,
            tiling,
            out,
            rows: h.div_ceil(out),
            cols: w.div_ceil(out),
        }
    }

    fn count(&self) -> usize {
        self.rows * self.cols
    }

    /// Scratch of a convolution from `cin` to `cout` channels (forward or kernel
    /// gradient): the padded input, the transformed input and products (or output
    /// gradient), and the pixel-major output (or output gradient).
    fn scratch_len(&self, cin: usize, cout: usize) -> usize {
        self.padded_len(cin)
            + self.tiling.positions() * self.count() * (cin + cout)
            + self.output_len(cout)
    }

    /// Width of the padded input: a zero column, the tiles' columns, and one more
    /// (zero past the image) for the last tile's reach.
    fn padded_width(&self) -> usize {
        self.out * self.cols + 2
    }

    fn padded_len(&self, channels: usize) -> usize {
        (self.out * self.rows + 2) * self.padded_width() * channels
    }

    /// Width of the output before cropping: whole tiles.
    fn out_width(&self) -> usize {
        self.out * self.cols
    }

    fn output_len(&self, channels: usize) -> usize {
        self.out * self.rows * self.out_width() * channels
    }

    /// Writes x [channels, h, w] pixel-major into `padded` [rows, padded width,
    /// channels], the image one row and one column in from the top left, zeros around.
    fn pad(&self, x: &[f32], channels: usize, padded: &mut [f32]) {
        let line = self.padded_width() * channels;
        let (top, rest) = padded.split_at_mut(line);
        top.fill(0.0);
        for (row, dst) in rest.chunks_exact_mut(line).enumerate() {
            if row >= self.h {
                dst.fill(0.0);
                continue;
            }
            dst[..channels].fill(0.0);
            dst[(self.w + 1) * channels..].fill(0.0);
            let src = &x[row * self.w..];
            transpose(
                src,
                self.h * self.w,
                channels,
                self.w,
                &mut dst[channels..],
                channels,
                None,
            );
        }
    }

    /// V = B^T d B for every tile d of the padded input, into the matrices [tiles,
    /// channels] of `positions`.
    fn transform_input(
        &self,
        padded: &[f32],
        channels: usize,
        positions: &mut [f32],
        vector_tile: Option<(TileFn, usize)>,
    ) {
        let width = self.padded_width();
        match self.tiling {
            Tiling::Two => self.transform_tiles(
                padded,
                width,
                channels,
                positions,
                tile::input2,
                vector_tile,
            ),
            Tiling::Four => self.transform_tiles(
                padded,
                width,
                channels,
                positions,
                tile::input4,
                vector_tile,
            ),
        }
    }

    /// A dY A^T for every block dY of the spread output gradient, into the matrices
    /// [tiles, channels] of `positions`.
    fn transform_grad(
        &self,
        grad: &[f32],
        channels: usize,
        positions: &mut [f32],
        vector_tile: Option<(TileFn, usize)>,
    ) {
        let width = self.out_width();
        match self.tiling {
            Tiling::Two => {
                self.transform_tiles(grad, width, channels, positions, tile::grad2, vector_tile)
            }
            Tiling::Four => {
                self.transform_tiles(grad, width, channels, positions, tile::grad4, vector_tile)
            }
        }
    }

    /// Every tile of `pixels` (pixel-major, `width` pixels wide, a tile the I x I
    /// pixels from its corner on) transformed into the S x S matrices [tiles,
    /// channels] of `positions`: `combine` (B^T for an input tile, A for an output
    /// gradient's block) on each tile's columns and rows, or `vector_tile`, its vector
    /// form, on a vector of channels at a time.
    fn transform_tiles<const I: usize, const S: usize>(
        &self,
        pixels: &[f32],
        width: usize,
        channels: usize,
        positions: &mut [f32],
        combine: fn([f32; I]) -> [f32; S],
        vector_tile: Option<(TileFn, usize)>,
    ) {
        let out = self.out;
        // The last tile's I rows and columns of pixels, and every tile's positions.
        let (rows, cols) = (
            (out * self.rows + I).saturating_sub(out),
            out * self.cols + I - out,
        );
        assert!(
            S == self.tiling.side()
                && cols <= width
                && pixels.len() >= rows * width * channels
                && positions.len() >= S * S * self.count() * channels
        );
        self.for_each_tile(width, channels, |position, pixel, at| {
            if let Some((tile, width)) = vector_tile {
                for (c, lanes) in lanes(channels, width) {
                    // SAFETY: `vector_tile` comes from `vectors()` (or the tests'
                    // list of what the CPU has) for this tiling, so the CPU has its
                    // instructions and it reads I x I pixels and writes S x S
                    // positions; those lie inside the buffers (asserted above), and
                    // the mask keeps to the channels.
                    unsafe {
                        tile(
                            pixels[pixel + c..].as_ptr(),
                            positions[position + c..].as_mut_ptr(),
                            at,
                            lanes,
                        )
                    }
                }
                return;
            }
            for c in 0..channels {
                separable(
                    combine,
                    |i, j| pixels[pixel + i * at.row + j * at.col + c],
                    |i, j, value| positions[(i * S + j) * at.position + position + c] = value,
                );
            }
        })
    }

    /// Writes grad_y [channels, h, w] pixel-major into `grad` [rows, out width,
    /// channels], zero at the pixels of whole tiles that lie outside the image.
    fn spread(&self, grad_y: &[f32], channels: usize, grad: &mut [f32]) {
        let line = self.out_width() * channels;
        for (row, dst) in grad.chunks_exact_mut(line).enumerate() {
            if row >= self.h {
                dst.fill(0.0);
                continue;
            }
            dst[self.w * channels..].fill(0.0);
            let src = &grad_y[row * self.w..];
            transpose(src, self.h * self.w, channels, self.w, dst, channels, None);
        }
    }

    /// Y = A^T m A for every tile's products m (from `m`, laid out as `v`), written
    /// pixel-major into `out` [rows, out width, channels].
    fn transform_output(
        &self,
        m: &[f32],
        channels: usize,
        out: &mut [f32],
        vector_tile: Option<(TileFn, usize)>,
    ) {
        match self.tiling {
            Tiling::Two => self.transform_output_with(m, channels, out, tile::output2, vector_tile),
            Tiling::Four => {
                self.transform_output_with(m, channels, out, tile::output4, vector_tile)
            }
        }
    }

    /// `transform_output` with `combine` (A^T) from S products to O outputs.
    fn transform_output_with<const S: usize, const O: usize>(
        &self,
        m: &[f32],
        channels: usize,
        out: &mut [f32],
        combine: fn([f32; S]) -> [f32; O],
        vector_tile: Option<(TileFn, usize)>,
    ) {
        let n = self.count();
        assert!(
            S == self.tiling.side()
                && m.len() >= S * S * n * channels
                && out.len() >= self.output_len(channels)
        );
        self.for_each_tile(self.out_width(), channels, |position, pixel, at| {
            if let Some((tile, width)) = vector_tile {
                for (c, lanes) in lanes(channels, width) {
                    // SAFETY: as in `transform_tiles`, for `m` and the tile's O x O
                    // pixels of `out`.
                    unsafe {
                        tile(
                            m[position + c..].as_ptr(),
                            out[pixel + c..].as_mut_ptr(),
                            at,
                            lanes,
                        )
                    }
                }
                return;
            }
            for c in 0..channels {
                separable(
                    combine,
                    |i, j| m[(i * S + j) * at.position + position + c],
                    |i, j, value| out[pixel + i * at.row + j * at.col + c] = value,
                );
            }
        })
    }

    /// Calls `each(position, pixel, strides)` for every tile: `position` the offset
    /// of its first position in the matrices [tiles, channels], `pixel` that of its
    /// top-left pixel in a pixel-major buffer `width` pixels wide (the padded input,
    /// or the output and its gradient), and the strides of both.
    fn for_each_tile(
        &self,
        width: usize,
        channels: usize,
        mut each: impl FnMut(usize, usize, Strides),
    ) {
        let strides = Strides {
            row: width * channels,
            col: channels,
            position: self.count() * channels,
        };
        for tile in 0..self.count() {
            let (ty, tx) = (tile / self.cols, tile % self.cols);
            each(
                tile * channels,
                (self.out * (ty * width + tx)) * channels,
                strides,
            );
        }
    }
}

/// The runs of at most `width` channels the vector transforms take: (first, count).
fn lanes(channels: usize, width: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..channels)
        .step_by(width)
        .map(move |c| (c, width.min(channels - c)))
}

/// One channel of a tile through a separable transform, C X C^T: `combine` (C) on
/// each column of the I x I input `x(i, j)`, then on each row of the result; the O x O
/// results go to `y(i, j, value)`. The scalar form of every transform here.
fn separable<const I: usize, const O: usize>(
    combine: fn([f32; I]) -> [f32; O],
    x: impl Fn(usize, usize) -> f32,
    mut y: impl FnMut(usize, usize, f32),
) {
    let mut columns = [[0f32; I]; O];
    for j in 0..I {
        let mut column = [0f32; I];
        for (i, value) in column.iter_mut().enumerate() {
            *value = x(i, j);
        }
        for (i, value) in combine(column).into_iter().enumerate() {
            columns[i][j] = value;
        }
    }
    for (i, row) in columns.iter().enumerate() {
        for (j, value) in combine(*row).into_iter().enumerate() {
            y(i, j, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scalar transforms and every vector form this CPU has, whatever level is in
    /// use, with the channels each takes at a time.
    fn every_vector_form() -> Vec<(Option<VectorTiles>, usize)> {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        let vector = vector::all_here();
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let vector: Vec<VectorTiles> = Vec::new();
        std::iter::once((None, 1))
            .chain(vector.into_iter().map(|t| (Some(t), t.width)))
            .collect()
    }

    /// Both tilings with each of `every_vector_form`.
    fn every_form() -> Vec<(Tiling, (Option<VectorTiles>, usize))> {
        [Tiling::Two, Tiling::Four]
            .into_iter()
            .flat_map(|tiling| {
                every_vector_form()
                    .into_iter()
                    .map(move |form| (tiling, form))
            })
            .collect()
    }

    /// The error allowed, relative to the largest output: F(4x4)'s transforms scale
    /// numbers by up to 8 and 1/24 (its points 2 and -2), so it rounds more than
    /// F(2x2) does.
    fn tolerance(tiling: Tiling) -> f32 {
        match tiling {
            Tiling::Two => 1e-5,
            Tiling::Four => 4e-5,
        }
    }
    use crate::nn::kernels::normals;

    /// The definition: y[o][p][q] = bias[o] + sum over c, i, j of
    /// kernel[o][c][i][j] x[c][p + i - 1][q + j - 1], zero outside the image.
    fn direct(
        x: &[f32],
        kernel: &[f32],
        bias: &[f32],
        (cin, cout, h, w): (usize, usize, usize, usize),
    ) -> Vec<f32> {
        let mut y = vec![0f32; cout * h * w];
        for o in 0..cout {
            for p in 0..h {
                for q in 0..w {
                    let mut sum = bias[o] as f64;
                    for c in 0..cin {
                        for i in 0..3 {
                            for j in 0..3 {
                                let (r, s) = ((p + i).wrapping_sub(1), (q + j).wrapping_sub(1));
                                if r < h && s < w {
                                    sum += (kernel[((o * cin + c) * 3 + i) * 3 + j]
                                        * x[(c * h + r) * w + s])
                                        as f64;
                                }
                            }
                        }
                    }
                    y[(o * h + p) * w + q] = sum as f32;
                }
            }
        }
        y
    }

    /// Both transform paths, one and two threads, against the definition: odd and even
    /// sizes (a last tile half outside the image), channel counts below, at and across
    /// the 16 lanes, and scratch and output full of NaNs that must all be overwritten.
    #[test]
    fn winograd_convolution_matches_the_definition() {
        let cases = [
            (4, 6, 7, 7),
            (17, 33, 6, 9),
            (32, 16, 28, 28),
            (5, 4, 1, 3),
            (16, 1, 2, 2),
        ];
        for (k, &(cin, cout, h, w)) in cases.iter().enumerate() {
            let x = normals(k as u64, "winograd/x", cin * h * w);
            let weights = normals(k as u64, "winograd/weights", cout * cin * 9);
            let bias = normals(k as u64, "winograd/bias", cout);
            let expected = direct(&x, &weights, &bias, (cin, cout, h, w));
            let scale = expected.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (tiling, (vectors, width)) in every_form() {
                let kernel = Kernel::new(cin, cout, tiling, |o, c, i, j| {
                    weights[((o * cin + c) * 3 + i) * 3 + j]
                });
                for threads in [1, 2] {
                    let mut scratch = vec![f32::NAN; kernel.scratch_len(h, w)];
                    let mut y = vec![f32::NAN; cout * h * w];
                    kernel.convolve_with(&x, (h, w), &bias, &mut y, &mut scratch, threads, vectors);
                    let error = y
                        .iter()
                        .zip(&expected)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        error <= tolerance(tiling) * scale,
                        "case {k} ({cin}->{cout}, {h}x{w}), {tiling:?}, {width} channels at a time, threads {threads}: error {error}"
                    );
                }
            }
        }
    }

    /// The kernel gradient summed over two images, both transform paths, one and two
    /// threads, against its definition: the sum over images and pixels of
    /// grad_y[o][p][q] x[c][p + i - 1][q + j - 1].
    #[test]
    fn the_kernel_gradient_matches_the_definition() {
        let cases = [(4, 6, 7, 7), (17, 33, 6, 9), (32, 16, 14, 14), (5, 4, 1, 3)];
        for (k, &(cin, cout, h, w)) in cases.iter().enumerate() {
            let images: Vec<(Vec<f32>, Vec<f32>)> = (0..2u64)
                .map(|i| {
                    let seed = 2 * k as u64 + i;
                    (
                        normals(seed, "winograd/grad/x", cin * h * w),
                        normals(seed, "winograd/grad/dy", cout * h * w),
                    )
                })
                .collect();
            let mut expected = vec![0f64; cout * cin * 9];
            for (x, gy) in &images {
                for o in 0..cout {
                    for c in 0..cin {
                        for (i, j) in (0..3).flat_map(|i| (0..3).map(move |j| (i, j))) {
                            let mut sum = 0f64;
                            for p in 0..h {
                                for q in 0..w {
                                    let (r, s) = ((p + i).wrapping_sub(1), (q + j).wrapping_sub(1));
                                    if r < h && s < w {
                                        sum += (gy[(o * h + p) * w + q] * x[(c * h + r) * w + s])
                                            as f64;
                                    }
                                }
                            }
                            expected[((o * cin + c) * 3 + i) * 3 + j] += sum;
                        }
                    }
                }
            }
            let scale = expected.iter().fold(1f64, |m, v| m.max(v.abs())) as f32;
            for (tiling, (vectors, width)) in every_form() {
                let grad = KernelGrad::new(cin, cout, tiling);
                for threads in [1, 2] {
                    let mut sum = vec![0f32; grad.sum_len()];
                    let mut scratch = vec![f32::NAN; grad.scratch_len(h, w)];
                    for (x, gy) in &images {
                        grad.accumulate_with(
                            x,
                            gy,
                            (h, w),
                            &mut sum,
                            &mut scratch,
                            threads,
                            vectors,
                        );
                    }
                    let ours = grad.finish(&sum);
                    let error = ours
                        .iter()
                        .zip(&expected)
                        .map(|(a, b)| (*a - *b as f32).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        error <= tolerance(tiling) * scale,
                        "case {k} ({cin}->{cout}, {h}x{w}), {tiling:?}, {width} channels at a time, threads {threads}: error {error}"
                    );
                }
            }
        }
    }

    /// The tiling follows the product work, blocks of rows included: F(4x4) at 28x28
    /// for every kernel, at 14x14 only where 16 tiles fill the blocks well (6 rows,
    /// not 14), never below 12 pixels.
    #[test]
    fn the_tiling_weighs_the_products_blocks() {
        let choices = [
            ((28, 28, 14), Tiling::Four),
            ((28, 28, 6), Tiling::Four),
            ((14, 14, 14), Tiling::Two),
            ((14, 14, 6), Tiling::Four),
            ((14, 14, 4), Tiling::Four),
            ((7, 7, 6), Tiling::Two),
            ((11, 64, 6), Tiling::Two),
            ((32, 32, 8), Tiling::Four),
        ];
        for ((h, w, rows), want) in choices {
            assert_eq!(
                Tiling::for_image(h, w, rows),
                want,
                "{h}x{w}, blocks of {rows} rows"
            );
        }
    }

    #[test]
    #[should_panic(expected = "does not fit the kernel")]
    fn an_image_of_the_wrong_size_is_refused() {
        let kernel = Kernel::new(2, 3, Tiling::Four, |_, _, _, _| 1.0);
        let mut scratch = vec![0f32; kernel.scratch_len(4, 4)];
        kernel.convolve(
            &[0.0; 2 * 16],
            4,
            4,
            &[0.0; 3],
            &mut [0.0; 3 * 15],
            &mut scratch,
            1,
        );
    }
}
