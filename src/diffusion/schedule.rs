//! Noise schedules: DDPM beta schedules and SMLD sigma levels.
//!
//! Convention used everywhere: levels are numbered t = 1..T with more noise at larger
//! t (DDPM's t, and SMLD's sigma levels read from sigma_min up to sigma_max).

use serde::{Deserialize, Serialize};

/// A schedule as written in a pipeline file (defaults filled in).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields, from = "WrittenSchedule")]
pub enum ScheduleParams {
    /// Ho et al. 2020, Sec. 4: betas linear from beta_start to beta_end.
    Linear { beta_start: f64, beta_end: f64, steps: usize },
    /// Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = f(t)/f(0),
    /// f(t) = cos^2(((t/T + s)/(1 + s)) * pi/2), betas clipped at max_beta.
    Cosine { steps: usize, s: f64, max_beta: f64 },
    /// Song & Ermon 2019: a geometric sequence of noise levels.
    Geometric { sigma_max: f64, sigma_min: f64, levels: usize },
}

/// What a pipeline file may leave out. Linear betas left out follow Ho et al.'s
/// 1e-4..0.02 at T = 1000, scaled by 1000/T for other T as Nichol & Dhariwal do
/// (so a short chain still ends near pure noise), capped at 0.999.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum WrittenSchedule {
    Linear {
        beta_start: Option<f64>,
        beta_end: Option<f64>,
        #[serde(default = "steps")]
        steps: usize,
    },
    Cosine {
        #[serde(default = "steps")]
        steps: usize,
        #[serde(default = "cosine_s")]
        s: f64,
        #[serde(default = "max_beta")]
        max_beta: f64,
    },
    Geometric {
        #[serde(default = "sigma_max")]
        sigma_max: f64,
        #[serde(default = "sigma_min")]
        sigma_min: f64,
        #[serde(default = "levels")]
        levels: usize,
    },
}

impl From<WrittenSchedule> for ScheduleParams {
    fn from(written: WrittenSchedule) -> Self {
        match written {
            WrittenSchedule::Linear { beta_start: start, beta_end: end, steps } => {
                let scale = 1000.0 / steps.max(1) as f64;
                ScheduleParams::Linear {
                    beta_start: start.unwrap_or_else(|| (beta_start() * scale).min(0.999)),
                    beta_end: end.unwrap_or_else(|| (beta_end() * scale).min(0.999)),
                    steps,
                }
            }
            WrittenSchedule::Cosine { steps, s, max_beta } => ScheduleParams::Cosine { steps, s, max_beta },
            WrittenSchedule::Geometric { sigma_max, sigma_min, levels } => {
                ScheduleParams::Geometric { sigma_max, sigma_min, levels }
            }
        }
    }
}

fn beta_start() -> f64 {
    1e-4
}
fn beta_end() -> f64 {
    0.02
}
fn steps() -> usize {
    1000
}
fn cosine_s() -> f64 {
    0.008
}
fn max_beta() -> f64 {
    0.999
}
fn sigma_max() -> f64 {
    1.0
}
fn sigma_min() -> f64 {
    0.01
}
fn levels() -> usize {
    10
}

/// One row of `schedule.csv`: (t, beta, alpha_bar, sigma, snr); beta is None for SMLD.
pub type ScheduleRow = (usize, Option<f64>, f64, f64, f64);

/// The schedule, tabulated per level t = 1..T (index t-1).
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Variance preserving: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.
    Vp { betas: Vec<f64>, alpha_bars: Vec<f64> },
    /// Variance exploding: x_t = x_0 + sigma_t eps, sigmas ascending.
    Sigmas { sigmas: Vec<f64> },
}

