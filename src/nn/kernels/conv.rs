//! 2D convolutions for the U-Net and the classifier that are fast on the CPU. candle
//! 0.11 convolves on the CPU with a direct loop and takes the input gradient through a
//! direct transposed convolution; a U-Net training step at MNIST size spent most of its
//! time there and ran about 14 times slower than PyTorch's. Here every convolution is
//! GEMMs per image, the images of a batch spread over rayon's threads:
//! - 3x3, stride 1, size kept (most of a U-Net): Winograd's F(4x4, 3x3) or, on small
//!   images, F(2x2, 3x3) (`super::winograd`), for the forward pass and both gradients,
//!   a few images per product where one image has too few tiles to fill it;
//! - other kernels with stride 1 that keep the size: an implicit GEMM on the
//!   zero-padded image, read in place as its column matrix (`Geometry::implicit`); the
//!   input gradient is the same product with the kernel flipped;
//! - otherwise im2col and one GEMM, and for the backward pass two GEMMs and a col2im
//!   (as PyTorch's CPU convolutions do).
//!
//! On other devices candle's own kernels run.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use rayon::prelude::*;

use super::buffers::{Output, contiguous_f32 as slice, with_scratch};
use super::gemm::{View, matmul};
use super::transpose::{Lines, transpose};
use super::vmath::{add_rows, lane_sum, with_wide_vectors};
use super::winograd;

/// A convolution layer: candle_nn's parameters and initialisation (so weights keep their
/// names and seeded values), with the CPU forward and backward passes of this module.
#[derive(Debug, Clone)]
pub struct Conv2d {
    inner: candle_nn::Conv2d,
}

/// A square `kernel` x `kernel` convolution from `cin` to `cout` channels.
pub fn conv2d(
    cin: usize,
    cout: usize,
    kernel: usize,
    config: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    Ok(Conv2d {
        inner: candle_nn::conv2d(cin, cout, kernel, config, vb)?,
    })
}

impl Conv2d {
    /// The convolution plus a per-image, per-channel `shift` [batch, cout] on top of the
    /// bias: how a residual block adds its time embedding. On the CPU both go into the
    /// kernel's output directly, so their gradients are per-image sums, not reductions
    /// of a broadcast (which candle does slowly over the batch and pixel dimensions).
    pub fn forward_shifted(&self, x: &Tensor, shift: &Tensor) -> Result<Tensor> {
        let cout = self.inner.weight().dim(0)?;
        let shift = match self.inner.bias() {
            Some(bias) => shift.broadcast_add(&bias.reshape((1, cout))?)?,
            None => shift.clone(),
        };
        if !self.runs_on_cpu(x) {
            return self
                .inner
                .forward(x)?
                .broadcast_add(&shift.unsqueeze(2)?.unsqueeze(3)?);
        }
        let cfg = self.inner.config();
        conv2d_cpu(x, self.inner.weight(), &shift, cfg.stride, cfg.padding)
    }

    /// The kernel [cout, cin, k, k] and the bias [cout], for ops that fuse the layer.
    pub(super) fn params(&self) -> (&Tensor, Option<&Tensor>) {
        (self.inner.weight(), self.inner.bias())
    }

    /// The sizes of this layer applied to an input of `dims` [batch, cin, h, w].
    pub(super) fn geometry(&self, dims: &[usize]) -> Result<Geometry> {
        let cfg = self.inner.config();
        Geometry::new(dims, self.inner.weight().dims(), cfg.stride, cfg.padding)
    }

    /// Whether this module's CPU kernels run for input `x` (else candle's own ops).
    pub(super) fn runs_on_cpu(&self, x: &Tensor) -> bool {
        let cfg = self.inner.config();
        x.device().is_cpu() && x.dtype() == DType::F32 && cfg.dilation == 1 && cfg.groups == 1
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.runs_on_cpu(x) {
            return self.inner.forward(x);
        }
        let cfg = self.inner.config();
        let (batch, cout) = (x.dim(0)?, self.inner.weight().dim(0)?);
        let bias = match self.inner.bias() {
            Some(bias) => bias.reshape((1, cout))?.broadcast_as((batch, cout))?,
            None => Tensor::zeros((batch, cout), DType::F32, x.device())?,
        };
        conv2d_cpu(x, self.inner.weight(), &bias, cfg.stride, cfg.padding)
    }
}

