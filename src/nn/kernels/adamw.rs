//! AdamW (Loshchilov & Hutter 2019) with its state in the open: candle's optimiser
//! keeps its moments private, and a training that resumes from a checkpoint must
//! restore them to continue exactly where it stopped.

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor, Var};

use super::buffers::{contiguous_f32, contiguous_f32_mut};
use super::vmath::with_wide_vectors;

/// Hyper-parameters, with PyTorch's defaults for betas and eps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamWConfig {
    pub fn new(lr: f64, weight_decay: f64) -> AdamWConfig {
        AdamWConfig {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        }
    }
}

/// The optimiser: the variables it updates and their first and second moments.
pub struct AdamW {
    pub config: AdamWConfig,
    pub vars: Vec<Var>,
    pub first: Vec<Tensor>,
    pub second: Vec<Tensor>,
    /// Updates done so far (for the bias correction).
    pub step: usize,
}

impl AdamW {
    pub fn new(vars: Vec<Var>, config: AdamWConfig) -> Result<AdamW> {
        // Separate tensors, not clones sharing storage: the CPU update writes them in
        // place.
        let zeros = || {
            vars.iter()
                .map(|v| v.as_tensor().zeros_like())
                .collect::<Result<Vec<_>>>()
        };
        let (first, second) = (zeros()?, zeros()?);
        Ok(AdamW {
            config,
            vars,
            first,
            second,
            step: 0,
        })
    }