impl ScheduleParams {
    /// Checks values a user could get wrong.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            ScheduleParams::Linear { beta_start, beta_end, steps } => {
                if steps < 1 {
                    return Err("`steps` must be at least 1".into());
                }
                if !(0.0 < beta_start && beta_start <= beta_end && beta_end < 1.0) {
                    return Err(format!(
                        "need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}"
                    ));
                }
                Ok(())
            }
            ScheduleParams::Cosine { steps, s, max_beta } => {
                if steps < 1 {
                    return Err("`steps` must be at least 1".into());
                }
                if !(s >= 0.0) || !(0.0 < max_beta && max_beta < 1.0) {
                    return Err(format!("need s >= 0 and 0 < max_beta < 1, got s={s}, max_beta={max_beta}"));
                }
                Ok(())
            }
            ScheduleParams::Geometric { sigma_max, sigma_min, levels } => {
                if levels < 1 {
                    return Err("`levels` must be at least 1".into());
                }
                if !(0.0 < sigma_min && sigma_min <= sigma_max) {
                    return Err(format!(
                        "need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}"
                    ));
                }
                if levels == 1 && sigma_min != sigma_max {
                    return Err("one level needs sigma_min == sigma_max".into());
                }
                Ok(())
            }
        }
    }

    /// Is this a DDPM (variance preserving) schedule?
    pub fn is_vp(&self) -> bool {
        !matches!(self, ScheduleParams::Geometric { .. })
    }

    pub fn build(&self) -> Schedule {
        match *self {
            ScheduleParams::Linear { beta_start, beta_end, steps } => {
                let betas: Vec<f64> = (0..steps)
                    .map(|i| {
                        if steps == 1 {
                            beta_start
                        } else {
                            beta_start + (beta_end - beta_start) * i as f64 / (steps - 1) as f64
                        }
                    })
                    .collect();
                Schedule::from_betas(betas)
            }
            ScheduleParams::Cosine { steps, s, max_beta } => {
                let f = |t: f64| (((t / steps as f64 + s) / (1.0 + s)) * std::f64::consts::FRAC_PI_2).cos().powi(2);
                let betas = (1..=steps)
                    .map(|t| (1.0 - f(t as f64) / f((t - 1) as f64)).min(max_beta))
                    .collect();
                Schedule::from_betas(betas)
            }
            ScheduleParams::Geometric { sigma_max, sigma_min, levels } => {
                let sigmas = (0..levels)
                    .map(|i| {
                        if levels == 1 {
                            sigma_min
                        } else {
                            let frac = i as f64 / (levels - 1) as f64;
                            (sigma_min.ln() + frac * (sigma_max.ln() - sigma_min.ln())).exp()
                        }
                    })
                    .collect();
                Schedule::Sigmas { sigmas }
            }
        }
    }
}

impl Schedule {
    fn from_betas(betas: Vec<f64>) -> Schedule {
        let mut prod = 1.0;
        let alpha_bars = betas
            .iter()
            .map(|b| {
                prod *= 1.0 - b;
                prod
            })
            .collect();
        Schedule::Vp { betas, alpha_bars }
    }