/// `x` [batch, cin, h, w] convolved with `kernel` [cout, cin, k, k], plus `bias`
/// [batch, cout] (one per image and output channel), with gradients for all three; the
/// same numbers as candle's `x.conv2d(kernel, padding, stride, 1, 1)` plus the bias.
pub fn conv2d_cpu(
    x: &Tensor,
    kernel: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let geometry = Geometry::new(x.dims(), kernel.dims(), stride, padding)?;
    if bias.dims() != [geometry.batch, geometry.cout] {
        candle_core::bail!("conv2d: bias {:?} should be [batch, cout]", bias.dims())
    }
    x.contiguous()?.apply_op3(
        &kernel.contiguous()?,
        &bias.contiguous()?,
        Forward(geometry),
    )
}

/// Sizes of one convolution; the kernel is square, stride and padding the same both ways.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    batch: usize,
    cin: usize,
    cout: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    pub(super) fn new(
        x: &[usize],
        kernel: &[usize],
        stride: usize,
        padding: usize,
    ) -> Result<Geometry> {
        let (&[batch, cin, h, w], &[cout, kcin, kh, kw]) = (x, kernel) else {
            candle_core::bail!(
                "conv2d takes [b, c, h, w] and [cout, cin, k, k], got {x:?} and {kernel:?}"
            )
        };
        if kcin != cin || kh != kw || stride == 0 || h + 2 * padding < kh || w + 2 * padding < kw {
            candle_core::bail!(
                "conv2d: input {x:?} does not fit kernel {kernel:?} with stride {stride}, padding {padding}"
            )
        }
        Ok(Geometry {
            batch,
            cin,
            cout,
            kernel: kh,
            stride,
            padding,
            h,
            w,
            ho: (h + 2 * padding - kh) / stride + 1,
            wo: (w + 2 * padding - kw) / stride + 1,
        })
    }

    /// The output's shape, [batch, cout, ho, wo].
    pub(super) fn output_dims(&self) -> [usize; 4] {
        [self.batch, self.cout, self.ho, self.wo]
    }

    /// Rows of an image's column matrix: one per (input channel, kernel row, kernel column).
    pub(super) fn patch(&self) -> usize {
        self.cin * self.kernel * self.kernel
    }

    /// Columns of an image's column matrix: one per output pixel.
    fn pixels(&self) -> usize {
        self.ho * self.wo
    }

    /// A 1x1 convolution without stride or padding: an image already is its column matrix.
    fn pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.padding == 0
    }

    /// The input column read by kernel offset `offset` at output coordinate `o`, if
    /// it is inside the image of size `size` (else the padding's zero).
    fn source(&self, o: usize, offset: usize, size: usize) -> Option<usize> {
        (o * self.stride + offset)
            .checked_sub(self.padding)
            .filter(|&i| i < size)
    }

    /// The output coordinates `lo..hi` whose input, at kernel offset `offset`, lies
    /// inside an image side of `size` (the others read the padding).
    fn inside(&self, offset: usize, size: usize, outputs: usize) -> (usize, usize) {
        // o * stride + offset - padding >= 0, and < size.
        let lo = self.padding.saturating_sub(offset).div_ceil(self.stride);
        let hi = (size + self.padding)
            .checked_sub(offset)
            .map_or(0, |end| end.div_ceil(self.stride))
            .min(outputs);
        (lo.min(hi), hi)
    }

    /// Stride 1 with "same" padding: every row of the column matrix is the image
    /// plane shifted by one offset, with the padding's rows and columns zeroed.
    fn keeps_size(&self) -> bool {
        self.stride == 1 && self.ho == self.h && self.wo == self.w
    }

    /// Kernel offset (i, j) of column-matrix row `row`, and the plane it reads.
    fn row_source(&self, row: usize) -> (usize, usize, std::ops::Range<usize>) {
        let k = self.kernel;
        let (c, i, j) = (row / (k * k), row / k % k, row % k);
        (i, j, c * self.h * self.w..(c + 1) * self.h * self.w)
    }

    /// For `keeps_size`: how far kernel offset (i, j) shifts the plane, as (amount,
    /// whether forwards): output pixel q reads input pixel q + shift.
    fn shift(&self, i: usize, j: usize) -> (usize, bool) {
        let (to, from) = (i * self.w + j, self.padding * self.w + self.padding);
        if to >= from {
            (to - from, true)
        } else {
            (from - to, false)
        }
    }

    /// For each kernel offset (i, j), in row-major order: the output pixels [ho * wo]
    /// that read the padding there. Zeroing a short list of positions costs a
    /// fraction of walking every row of the plane with two `fill`s.
    fn padding_positions(&self) -> Padding {
        if !self.keeps_size() {
            return Padding(Vec::new());
        }
        let k = self.kernel;
        let positions = (0..k * k)
            .map(|offset| {
                let (y_lo, y_hi) = self.inside(offset / k, self.h, self.ho);
                let (x_lo, x_hi) = self.inside(offset % k, self.w, self.wo);
                (0..self.ho)
                    .flat_map(|oy| (0..self.wo).map(move |ox| (oy, ox)))
                    .filter(|&(oy, ox)| oy < y_lo || oy >= y_hi || ox < x_lo || ox >= x_hi)
                    .map(|(oy, ox)| oy * self.wo + ox)
                    .collect()
            })
            .collect();
        Padding(positions)
    }

    /// Whether this convolution multiplies its zero-padded input in place (an
    /// implicit GEMM) instead of writing out the column matrix. For a stride-1
    /// convolution that keeps the image size, row (c, i, j) of the column matrix is
    /// the padded plane c read from offset (i, j) on, if the output is computed on
    /// padded-width rows ("wide" pixels, the last `padding` of each row thrown away).
    /// That waste grows as images shrink, so the implicit product is taken while it
    /// is at most 1 pixel in 8 (down to 7x7 for a 3x3 kernel). Layers with fewer than
    /// 4 input or output channels (a network's first and last) keep the column
    /// matrix: their products are too narrow for the AVX-512 kernel.
    fn implicit(&self) -> bool {
        self.keeps_size()
            && self.kernel > 1
            && 7 * self.padding <= self.w
            && self.cin.min(self.cout) >= 4
    }

    /// Whether this convolution runs by Winograd's minimal filtering (`winograd`): a 3x3
    /// kernel, stride 1, size kept (padding 1), and channels enough on both sides for
    /// its products (as for `implicit`).
    fn winograd(&self) -> bool {
        self.keeps_size() && self.kernel == 3 && self.cin.min(self.cout) >= 4
    }

    /// The Winograd tiling for this convolution's image size (see `Tiling::for_image`).
    fn tiling(&self) -> winograd::Tiling {
        winograd::Tiling::for_image(self.h, self.w, super::gemm::block_rows())
    }

    /// The `winograd` forward pass: the images through `kernel` (this convolution's,
    /// transformed) a group at a time (`winograd::images_per_product`), plus the bias
    /// [batch, cout].
    fn forward_winograd(&self, x: &[f32], kernel: &winograd::Kernel, bias: &[f32]) -> Vec<f32> {
        let (n, (h, w)) = (self.pixels(), (self.h, self.w));
        let mut out = Output::new(self.batch * self.cout * n);
        let group = self.winograd_group();
        let threads = self.gemm_threads_for(self.batch.div_ceil(group));
        let scratch = kernel.scratch_len(h, w, group);
        out.par_chunks_mut(group * self.cout * n)
            .zip(x.par_chunks(group * self.cin * n))
            .zip(bias.par_chunks(group * self.cout))
            .for_each(|((y, images), bias)| {
                with_scratch(scratch, |scratch| {
                    kernel.convolve(images, h, w, bias, y, scratch, threads)
                })
            });
        out.into_vec()
    }

    /// Images per Winograd product for this batch on rayon's threads.
    fn winograd_group(&self) -> usize {
        let threads = rayon::current_num_threads();
        winograd::images_per_product(self.tiling(), (self.h, self.w), self.batch, threads)
    }

    /// Width of a padded row: `padding` zeros, then the image's row. Rows share
    /// their zeros: a kernel reaching past the right end of one row reads the next
    /// row's leading zeros.
    fn padded_width(&self) -> usize {
        self.w + self.padding
    }

    /// Output pixels of the implicit product: `h` rows of padded width.
    fn wide_pixels(&self) -> usize {
        self.h * self.padded_width()
    }

    /// Length of a padded image: `channels` planes of h + 2 padding rows of padded
    /// width, and the few numbers the last wide pixels read past the last plane.
    fn padded_len(&self, channels: usize) -> usize {
        channels * (self.h + 2 * self.padding) * self.padded_width() + 2 * self.padding
    }

    /// Where each row (c, i, j) of the column matrix starts in the padded image.
    fn gather_offsets(&self) -> Vec<usize> {
        let (k, wp) = (self.kernel, self.padded_width());
        let plane = (self.h + 2 * self.padding) * wp;
        (0..self.patch())
            .map(|row| row / (k * k) * plane + row / k % k * wp + row % k)
            .collect()
    }

    /// Writes image `x` [channels, h, w] into `padded` with a zero border.
    fn pad(&self, x: &[f32], padded: &mut [f32]) {
        let (h, w, wp, p) = (self.h, self.w, self.padded_width(), self.padding);
        let plane = (h + 2 * p) * wp;
        let channels = x.len() / (h * w);
        // Only the border is zeroed: the rows are copied over the rest.
        for (channel, dst) in x.chunks(h * w).zip(padded.chunks_mut(plane)) {
            dst[..p * wp].fill(0.0);
            for (row, line) in channel.chunks(w).enumerate() {
                let start = (row + p) * wp;
                dst[start..start + p].fill(0.0);
                dst[start + p..start + wp].copy_from_slice(line);
            }
            dst[(h + p) * wp..].fill(0.0);
        }
        padded[channels * plane..].fill(0.0);
    }

    /// The convolution with the input and output channels swapped: for a stride-1
    /// convolution that keeps the size, the input gradient is this one applied to the
    /// output gradient with the kernel flipped (see `flipped_kernel_t`).
    fn swapped(&self) -> Geometry {
        Geometry {
            cin: self.cout,
            cout: self.cin,
            ..*self
        }
    }

    /// `kernel` [cout, patch] transposed to [patch, cout]: the implicit forward
    /// product's right-hand side.
    fn kernel_t(&self, kernel: &[f32]) -> Vec<f32> {
        let k = self.patch();
        let mut out = vec![0f32; k * self.cout];
        for (o, row) in kernel.chunks(k).enumerate() {
            for (p, v) in row.iter().enumerate() {
                out[p * self.cout + o] = *v;
            }
        }
        out
    }

    /// The swapped convolution's `kernel_t`: entry ((o, i, j), c) is kernel (o, c)
    /// at offset (k - 1 - i, k - 1 - j).
    fn flipped_kernel_t(&self, kernel: &[f32]) -> Vec<f32> {
        let k = self.kernel;
        let mut out = vec![0f32; self.patch() * self.cout];
        for o in 0..self.cout {
            for c in 0..self.cin {
                for i in 0..k {
                    for j in 0..k {
                        let row = (o * k + i) * k + j;
                        let from = ((o * self.cin + c) * k + (k - 1 - i)) * k + (k - 1 - j);
                        out[row * self.cin + c] = kernel[from];
                    }
                }
            }
        }
        out
    }

    /// `implicit` forward pass: per image, the wide output [wide pixels, cout] is the
    /// gathered transposed column matrix times `kernel_t` [patch, cout]; its valid
    /// pixels, plus the bias, are transposed into y [cout, h, w].
    fn forward_implicit(&self, x: &[f32], kernel_t: &[f32], bias: &[f32]) -> Vec<f32> {
        let (n, wide, wp) = (self.pixels(), self.wide_pixels(), self.padded_width());
        let offsets = self.gather_offsets();
        let padded_len = self.padded_len(self.cin);
        let mut out = Output::new(self.batch * self.cout * n);
        let threads = self.gemm_threads();
        out.par_chunks_mut(self.cout * n)
            .zip(x.par_chunks(self.cin * n))
            .zip(bias.par_chunks(self.cout))
            .for_each(|((y, image), bias)| {
                with_scratch(padded_len + wide * self.cout, |scratch| {
                    let (padded, product) = scratch.split_at_mut(padded_len);
                    self.pad(image, padded);
                    let columns = View::gathered(padded, &offsets, wide).t();
                    let kernel = View::rows(kernel_t, self.patch(), self.cout);
                    matmul(product, columns, kernel, false, threads);
                    // The valid pixels of the wide rows, channel-major.
                    let c = self.cout;
                    let valid = Lines::image(c, self.w, wp * c);
                    transpose(product, valid, n, c, y, n, Some(bias));
                });
            });
        out.into_vec()
    }

    /// `implicit` kernel gradient, transposed [patch, cout] and summed over images:
    /// per image the gathered column matrix [patch, wide pixels] times grad y^T
    /// [wide pixels, cout], zero at the wide pixels thrown away (they get no
    /// gradient). `offsets` are `gather_offsets()`.
    fn kernel_grad_implicit(
        &self,
        image: &[f32],
        grad_y: &[f32],
        offsets: &[usize],
        acc: &mut [f32],
    ) {
        let (n, wide, wp, c) = (
            self.pixels(),
            self.wide_pixels(),
            self.padded_width(),
            self.cout,
        );
        let padded_len = self.padded_len(self.cin);
        with_scratch(padded_len + wide * c, |scratch| {
            let (padded, grad_t) = scratch.split_at_mut(padded_len);
            self.pad(image, padded);
            for wide_row in grad_t.chunks_mut(wp * c) {
                wide_row[self.w * c..].fill(0.0);
            }
            let valid = Lines::image(c, self.w, wp * c);
            transpose(grad_y, n, c, n, grad_t, valid, None);
            let columns = View::gathered(padded, offsets, wide);
            let grad_t = View::rows(grad_t, wide, c);
            matmul(acc, columns, grad_t, true, self.gemm_threads());
        });
    }

    /// Writes image `x` [cin, h, w] as its column matrix [patch, pixels].
    fn im2col(&self, x: &[f32], cols: &mut [f32], padding: &Padding) {
        let n = self.pixels();
        for (row, dst) in cols.chunks_mut(n).enumerate() {
            let (i, j, plane) = self.row_source(row);
            let channel = &x[plane];
            if self.keeps_size() {
                // One copy of the whole shifted plane; what it wraps across the
                // borders is then zeroed.
                match self.shift(i, j) {
                    (d, true) => {
                        dst[..n - d].copy_from_slice(&channel[d..]);
                        dst[n - d..].fill(0.0);
                    }
                    (d, false) => {
                        dst[d..].copy_from_slice(&channel[..n - d]);
                        dst[..d].fill(0.0);
                    }
                }
                padding.0[i * self.kernel + j]
                    .iter()
                    .for_each(|&q| dst[q] = 0.0);
                continue;
            }
            for oy in 0..self.ho {
                let line = &mut dst[oy * self.wo..(oy + 1) * self.wo];
                let Some(iy) = self.source(oy, i, self.h) else {
                    line.fill(0.0);
                    continue;
                };
                let (lo, hi) = self.inside(j, self.w, self.wo);
                let src = &channel[iy * self.w..(iy + 1) * self.w];
                line[..lo].fill(0.0);
                line[hi..].fill(0.0);
                let first = lo * self.stride + j - self.padding;
                for (v, x) in line[lo..hi]
                    .iter_mut()
                    .zip(src[first..].iter().step_by(self.stride))
                {
                    *v = *x;
                }
            }
        }
    }

    /// Adds the column matrix `cols` [patch, pixels] back onto image `x` [cin, h, w]
    /// (the transpose of `im2col`), which must start zeroed. `cols` is scratch: its
    /// entries that belong to the padding may be zeroed on the way.
    fn col2im(&self, cols: &mut [f32], x: &mut [f32], padding: &Padding) {
        let n = self.pixels();
        for (row, src) in cols.chunks_mut(n).enumerate() {
            let (i, j, plane) = self.row_source(row);
            let channel = &mut x[plane];
            if self.keeps_size() {
                // With the padding's entries zeroed, the row adds onto the shifted
                // plane in one vectorised pass.
                padding.0[i * self.kernel + j]
                    .iter()
                    .for_each(|&q| src[q] = 0.0);
                let (dst, src) = match self.shift(i, j) {
                    (d, true) => (&mut channel[d..], &src[..n - d]),
                    (d, false) => (&mut channel[..n - d], &src[d..]),
                };
                add_rows(dst, src);
                continue;
            }
            for oy in 0..self.ho {
                let Some(iy) = self.source(oy, i, self.h) else {
                    continue;
                };
                let (lo, hi) = self.inside(j, self.w, self.wo);
                let first = lo * self.stride + j - self.padding;
                let dst = &mut channel[iy * self.w + first..(iy + 1) * self.w];
                let line = &src[oy * self.wo + lo..oy * self.wo + hi];
                for (x, v) in dst.iter_mut().step_by(self.stride).zip(line) {
                    *x += v;
                }
            }
        }
    }

    /// The convolution of `x` [batch, cin, h, w] with `kernel` [cout, patch], plus
    /// `bias` [batch, cout]: y [batch, cout, ho, wo].
    pub(super) fn forward(&self, x: &[f32], kernel: &[f32], bias: &[f32]) -> Vec<f32> {
        if self.winograd() {
            let cin = self.cin;
            let transformed = winograd::Kernel::new(cin, self.cout, self.tiling(), |o, c, i, j| {
                kernel[((o * cin + c) * 3 + i) * 3 + j]
            });
            return self.forward_winograd(x, &transformed, bias);
        }
        if self.implicit() {
            return self.forward_implicit(x, &self.kernel_t(kernel), bias);
        }
        let padding = self.padding_positions();
        let (k, n) = (self.patch(), self.pixels());
        let mut out = Output::new(self.batch * self.cout * n);
        let threads = self.gemm_threads();
        out.par_chunks_mut(self.cout * n)
            .zip(x.par_chunks(self.cin * self.h * self.w))
            .zip(bias.par_chunks(self.cout))
            .for_each(|((y, image), bias)| {
                for (channel, b) in y.chunks_mut(n).zip(bias) {
                    channel.fill(*b);
                }
                let w = View::rows(kernel, self.cout, k);
                if self.pointwise() {
                    matmul(y, w, View::rows(image, k, n), true, threads);
                    return;
                }
                with_scratch(k * n, |cols| {
                    self.im2col(image, cols, &padding);
                    matmul(y, w, View::rows(cols, k, n), true, threads);
                });
            });
        out.into_vec()
    }

    /// The gradient with respect to the input, given `grad` with respect to the output:
    /// per image, kernel^T · grad y, folded back by col2im.
    pub(super) fn input_grad(&self, grad: &[f32], kernel: &[f32]) -> Vec<f32> {
        if self.winograd() {
            // The swapped convolution's output channel o is this one's input channel,
            // its input channel c this one's output channel, its kernel flipped.
            let cin = self.cin;
            let flipped = winograd::Kernel::new(self.cout, cin, self.tiling(), |o, c, i, j| {
                kernel[((c * cin + o) * 3 + 2 - i) * 3 + 2 - j]
            });
            let zero_bias = vec![0f32; self.batch * cin];
            return self.swapped().forward_winograd(grad, &flipped, &zero_bias);
        }
        if self.implicit() {
            let zero_bias = vec![0f32; self.batch * self.cin];
            return self.swapped().forward_implicit(
                grad,
                &self.flipped_kernel_t(kernel),
                &zero_bias,
            );
        }
        let padding = self.padding_positions();
        let (k, n) = (self.patch(), self.pixels());
        let mut out = Output::new(self.batch * self.cin * self.h * self.w);
        let threads = self.gemm_threads();
        out.par_chunks_mut(self.cin * self.h * self.w)
            .zip(grad.par_chunks(self.cout * n))
            .for_each(|(image, grad_y)| {
                let w_t = View::rows(kernel, self.cout, k).t();
                let grad_y = View::rows(grad_y, self.cout, n);
                if self.pointwise() {
                    matmul(image, w_t, grad_y, false, threads);
                    return;
                }
                with_scratch(k * n, |cols| {
                    matmul(cols, w_t, grad_y, false, threads);
                    self.col2im(cols, image, &padding);
                });
            });
        out.into_vec()
    }

    /// [grad kernel; grad bias], flattened: the kernel's gradient is the sum over
    /// images of grad y · columns(x)^T, the bias's (one per image and channel) the sum
    /// of each plane of grad y.
    pub(super) fn param_grads(&self, x: &[f32], grad: &[f32]) -> Vec<f32> {
        let padding = self.padding_positions();
        let offsets = self.gather_offsets();
        let (k, n) = (self.patch(), self.pixels());
        let kernel_len = self.cout * k;
        let mut out = vec![0f32; kernel_len + self.batch * self.cout];
        let (grad_kernel, grad_bias) = out.split_at_mut(kernel_len);
        // Summed as its transpose, columns(x) · grad y^T [patch, cout]: the GEMM then
        // reads the large column matrix in place and packs only grad y. Winograd's
        // sum stays transformed until every image is in, and takes a group of images
        // per product.
        let winograd = self
            .winograd()
            .then(|| winograd::KernelGrad::new(self.cin, self.cout, self.tiling()));
        let sum_len = winograd.as_ref().map_or(k * self.cout, |g| g.sum_len());
        let group = if winograd.is_some() {
            self.winograd_group()
        } else {
            1
        };
        let threads = self.gemm_threads_for(self.batch.div_ceil(group));
        let image_len = self.cin * self.h * self.w;
        let sum_t = x
            .par_chunks(group * image_len)
            .zip(grad.par_chunks(group * self.cout * n))
            .zip(grad_bias.par_chunks_mut(group * self.cout))
            .fold(
                || vec![0f32; sum_len],
                |mut acc, ((images, grads_y), biases)| {
                    for (b, plane) in biases.iter_mut().zip(grads_y.chunks(n)) {
                        *b = with_wide_vectors(|| lane_sum(plane, |v| v)) as f32;
                    }
                    if let Some(g) = &winograd {
                        let (size, count) = ((self.h, self.w), images.len() / image_len);
                        with_scratch(g.scratch_len(self.h, self.w, count), |scratch| {
                            g.accumulate(images, grads_y, size, &mut acc, scratch, threads)
                        });
                        return acc;
                    }
                    let each = images.chunks(image_len).zip(grads_y.chunks(self.cout * n));
                    for (image, grad_y) in each {
                        let grad_y_t = View::rows(grad_y, self.cout, n).t();
                        if self.implicit() {
                            self.kernel_grad_implicit(image, grad_y, &offsets, &mut acc);
                        } else if self.pointwise() {
                            matmul(&mut acc, View::rows(image, k, n), grad_y_t, true, threads);
                        } else {
                            with_scratch(k * n, |cols| {
                                self.im2col(image, cols, &padding);
                                let cols = View::rows(cols, k, n);
                                matmul(&mut acc, cols, grad_y_t, true, threads);
                            });
                        }
                    }
                    acc
                },
            )
            .reduce(
                || vec![0f32; sum_len],
                |mut a, b| {
                    add_rows(&mut a, &b);
                    a
                },
            );
        if let Some(g) = &winograd {
            grad_kernel.copy_from_slice(&g.finish(&sum_t));
            return out;
        }
        for (p, row) in sum_t.chunks(self.cout).enumerate() {
            for (o, v) in row.iter().enumerate() {
                grad_kernel[o * k + p] = *v;
            }
        }
        out
    }

    /// A per-channel bias as the per-image bias [batch, cout] `forward` takes.
    pub(super) fn per_image(&self, bias: &[f32]) -> Vec<f32> {
        bias.repeat(self.batch)
    }

    /// Appends `param_grads`' result to `out` with the bias gradient summed over the
    /// images: [grad kernel; grad bias], as the flat parameters of a fused op hold them.
    pub(super) fn push_summed_param_grads(&self, grads: &[f32], out: &mut Vec<f32>) {
        let (kernel, per_image) = grads.split_at(self.cout * self.patch());
        out.extend_from_slice(kernel);
        let mut bias = vec![0f32; self.cout];
        add_rows(&mut bias, per_image);
        out.extend_from_slice(&bias);
    }

    /// Threads each image's GEMM may use: all of them when there are fewer images
    /// than threads, else one (the images themselves are spread over the threads).
    fn gemm_threads(&self) -> usize {
        self.gemm_threads_for(self.batch)
    }

    /// `gemm_threads` when the batch is spread over the threads as `tasks` tasks.
    fn gemm_threads_for(&self, tasks: usize) -> usize {
        let threads = rayon::current_num_threads();
        if tasks >= threads { 1 } else { threads }
    }
}

