//! A small CNN classifier whose penultimate layer is the feature space of the image
//! metrics (FID, KID, precision/recall) and whose class probabilities give the
//! Inception Score: three 3x3 convolutions with SiLU (the last two strided), a hidden
//! layer on the flattened last map (the features) and the class logits.

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Conv2dConfig, Linear, VarBuilder, linear};
use serde::{Deserialize, Serialize};

use crate::data::images::ImageShape;
use crate::nn::kernels::conv::{Conv2d, conv2d};

/// Sizes of the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Channels of the first convolution (doubled by the second and third).
    #[serde(default = "width")]
    pub width: usize,
    /// Size of the feature layer.
    #[serde(default = "features")]
    pub features: usize,
}

fn width() -> usize {
    32
}
fn features() -> usize {
    128
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            width: width(),
            features: features(),
        }
    }
}

/// Side of the last feature map after the two stride-2 convolutions: the hidden layer
/// sees every position of it, because a global average over a 7x7 map throws away where
/// the strokes are and the network then needs many epochs to separate digits.
fn flat_side(side: usize) -> usize {
    side.div_ceil(2).div_ceil(2)
}

/// The network.
pub struct Classifier {
    shape: ImageShape,
    convs: Vec<Conv2d>,
    hidden: Linear,
    out: Linear,
}

impl Classifier {
    pub fn new(
        config: &ClassifierConfig,
        shape: ImageShape,
        classes: usize,
        vb: VarBuilder,
    ) -> Result<Classifier> {
        let w = config.width;
        let widths = [shape.channels, w, 2 * w, 2 * w];
        let convs = widths
            .windows(2)
            .enumerate()
            .map(|(i, c)| {
                let cfg = Conv2dConfig {
                    padding: 1,
                    stride: if i == 0 { 1 } else { 2 },
                    ..Default::default()
                };
                conv2d(c[0], c[1], 3, cfg, vb.pp(format!("conv{i}")))
            })
            .collect::<Result<_>>()?;
        Ok(Classifier {
            shape,
            convs,
            hidden: linear(
                2 * w * flat_side(shape.height) * flat_side(shape.width),
                config.features,
                vb.pp("hidden"),
            )?,
            out: linear(config.features, classes, vb.pp("out"))?,
        })
    }

    /// (features, logits) of flattened images [batch, c*h*w].
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let s = self.shape;
        let mut h = x.reshape((x.dim(0)?, s.channels, s.height, s.width))?;
        for conv in &self.convs {
            h = conv.forward(&h)?.silu()?;
        }
        let features = self.hidden.forward(&h.flatten_from(1)?)?.silu()?;
        let logits = self.out.forward(&features)?;
        Ok((features, logits))
    }

    /// Features and class probabilities of many images, in batches.
    pub fn embed(&self, x: &Tensor, batch: usize) -> Result<(Tensor, Tensor)> {
        let n = x.dim(0)?;
        let (mut feats, mut probs) = (Vec::new(), Vec::new());
        for start in (0..n).step_by(batch.max(1)) {
            let len = batch.min(n - start);
            let (f, logits) = self.forward(&x.narrow(0, start, len)?)?;
            feats.push(f);
            probs.push(candle_nn::ops::softmax(&logits, D::Minus1)?);
        }
        Ok((Tensor::cat(&feats, 0)?, Tensor::cat(&probs, 0)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::models::init::seeded_varmap;
    use crate::rng::stream;
    use candle_core::Device;

    #[test]
    fn shapes_and_gradients() {
        let shape = ImageShape {
            channels: 3,
            height: 8,
            width: 8,
        };
        let cfg = ClassifierConfig {
            width: 4,
            features: 6,
        };
        let (net, map) = seeded_varmap(&Device::Cpu, &mut stream(0, "c"), |vb| {
            Classifier::new(&cfg, shape, 5, vb)
        })
        .unwrap();
        let x = Tensor::ones((2, 192), candle_core::DType::F32, &Device::Cpu).unwrap();
        let (f, logits) = net.forward(&x).unwrap();
        assert_eq!((f.dims(), logits.dims()), (&[2, 6][..], &[2, 5][..]));
        let grads = logits.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        crate::nn::models::assert_every_parameter_learns(&grads, map.data().lock().unwrap().iter());
    }
}
