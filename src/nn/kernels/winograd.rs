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
use super::transpose::{Lines, transpose};

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

    /// Numbers of scratch `convolve` needs for `images` `h` x `w` images.
    pub fn scratch_len(&self, h: usize, w: usize, images: usize) -> usize {
        Tiles::new(h, w, self.tiling, images).scratch_len(self.cin, self.cout)
    }

    /// y [images, cout, h, w] = x [images, cin, h, w] convolved with the kernel,
    /// zero-padded by 1, plus `bias[i][o]` on every pixel of image `i`'s output
    /// channel `o` (bias [images, cout]). The images' tiles go through one product per
    /// position, so a few small images fill the micro-kernel's blocks of rows as one
    /// large image does. `scratch` (at least `scratch_len`) need not be zeroed;
    /// `threads` goes to each of the products.
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
        let images = bias.len() / cout.max(1);
        assert!(
            x.len() == images * cin * h * w
                && y.len() == images * cout * h * w
                && bias.len() == images * cout,
            "winograd: images, outputs or biases do not fit the kernel"
        );
        let tiles = Tiles::new(h, w, self.tiling, images);
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
        // The valid pixels of each image, channel-major, plus the bias.
        let inside = Lines::image(cout, w, tiles.out_width() * cout);
        let image_out = out.chunks_exact(tiles.output_image_len(cout));
        let each = image_out.zip(y.chunks_exact_mut(cout * h * w));
        for ((out, y), bias) in each.zip(bias.chunks_exact(cout)) {
            transpose(out, inside, h * w, cout, y, h * w, Some(bias));
        }
    }
}

/// Rows a position's product should have at least for the micro-kernel's blocks of
/// rows to be nearly full and its per-product set-up to be small beside the work.
/// More rows make the transformed tiles outgrow the caches: 128 and 512 measured
/// slower than 64 (BENCHMARKS.md).
const PRODUCT_ROWS: usize = 64;