/// `Geometry::padding_positions`: per kernel offset, the output pixels that read the
/// padding (none listed unless the convolution keeps the image size).
struct Padding(Vec<Vec<usize>>);

/// The convolution itself: (x, kernel, bias) -> y [batch, cout, ho, wo].
struct Forward(Geometry);

impl CustomOp3 for Forward {
    fn name(&self) -> &'static str {
        "conv2d-im2col"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        kernel: &CpuStorage,
        kernel_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let x = slice(x, x_layout, "conv2d")?;
        let kernel = slice(kernel, kernel_layout, "conv2d")?;
        let bias = slice(bias, bias_layout, "conv2d")?;
        Ok((
            CpuStorage::F32(g.forward(x, kernel, bias)),
            Shape::from((g.batch, g.cout, g.ho, g.wo)),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        kernel: &Tensor,
        _bias: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let grad_x = grad.apply_op2_no_bwd(kernel, &InputGrad(self.0))?;
        let g = self.0;
        let params = x.apply_op2_no_bwd(&grad, &ParamGrads(g))?;
        let kernel_len = g.cout * g.patch();
        let grad_kernel = params
            .narrow(0, 0, kernel_len)?
            .reshape((g.cout, g.cin, g.kernel, g.kernel))?;
        let grad_bias = params
            .narrow(0, kernel_len, g.batch * g.cout)?
            .reshape((g.batch, g.cout))?;
        Ok((Some(grad_x), Some(grad_kernel), Some(grad_bias)))
    }
}

/// (grad y, kernel) -> grad x: per image, kernel^T · grad y, folded back by col2im.
struct InputGrad(Geometry);

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "conv2d-im2col-input-grad"
    }

    fn cpu_fwd(
        &self,
        grad: &CpuStorage,
        grad_layout: &Layout,
        kernel: &CpuStorage,
        kernel_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let op = "conv2d backward";
        let (grad, kernel) = (
            slice(grad, grad_layout, op)?,
            slice(kernel, kernel_layout, op)?,
        );
        Ok((
            CpuStorage::F32(g.input_grad(grad, kernel)),
            Shape::from((g.batch, g.cin, g.h, g.w)),
        ))
    }
}