    /// Number of levels T.
    pub fn len(&self) -> usize {
        match self {
            Schedule::Vp { betas, .. } => betas.len(),
            Schedule::Sigmas { sigmas } => sigmas.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows of `schedule.csv`: (t, beta, alpha_bar, sigma, snr); beta is None for SMLD.
    pub fn table(&self) -> Vec<ScheduleRow> {
        match self {
            Schedule::Vp { betas, alpha_bars } => betas
                .iter()
                .zip(alpha_bars)
                .enumerate()
                .map(|(i, (&b, &ab))| (i + 1, Some(b), ab, (1.0 - ab).sqrt(), ab / (1.0 - ab)))
                .collect(),
            Schedule::Sigmas { sigmas } => sigmas
                .iter()
                .enumerate()
                .map(|(i, &s)| (i + 1, None, 1.0, s, 1.0 / (s * s)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_matches_ddpm_endpoints_and_product() {
        let s = ScheduleParams::Linear { beta_start: 1e-4, beta_end: 0.02, steps: 1000 }.build();
        let Schedule::Vp { betas, alpha_bars } = s else { panic!("linear is VP") };
        assert_eq!(betas.len(), 1000);
        assert!((betas[0] - 1e-4).abs() < 1e-15);
        assert!((betas[999] - 0.02).abs() < 1e-15);
        assert!((betas[499] - (1e-4 + 0.0199 * 499.0 / 999.0)).abs() < 1e-15);
        let expected: f64 = betas.iter().map(|b| 1.0 - b).product();
        assert!((alpha_bars[999] - expected).abs() < 1e-15);
        // Known value for DDPM's schedule: alpha_bar_T is about 4.04e-5.
        assert!((alpha_bars[999] - 4.035e-5).abs() < 1e-7, "{}", alpha_bars[999]);
    }

    #[test]
    fn cosine_matches_closed_form() {
        let (steps, s) = (50usize, 0.008);
        let sched = ScheduleParams::Cosine { steps, s, max_beta: 0.999 }.build();
        let Schedule::Vp { alpha_bars, betas } = sched else { panic!("cosine is VP") };
        let f = |t: f64| (((t / steps as f64 + s) / (1.0 + s)) * std::f64::consts::FRAC_PI_2).cos().powi(2);
        for t in 1..steps {
            let closed = f(t as f64) / f(0.0);
            assert!((alpha_bars[t - 1] - closed).abs() < 1e-12, "t={t}: {} vs {closed}", alpha_bars[t - 1]);
        }
        // The last beta is clipped at max_beta (f(T) = cos^2(pi/2) ~ 0).
        assert!((betas[steps - 1] - 0.999).abs() < 1e-12);
    }

    #[test]
    fn geometric_sigmas_are_geometric() {
        let sched = ScheduleParams::Geometric { sigma_max: 1.0, sigma_min: 0.01, levels: 10 }.build();
        let Schedule::Sigmas { sigmas } = sched else { panic!("geometric is sigmas") };
        assert!((sigmas[0] - 0.01).abs() < 1e-12);
        assert!((sigmas[9] - 1.0).abs() < 1e-12);
        let ratio = sigmas[1] / sigmas[0];
        for w in sigmas.windows(2) {
            assert!((w[1] / w[0] - ratio).abs() < 1e-9);
        }
        assert!((ratio - 100f64.powf(1.0 / 9.0)).abs() < 1e-9);
    }

    #[test]
    fn linear_defaults_scale_with_the_number_of_steps() {
        let read = |yaml: &str| serde_norway::from_str::<ScheduleParams>(yaml).unwrap();
        assert_eq!(read("type: linear"), ScheduleParams::Linear { beta_start: 1e-4, beta_end: 0.02, steps: 1000 });
        let betas = |yaml: &str| match read(yaml) {
            ScheduleParams::Linear { beta_start, beta_end, .. } => (beta_start, beta_end),
            other => panic!("{other:?}"),
        };
        let close = |(a, b): (f64, f64), (x, y): (f64, f64)| (a - x).abs() < 1e-15 && (b - y).abs() < 1e-15;
        assert!(close(betas("{type: linear, steps: 50}"), (2e-3, 0.4)));
        assert!(close(betas("{type: linear, steps: 10}"), (0.01, 0.999)), "capped");
        // Written values are kept as written.
        assert!(close(betas("{type: linear, steps: 50, beta_end: 0.02}"), (2e-3, 0.02)));
        // T=50 with scaled betas ends near pure noise, as T=1000 does.
        let Schedule::Vp { alpha_bars, .. } = read("{type: linear, steps: 50}").build() else { panic!("linear is VP") };
        assert!(alpha_bars[49] < 1e-4, "{}", alpha_bars[49]);
        assert!(serde_norway::from_str::<ScheduleParams>("{type: linear, beta: 1}").unwrap_err().to_string().contains("unknown field `beta`"));
    }

    #[test]
    fn invalid_schedules_are_rejected() {
        assert!(ScheduleParams::Linear { beta_start: 0.02, beta_end: 1e-4, steps: 10 }.validate().is_err());
        assert!(ScheduleParams::Geometric { sigma_max: 0.01, sigma_min: 1.0, levels: 10 }.validate().is_err());
        assert!(ScheduleParams::Cosine { steps: 0, s: 0.008, max_beta: 0.999 }.validate().is_err());
    }
}