    /// The global L2 norm of the gradients, as clipping measures it.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut total = 0.0;
        for var in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
        }
        Ok(total.sqrt())
    }

    /// One update with learning rate `lr`, the gradients scaled by `grad_scale` (for
    /// clipping). Variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.update(grads, lr, grad_scale, true)
    }

    /// `fused`: on the CPU, update each variable and its moments in place, three passes
    /// over their buffers. The tensor-op form takes a dozen ops per variable, and for
    /// a small network their fixed costs were most of a training step; copying every
    /// buffer out and back in cost the one thread that rayon's threads wait on about a
    /// percent of an MLP step's samples more.
    fn update(&mut self, grads: &GradStore, lr: f64, grad_scale: f64, fused: bool) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2 = 1.0 - c.beta2.powi(self.step as i32);
        for ((var, m), v) in self.vars.iter().zip(&mut self.first).zip(&mut self.second) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let in_place = [var.as_tensor(), &*m, &*v].iter().all(|t| {
                t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous()
            });
            if fused && in_place {
                let g = g.contiguous()?;
                let scale = grad_scale as f32;
                m.inplace_op2(
                    &g,
                    &Moment {
                        beta: c.beta1 as f32,
                        scale,
                        square: false,
                    },
                )?;
                v.inplace_op2(
                    &g,
                    &Moment {
                        beta: c.beta2 as f32,
                        scale,
                        square: true,
                    },
                )?;
                let update = Update {
                    decay: (1.0 - lr * c.weight_decay) as f32,
                    lr: (lr / bias1) as f32,
                    bias2: bias2 as f32,
                    eps: c.eps as f32,
                };
                var.as_tensor().inplace_op3(m, v, &update)?;
                continue;
            }
            let g = if grad_scale != 1.0 {
                g.affine(grad_scale, 0.0)?
            } else {
                g.clone()
            };
            // Detached: the moments must not keep this step's graph (and with it every
            // activation of the forward pass) alive into the next step.
            *m = ((&*m * c.beta1)? + (&g * (1.0 - c.beta1))?)?.detach();
            *v = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?.detach();
            let update = ((&*m / bias1)? / ((&*v / bias2)?.sqrt()? + c.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * c.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// A moment's update in place: m = beta m + (1 - beta) x, x the scaled gradient or
/// its square.
struct Moment {
    beta: f32,
    scale: f32,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (moment, grad) = (
            contiguous_f32_mut(s1, l1, "adamw")?,
            contiguous_f32(s2, l2, "adamw")?,
        );
        let (beta, scale) = (self.beta, self.scale);
        let pairs = moment.iter_mut().zip(grad);
        with_wide_vectors(
            #[inline(always)]
            || {
                if self.square {
                    pairs.for_each(|(m, g)| {
                        let g = g * scale;
                        *m = beta * *m + (1.0 - beta) * g * g
                    })
                } else {
                    pairs.for_each(|(m, g)| *m = beta * *m + (1.0 - beta) * (g * scale))
                }
            },
        );
        Ok(())
    }
}

/// The parameter's update in place from its updated moments: p = p decay - lr m /
/// (sqrt(v / bias2) + eps), `lr` already divided by the first moment's bias correction.
#[derive(Clone, Copy)]
struct Update {
    decay: f32,
    lr: f32,
    bias2: f32,
    eps: f32,
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let param = contiguous_f32_mut(s1, l1, "adamw")?;
        let (m, v) = (
            contiguous_f32(s2, l2, "adamw")?,
            contiguous_f32(s3, l3, "adamw")?,
        );
        let Update {
            decay,
            lr,
            bias2,
            eps,
        } = *self;
        with_wide_vectors(
            #[inline(always)]
            || {
                for ((p, m), v) in param.iter_mut().zip(m).zip(v) {
                    *p = *p * decay - lr * m / ((v / bias2).sqrt() + eps);
                }
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::Optimizer;

    #[test]
    fn matches_candles_adamw() {
        let dev = Device::Cpu;
        let start = Tensor::new(&[[0.5f32, -1.5], [2.0, 0.25]], &dev).unwrap();
        let ours = Var::from_tensor(&start).unwrap();
        let theirs = Var::from_tensor(&start).unwrap();
        let mut a = AdamW::new(vec![ours.clone()], AdamWConfig::new(0.05, 0.01)).unwrap();
        let mut b = candle_nn::AdamW::new(
            vec![theirs.clone()],
            candle_nn::ParamsAdamW {
                lr: 0.05,
                weight_decay: 0.01,
                ..Default::default()
            },
        )
        .unwrap();
        for _ in 0..20 {
            let loss = |v: &Var| v.as_tensor().powf(3.0).unwrap().sum_all().unwrap();
            a.step(&loss(&ours).backward().unwrap(), 0.05, 1.0).unwrap();
            b.backward_step(&loss(&theirs)).unwrap();
        }
        let diff = (ours.as_tensor() - theirs.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "{diff}");
        assert_eq!(a.step, 20);
    }

    /// The fused CPU update and the tensor-op one agree over many steps, with weight
    /// decay and clipping.
    #[test]
    fn the_fused_update_matches_the_tensor_ops() {
        let dev = Device::Cpu;
        let start = Tensor::new(&[[0.5f32, -1.5, 3.0], [2.0, 0.25, -0.1]], &dev).unwrap();
        let (a, b) = (
            Var::from_tensor(&start).unwrap(),
            Var::from_tensor(&start).unwrap(),
        );
        let config = AdamWConfig::new(0.05, 0.01);
        let mut fused = AdamW::new(vec![a.clone()], config).unwrap();
        let mut plain = AdamW::new(vec![b.clone()], config).unwrap();
        for step in 0..30 {
            let loss = |v: &Var| v.as_tensor().powf(3.0).unwrap().sum_all().unwrap();
            let scale = if step % 3 == 0 { 0.5 } else { 1.0 };
            fused
                .update(&loss(&a).backward().unwrap(), 0.05, scale, true)
                .unwrap();
            plain
                .update(&loss(&b).backward().unwrap(), 0.05, scale, false)
                .unwrap();
        }
        for (x, y) in [
            (a.as_tensor(), b.as_tensor()),
            (&fused.first[0], &plain.first[0]),
            (&fused.second[0], &plain.second[0]),
        ] {
            let max = |t: &Tensor| {
                t.abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            let diff = max(&(x - y).unwrap()) / max(y);
            assert!(diff < 1e-4, "{diff}");
        }
        assert_ne!(
            a.as_tensor().to_vec2::<f32>().unwrap(),
            start.to_vec2::<f32>().unwrap()
        );
    }

    #[test]
    fn clipping_scales_the_gradient() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(&[3f32, 4.0], &dev).unwrap()).unwrap();
        let opt = AdamW::new(vec![x.clone()], AdamWConfig::new(0.1, 0.0)).unwrap();
        let grads = x
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        // grad = 2x = (6, 8): norm 10.
        assert!((opt.grad_norm(&grads).unwrap() - 10.0).abs() < 1e-5);
    }
}