/// How many of a batch's `h` x `w` images go through one product per position
/// (`Kernel::convolve`, `KernelGrad::accumulate`), when the batch is spread over
/// `threads` threads: the fewest that give `PRODUCT_ROWS` tiles, among the divisors of
/// each thread's share, so that every thread gets whole groups of the same size.
pub fn images_per_product(
    tiling: Tiling,
    (h, w): (usize, usize),
    batch: usize,
    threads: usize,
) -> usize {
    let share = batch.div_ceil(threads.max(1)).max(1);
    let tiles = Tiles::new(h, w, tiling, 1).per_image().max(1);
    (1..=share)
        .filter(|&images| share.is_multiple_of(images))
        .find(|images| images * tiles >= PRODUCT_ROWS)
        .unwrap_or(share)
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

    /// Numbers of scratch `accumulate` needs for `images` `h` x `w` images.
    pub fn scratch_len(&self, h: usize, w: usize, images: usize) -> usize {
        Tiles::new(h, w, self.tiling, images).scratch_len(self.cin, self.cout)
    }

    /// Adds the share of the gradient of images x [images, cin, h, w], given the
    /// gradient grad_y [images, cout, h, w] of their outputs, to the transformed
    /// `sum`: one product per position over all the images' tiles, deep enough that
    /// `sum` is loaded and stored once for several images.
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
        let images = x.len() / (cin * h * w).max(1);
        assert!(
            x.len() == images * cin * h * w
                && grad_y.len() == images * cout * h * w
                && sum.len() == self.sum_len(),
            "winograd: images, gradients or sum do not fit the kernel"
        );
        let tiles = Tiles::new(h, w, self.tiling, images);
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

/// The blocks of outputs covering `images` h x w images, and the layouts around them:
/// each image's buffers follow one another, and its tiles follow the previous image's
/// in the matrices of the positions, so one product per position serves them all.
#[derive(Clone, Copy)]
struct Tiles {
    h: usize,
    w: usize,
    tiling: Tiling,
    /// Tiles down and across one image.
    rows: usize,
    cols: usize,
    images: usize,
}

impl Tiles {
    fn new(h: usize, w: usize, tiling: Tiling, images: usize) -> Tiles {
        let out = tiling.out();
        Tiles {
            h,
            w,
            tiling,
            rows: h.div_ceil(out),
            cols: w.div_ceil(out),
            images,
        }
    }

    /// Tiles of one image.
    fn per_image(&self) -> usize {
        self.rows * self.cols
    }

    /// Tiles of all the images: the rows of each position's matrix.
    fn count(&self) -> usize {
        self.per_image() * self.images
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
        self.tiling.out() * self.cols + 2
    }

    /// Numbers of one image's padded input.
    fn padded_image_len(&self, channels: usize) -> usize {
        (self.tiling.out() * self.rows + 2) * self.padded_width() * channels
    }

    fn padded_len(&self, channels: usize) -> usize {
        self.padded_image_len(channels) * self.images
    }

    /// Width of the output before cropping: whole tiles.
    fn out_width(&self) -> usize {
        self.tiling.out() * self.cols
    }

    /// Numbers of one image's pixel-major output (whole tiles).
    fn output_image_len(&self, channels: usize) -> usize {
        self.tiling.out() * self.rows * self.out_width() * channels
    }

    fn output_len(&self, channels: usize) -> usize {
        self.output_image_len(channels) * self.images
    }

    /// Writes each image of x [images, channels, h, w] pixel-major into its part of
    /// `padded` [images, rows, padded width, channels], one row and one column in from
    /// the top left, zeros around.
    fn pad(&self, x: &[f32], channels: usize, padded: &mut [f32]) {
        let image_len = self.padded_image_len(channels);
        let images = padded[..self.padded_len(channels)].chunks_exact_mut(image_len);
        for (padded, x) in images.zip(x.chunks_exact(channels * self.h * self.w)) {
            self.pad_image(x, channels, padded);
        }
    }

    fn pad_image(&self, x: &[f32], channels: usize, padded: &mut [f32]) {
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
        }
        // The whole image at once, its pixels one after another in the padded rows.
        let (pixels, inside) = (self.h * self.w, Lines::image(channels, self.w, line));
        transpose(
            x,
            pixels,
            channels,
            pixels,
            &mut rest[channels..],
            inside,
            None,
        );
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
        let layout = (self.padded_width(), self.padded_image_len(channels));
        match self.tiling {
            Tiling::Two => self.transform_tiles(
                padded,
                layout,
                channels,
                positions,
                tile::input2,
                vector_tile,
            ),
            Tiling::Four => self.transform_tiles(
                padded,
                layout,
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
        let layout = (self.out_width(), self.output_image_len(channels));
        match self.tiling {
            Tiling::Two => {
                self.transform_tiles(grad, layout, channels, positions, tile::grad2, vector_tile)
            }
            Tiling::Four => {
                self.transform_tiles(grad, layout, channels, positions, tile::grad4, vector_tile)
            }
        }
    }

    /// Every tile of `pixels` (pixel-major, `width` pixels wide, each image
    /// `image_len` numbers after the previous, a tile the I x I pixels from its corner
    /// on) transformed into the S x S matrices [tiles,
    /// channels] of `positions`: `combine` (B^T for an input tile, A for an output
    /// gradient's block) on each tile's columns and rows, or `vector_tile`, its vector
    /// form, on a vector of channels at a time.
    fn transform_tiles<const I: usize, const S: usize>(
        &self,
        pixels: &[f32],
        (width, image_len): (usize, usize),
        channels: usize,
        positions: &mut [f32],
        combine: fn([f32; I]) -> [f32; S],
        vector_tile: Option<(TileFn, usize)>,
    ) {
        let out = self.tiling.out();
        // The last tile's I rows and columns of pixels, and every tile's positions.
        let (rows, cols) = (
            (out * self.rows + I).saturating_sub(out),
            out * self.cols + I - out,
        );
        assert!(
            S == self.tiling.side()
                && cols <= width
                && rows * width * channels <= image_len
                && pixels.len() >= image_len * self.images
                && positions.len() >= S * S * self.count() * channels
        );
        self.for_each_tile((width, image_len), channels, |position, pixel, at| {
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

    /// Writes each image of grad_y [images, channels, h, w] pixel-major into its part
    /// of `grad` [images, rows, out width, channels], zero at the pixels of whole tiles
    /// that lie outside the image.
    fn spread(&self, grad_y: &[f32], channels: usize, grad: &mut [f32]) {
        let image_len = self.output_image_len(channels);
        let images = grad[..self.output_len(channels)].chunks_exact_mut(image_len);
        for (grad, grad_y) in images.zip(grad_y.chunks_exact(channels * self.h * self.w)) {
            self.spread_image(grad_y, channels, grad);
        }
    }

    fn spread_image(&self, grad_y: &[f32], channels: usize, grad: &mut [f32]) {
        let line = self.out_width() * channels;
        for (row, dst) in grad.chunks_exact_mut(line).enumerate() {
            if row >= self.h {
                dst.fill(0.0);
                continue;
            }
            dst[self.w * channels..].fill(0.0);
        }
        let (pixels, inside) = (self.h * self.w, Lines::image(channels, self.w, line));
        transpose(grad_y, pixels, channels, pixels, grad, inside, None);
    }

    /// Y = A^T m A for every tile's products m (from `m`, laid out as `v`), written
    /// pixel-major into `out` [images, rows, out width, channels].
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
        let layout = (self.out_width(), self.output_image_len(channels));
        self.for_each_tile(layout, channels, |position, pixel, at| {
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
    /// top-left pixel in a pixel-major buffer `width` pixels wide with each image
    /// `image_len` numbers after the previous (the padded input, or the output and its
    /// gradient), and the strides of both.
    fn for_each_tile(
        &self,
        (width, image_len): (usize, usize),
        channels: usize,
        mut each: impl FnMut(usize, usize, Strides),
    ) {
        let strides = Strides {
            row: width * channels,
            col: channels,
            position: self.count() * channels,
        };
        for tile in 0..self.count() {
            let (image, tile_in_image) = (tile / self.per_image(), tile % self.per_image());
            let (ty, tx) = (tile_in_image / self.cols, tile_in_image % self.cols);
            each(
                tile * channels,
                image * image_len + (self.tiling.out() * (ty * width + tx)) * channels,
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
    use crate::nn::kernels::{normals, worst};

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

    /// Both transform paths, one and two threads, one image and three at once (each
    /// with its own bias), against the definition: odd and even sizes (a last tile half
    /// outside the image), channel counts below, at and across the 16 lanes, and
    /// scratch and output full of NaNs that must all be overwritten.
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
            let images = 3;
            let x = normals(k as u64, "winograd/x", images * cin * h * w);
            let weights = normals(k as u64, "winograd/weights", cout * cin * 9);
            let bias = normals(k as u64, "winograd/bias", images * cout);
            let expected: Vec<f32> = (0..images)
                .flat_map(|i| {
                    let x = &x[i * cin * h * w..][..cin * h * w];
                    direct(x, &weights, &bias[i * cout..][..cout], (cin, cout, h, w))
                })
                .collect();
            let scale = expected.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (tiling, (vectors, width)) in every_form() {
                let kernel = Kernel::new(cin, cout, tiling, |o, c, i, j| {
                    weights[((o * cin + c) * 3 + i) * 3 + j]
                });
                for (threads, at_once) in [(1, 1), (2, 1), (1, 3), (2, 3)] {
                    let mut scratch = vec![f32::NAN; kernel.scratch_len(h, w, at_once)];
                    let mut y = vec![f32::NAN; images * cout * h * w];
                    let groups = x
                        .chunks(at_once * cin * h * w)
                        .zip(y.chunks_mut(at_once * cout * h * w))
                        .zip(bias.chunks(at_once * cout));
                    for ((x, y), bias) in groups {
                        kernel.convolve_with(x, (h, w), bias, y, &mut scratch, threads, vectors);
                    }
                    let error = y
                        .iter()
                        .zip(&expected)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, worst);
                    assert!(
                        error <= tolerance(tiling) * scale,
                        "case {k} ({cin}->{cout}, {h}x{w}), {tiling:?}, {width} channels at a time, threads {threads}, {at_once} images at once: error {error}"
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
            let x: Vec<f32> = images.iter().flat_map(|(x, _)| x.clone()).collect();
            let dy: Vec<f32> = images.iter().flat_map(|(_, dy)| dy.clone()).collect();
            for (tiling, (vectors, width)) in every_form() {
                let grad = KernelGrad::new(cin, cout, tiling);
                for (threads, at_once) in [(1, 1), (2, 1), (1, 2), (2, 2)] {
                    let mut sum = vec![0f32; grad.sum_len()];
                    let mut scratch = vec![f32::NAN; grad.scratch_len(h, w, at_once)];
                    let groups = x
                        .chunks(at_once * cin * h * w)
                        .zip(dy.chunks(at_once * cout * h * w));
                    for (x, gy) in groups {
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
                        .fold(0f32, worst);
                    assert!(
                        error <= tolerance(tiling) * scale,
                        "case {k} ({cin}->{cout}, {h}x{w}), {tiling:?}, {width} channels at a time, threads {threads}, {at_once} images at once: error {error}"
                    );
                }
            }
        }
    }

    /// Groups of images: the fewest for 64 rows that split each thread's share
    /// evenly, the whole share where no group is large enough.
    #[test]
    fn images_go_through_the_products_in_even_groups() {
        let cases = [
            ((Tiling::Four, (28, 28), 64, 2), 2), // 49 tiles
            ((Tiling::Four, (14, 14), 64, 2), 4), // 16 tiles
            ((Tiling::Two, (7, 7), 64, 1), 4),    // 16 tiles, 64 images on one thread
            ((Tiling::Two, (7, 7), 10, 2), 5),    // shares of 5: 5 x 16, not 3 x 16
            ((Tiling::Two, (7, 7), 6, 2), 3),     // shares of 3: all of it, 48 rows
            ((Tiling::Four, (28, 28), 1, 2), 1),  // one image
            ((Tiling::Two, (64, 64), 64, 2), 1),  // 1024 tiles
        ];
        for ((tiling, size, batch, threads), want) in cases {
            assert_eq!(
                images_per_product(tiling, size, batch, threads),
                want,
                "{tiling:?} {size:?}, batch {batch}, {threads} threads"
            );
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
    #[should_panic(expected = "do not fit the kernel")]
    fn an_image_of_the_wrong_size_is_refused() {
        let kernel = Kernel::new(2, 3, Tiling::Four, |_, _, _, _| 1.0);
        let mut scratch = vec![0f32; kernel.scratch_len(4, 4, 1)];
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