/// (x, grad y) -> [grad kernel; grad bias], flattened: the kernel's gradient is the sum
/// over images of grad y · columns(x)^T, the bias's (one per image and channel) the
/// sum of each plane of grad y. Both are computed on the images' threads: candle's
/// reduction of the planes ran on one.
struct ParamGrads(Geometry);

impl CustomOp2 for ParamGrads {
    fn name(&self) -> &'static str {
        "conv2d-im2col-param-grads"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let op = "conv2d backward";
        let (x, grad) = (slice(x, x_layout, op)?, slice(grad, grad_layout, op)?);
        let out = g.param_grads(x, grad);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn random(shape: &[usize], seed: u64) -> Tensor {
        crate::nn::kernels::random_tensor(shape, seed, "conv")
    }

    use crate::nn::kernels::max_abs_diff as max_diff;

    /// Output and both gradients of candle's direct convolution and of im2col agree,
    /// for every kind of convolution the U-Net has, on odd sizes and one or several
    /// images.
    #[test]
    fn im2col_convolution_and_its_gradients_match_candles() {
        // (batch, cin, cout, size, kernel, stride, padding)
        let cases = [
            (3, 4, 6, 7, 3, 1, 1),
            // Too small for the implicit product (see `Geometry::implicit`).
            (1, 4, 6, 6, 3, 1, 1),
            (3, 5, 7, 14, 3, 1, 1),
            (1, 4, 33, 16, 3, 1, 1),
            (2, 5, 4, 28, 5, 1, 2),
            (2, 1, 5, 28, 3, 1, 1),
            (5, 3, 5, 8, 3, 2, 1),
            (2, 3, 5, 7, 3, 2, 1),
            (4, 6, 9, 5, 1, 1, 0),
            (2, 2, 3, 6, 3, 1, 0),
        ];
        let implicit = cases
            .iter()
            .filter(|&&(b, cin, cout, size, k, stride, padding)| {
                Geometry::new(&[b, cin, size, size], &[cout, cin, k, k], stride, padding)
                    .unwrap()
                    .implicit()
            });
        assert_eq!(implicit.count(), 4, "the cases cover both kinds of product");
        let winograd = cases
            .iter()
            .filter(|&&(b, cin, cout, size, k, stride, padding)| {
                Geometry::new(&[b, cin, size, size], &[cout, cin, k, k], stride, padding)
                    .unwrap()
                    .winograd()
            });
        assert_eq!(
            winograd.count(),
            4,
            "the cases cover Winograd's convolution"
        );
        for (i, &(b, cin, cout, size, k, stride, padding)) in cases.iter().enumerate() {
            let x = Var::from_tensor(&random(&[b, cin, size, size], i as u64)).unwrap();
            let w = Var::from_tensor(&random(&[cout, cin, k, k], 100 + i as u64)).unwrap();
            let bias = Var::from_tensor(&random(&[b, cout], 300 + i as u64)).unwrap();
            let ours = conv2d_cpu(&x, &w, &bias, stride, padding).unwrap();
            let theirs = x
                .conv2d(&w, padding, stride, 1, 1)
                .unwrap()
                .broadcast_add(&bias.unsqueeze(2).unwrap().unsqueeze(3).unwrap())
                .unwrap();
            assert_eq!(ours.dims(), theirs.dims(), "case {i}");
            assert!(max_diff(&ours, &theirs) < 1e-4, "forward, case {i}");
            // A loss that weighs every output differently, so a transposed or shifted
            // gradient cannot pass.
            let weights = random(ours.dims(), 200 + i as u64);
            let grads_ours = (&ours * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let grads_theirs = (&theirs * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (name, var) in [("x", &x), ("kernel", &w), ("bias", &bias)] {
                let a = grads_ours.get(var).unwrap();
                let b = grads_theirs.get(var).unwrap();
                assert!(
                    max_diff(a, b) < 1e-3,
                    "grad {name}, case {i}: {}",
                    max_diff(a, b)
                );
            }
        }
    }

    #[test]
    fn the_layer_adds_its_bias_and_shift_and_matches_candle_nns() {
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let cfg = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let ours = conv2d(3, 4, 3, cfg, vb.pp("c")).unwrap();
        let x = random(&[2, 3, 9, 9], 7);
        let a = ours.forward(&x).unwrap();
        let b = ours.inner.forward(&x).unwrap();
        assert!(max_diff(&a, &b) < 1e-5);
        let shift = random(&[2, 4], 8);
        let a = ours.forward_shifted(&x, &shift).unwrap();
        let b = b
            .broadcast_add(&shift.unsqueeze(2).unwrap().unsqueeze(3).unwrap())
            .unwrap();
        assert!(max_diff(&a, &b) < 1e-5);
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let x = random(&[1, 3, 5, 5], 0);
        let w = random(&[4, 2, 3, 3], 1);
        let bias = random(&[1, 4], 2);
        let err = conv2d_cpu(&x, &w, &bias, 1, 1).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
    }
}
