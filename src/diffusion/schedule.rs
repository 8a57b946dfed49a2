//! Noise schedules: DDPM beta schedules and SMLD sigma levels.
//!
//! Convention used everywhere: levels are numbered t = 1..T with more noise at larger
//! t (DDPM's t, and SMLD's sigma levels read from sigma_min up to sigma_max).

use serde::{Deserialize, Deserializer, Serialize};

use super::process::Process;
use crate::tagged::Tagged;

/// A schedule as written in a pipeline file (defaults filled in).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ScheduleParams {
    /// Ho et al. 2020, Sec. 4: betas linear from beta_start to beta_end.
    Linear {
        beta_start: f64,
        beta_end: f64,
        steps: usize,
    },
    /// Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = f(t)/f(0),
    /// f(t) = cos^2(((t/T + s)/(1 + s)) * pi/2), betas clipped at max_beta.
    Cosine { steps: usize, s: f64, max_beta: f64 },
    /// Song & Ermon 2019: a geometric sequence of noise levels.
    Geometric {
        sigma_max: f64,
        sigma_min: f64,
        levels: usize,
    },
    /// Betas whose square roots are linear (the DDPM code's `quad` schedule).
    Quadratic {
        beta_start: f64,
        beta_end: f64,
        steps: usize,
    },
    /// Betas along a sigmoid over [-6, 6] (the DDPM code's `sigmoid` schedule).
    Sigmoid {
        beta_start: f64,
        beta_end: f64,
        steps: usize,
    },
    /// Continuous VP SDE (Song et al. 2021): beta(t) = beta_min + t (beta_max - beta_min).
    VpSde { beta_min: f64, beta_max: f64 },
    /// Continuous sub-VP SDE (Song et al. 2021), same beta(t).
    SubVpSde { beta_min: f64, beta_max: f64 },
    /// Continuous VE SDE (Song et al. 2021): sigma(t) = sigma_min (sigma_max/sigma_min)^t.
    VeSde { sigma_min: f64, sigma_max: f64 },
    /// EDM (Karras et al. 2022, Table 1): no scaling, sigma from sigma_min to
    /// sigma_max, and the data's std for the `edm` objective's preconditioning.
    Edm {
        sigma_min: f64,
        sigma_max: f64,
        sigma_data: f64,
    },
}

/// What a pipeline file may leave out. Linear betas left out follow Ho et al.'s
/// 1e-4..0.02 at T = 1000, scaled by 1000/T for other T as Nichol & Dhariwal do
/// (so a short chain still ends near pure noise), capped at 0.999.
/// Read after its `type` (see [`crate::tagged`]), so variants are externally tagged here
/// (its schema is the file's form, tagged by `type`).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(tag = "type")]
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
    Quadratic {
        beta_start: Option<f64>,
        beta_end: Option<f64>,
        #[serde(default = "steps")]
        steps: usize,
    },
    Sigmoid {
        beta_start: Option<f64>,
        beta_end: Option<f64>,
        #[serde(default = "steps")]
        steps: usize,
    },
    VpSde {
        #[serde(default = "beta_min")]
        beta_min: f64,
        #[serde(default = "beta_max")]
        beta_max: f64,
    },
    SubVpSde {
        #[serde(default = "beta_min")]
        beta_min: f64,
        #[serde(default = "beta_max")]
        beta_max: f64,
    },
    VeSde {
        #[serde(default = "sigma_min")]
        sigma_min: f64,
        #[serde(default = "ve_sigma_max")]
        sigma_max: f64,
    },
    /// Karras et al.'s defaults: sigma in [0.002, 80], sigma_data 0.5 (images in
    /// [-1, 1]; set it to the data's std).
    Edm {
        #[serde(default = "edm_sigma_min")]
        sigma_min: f64,
        #[serde(default = "edm_sigma_max")]
        sigma_max: f64,
        #[serde(default = "edm_sigma_data")]
        sigma_data: f64,
    },
}

/// Betas left out: Ho et al.'s 1e-4 and 0.02 at T = 1000, scaled by 1000/T, capped.
fn scaled_betas(start: Option<f64>, end: Option<f64>, steps: usize) -> (f64, f64) {
    let scale = 1000.0 / steps.max(1) as f64;
    (
        start.unwrap_or_else(|| (beta_start() * scale).min(0.999)),
        end.unwrap_or_else(|| (beta_end() * scale).min(0.999)),
    )
}

impl ScheduleParams {
    /// Every `type:`, in `runner list`'s order (a test holds it to the variants).
    pub const NAMES: &'static [&'static str] = &[
        "linear",
        "cosine",
        "quadratic",
        "sigmoid",
        "geometric",
        "vp_sde",
        "sub_vp_sde",
        "ve_sde",
        "edm",
    ];
}

impl<'de> Tagged<'de> for WrittenSchedule {
    const TAG: &'static str = "type";
    fn names() -> Vec<&'static str> {
        ScheduleParams::NAMES.to_vec()
    }
    fn variant<D: Deserializer<'de>>(_: &str, rest: D) -> Result<Self, D::Error> {
        WrittenSchedule::deserialize(rest)
    }
}

/// As written (what may be left out), chosen by `type`.
impl schemars::JsonSchema for ScheduleParams {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ScheduleParams".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        WrittenSchedule::json_schema(generator)
    }
}

impl<'de> Deserialize<'de> for ScheduleParams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ScheduleParams, D::Error> {
        crate::tagged::deserialize::<D, WrittenSchedule, ()>(d).map(|(w, ())| w.into())
    }
}

impl From<WrittenSchedule> for ScheduleParams {
    fn from(written: WrittenSchedule) -> Self {
        match written {
            WrittenSchedule::Linear {
                beta_start,
                beta_end,
                steps,
            } => {
                let (beta_start, beta_end) = scaled_betas(beta_start, beta_end, steps);
                ScheduleParams::Linear {
                    beta_start,
                    beta_end,
                    steps,
                }
            }
            WrittenSchedule::Quadratic {
                beta_start,
                beta_end,
                steps,
            } => {
                let (beta_start, beta_end) = scaled_betas(beta_start, beta_end, steps);
                ScheduleParams::Quadratic {
                    beta_start,
                    beta_end,
                    steps,
                }
            }
            WrittenSchedule::Sigmoid {
                beta_start,
                beta_end,
                steps,
            } => {
                let (beta_start, beta_end) = scaled_betas(beta_start, beta_end, steps);
                ScheduleParams::Sigmoid {
                    beta_start,
                    beta_end,
                    steps,
                }
            }
            WrittenSchedule::VpSde { beta_min, beta_max } => {
                ScheduleParams::VpSde { beta_min, beta_max }
            }
            WrittenSchedule::SubVpSde { beta_min, beta_max } => {
                ScheduleParams::SubVpSde { beta_min, beta_max }
            }
            WrittenSchedule::VeSde {
                sigma_min,
                sigma_max,
            } => ScheduleParams::VeSde {
                sigma_min,
                sigma_max,
            },
            WrittenSchedule::Edm {
                sigma_min,
                sigma_max,
                sigma_data,
            } => ScheduleParams::Edm {
                sigma_min,
                sigma_max,
                sigma_data,
            },
            WrittenSchedule::Cosine { steps, s, max_beta } => {
                ScheduleParams::Cosine { steps, s, max_beta }
            }
            WrittenSchedule::Geometric {
                sigma_max,
                sigma_min,
                levels,
            } => ScheduleParams::Geometric {
                sigma_max,
                sigma_min,
                levels,
            },
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
fn beta_min() -> f64 {
    0.1
}
fn beta_max() -> f64 {
    20.0
}
fn ve_sigma_max() -> f64 {
    50.0
}
fn edm_sigma_min() -> f64 {
    0.002
}
fn edm_sigma_max() -> f64 {
    80.0
}
fn edm_sigma_data() -> f64 {
    0.5
}

impl ScheduleParams {
    /// Checks values a user could get wrong.
    pub fn validate(&self) -> Result<(), String> {
        /// DDPM uses 1,000 steps and NCSN 10 or 232 levels; a million is far past any
        /// use, and a schedule is built whole (1e13 steps took all memory).
        const MAX_LEVELS: usize = 1_000_000;
        fn levels_within(name: &str, n: usize) -> Result<(), String> {
            if (1..=MAX_LEVELS).contains(&n) {
                Ok(())
            } else {
                Err(format!("`{name}` must be 1 to {MAX_LEVELS}, got {n}"))
            }
        }
        match *self {
            ScheduleParams::Linear {
                beta_start,
                beta_end,
                steps,
            }
            | ScheduleParams::Quadratic {
                beta_start,
                beta_end,
                steps,
            }
            | ScheduleParams::Sigmoid {
                beta_start,
                beta_end,
                steps,
            } => {
                levels_within("steps", steps)?;
                if !(0.0 < beta_start && beta_start <= beta_end && beta_end < 1.0) {
                    return Err(format!(
                        "need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}"
                    ));
                }
                Ok(())
            }
            ScheduleParams::Cosine { steps, s, max_beta } => {
                levels_within("steps", steps)?;
                if !(s >= 0.0) || !(0.0 < max_beta && max_beta < 1.0) {
                    return Err(format!(
                        "need s >= 0 and 0 < max_beta < 1, got s={s}, max_beta={max_beta}"
                    ));
                }
                Ok(())
            }
            ScheduleParams::Geometric {
                sigma_max,
                sigma_min,
                levels,
            } => {
                levels_within("levels", levels)?;
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
            ScheduleParams::VpSde { beta_min, beta_max }
            | ScheduleParams::SubVpSde { beta_min, beta_max } => {
                if !(0.0 < beta_min && beta_min <= beta_max && beta_max.is_finite()) {
                    return Err(format!(
                        "need 0 < beta_min <= beta_max, got beta_min={beta_min}, beta_max={beta_max}"
                    ));
                }
                Ok(())
            }
            ScheduleParams::VeSde {
                sigma_min,
                sigma_max,
            } => {
                if !(0.0 < sigma_min && sigma_min < sigma_max && sigma_max.is_finite()) {
                    return Err(format!(
                        "need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}"
                    ));
                }
                Ok(())
            }
            ScheduleParams::Edm {
                sigma_min,
                sigma_max,
                sigma_data,
            } => {
                if !(0.0 < sigma_min && sigma_min < sigma_max && sigma_max.is_finite()) {
                    return Err(format!(
                        "need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}"
                    ));
                }
                if !(sigma_data > 0.0 && sigma_data.is_finite()) {
                    return Err(format!(
                        "`sigma_data` (the data's std) must be positive, got {sigma_data}"
                    ));
                }
                Ok(())
            }
        }
    }

    /// The noise process this schedule defines.
    pub fn build(&self) -> Process {
        let linspace = |a: f64, b: f64, n: usize| -> Vec<f64> {
            (0..n)
                .map(|i| {
                    if n == 1 {
                        a
                    } else {
                        a + (b - a) * i as f64 / (n - 1) as f64
                    }
                })
                .collect()
        };
        match *self {
            ScheduleParams::Linear {
                beta_start,
                beta_end,
                steps,
            } => Process::from_betas(linspace(beta_start, beta_end, steps)),
            ScheduleParams::Quadratic {
                beta_start,
                beta_end,
                steps,
            } => Process::from_betas(
                linspace(beta_start.sqrt(), beta_end.sqrt(), steps)
                    .into_iter()
                    .map(|b| b * b)
                    .collect(),
            ),
            ScheduleParams::Sigmoid {
                beta_start,
                beta_end,
                steps,
            } => Process::from_betas(
                linspace(-6.0, 6.0, steps)
                    .into_iter()
                    .map(|x| beta_start + (beta_end - beta_start) / (1.0 + (-x).exp()))
                    .collect(),
            ),
            ScheduleParams::Cosine { steps, s, max_beta } => {
                let f = |t: f64| {
                    (((t / steps as f64 + s) / (1.0 + s)) * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                Process::from_betas(
                    (1..=steps)
                        .map(|t| (1.0 - f(t as f64) / f((t - 1) as f64)).min(max_beta))
                        .collect(),
                )
            }
            ScheduleParams::Geometric {
                sigma_max,
                sigma_min,
                levels,
            } => Process::SigmaLevels {
                sigmas: linspace(sigma_min.ln(), sigma_max.ln(), levels)
                    .into_iter()
                    .map(f64::exp)
                    .collect(),
            },
            ScheduleParams::VpSde { beta_min, beta_max } => Process::Vp { beta_min, beta_max },
            ScheduleParams::SubVpSde { beta_min, beta_max } => {
                Process::SubVp { beta_min, beta_max }
            }
            ScheduleParams::VeSde {
                sigma_min,
                sigma_max,
            } => Process::Ve {
                sigma_min,
                sigma_max,
            },
            ScheduleParams::Edm {
                sigma_min,
                sigma_max,
                sigma_data,
            } => Process::Edm {
                sigma_min,
                sigma_max,
                sigma_data,
            },
        }
    }
}

/// One row of `schedule.csv`: (level, t, beta, alpha_bar, sigma, snr). Discrete
/// processes have a row per level; SDEs are tabulated at 1000 times.
pub type ScheduleRow = (Option<usize>, f64, Option<f64>, f64, f64, f64);

/// The schedule as a table, from the process itself.
pub fn table(process: &Process) -> Vec<ScheduleRow> {
    let row = |level: Option<usize>, t: f64, beta: Option<f64>| {
        let (a, s) = (process.mean_coef(t), process.std(t));
        (level, t, beta, a * a, s, a * a / (s * s))
    };
    match process {
        Process::DiscreteVp { betas, .. } => betas
            .iter()
            .enumerate()
            .map(|(i, &b)| row(Some(i + 1), process.level_time(i + 1), Some(b)))
            .collect(),
        Process::SigmaLevels { sigmas } => (1..=sigmas.len())
            .map(|i| row(Some(i), process.level_time(i), None))
            .collect(),
        _ => {
            let t_min = process.t_min();
            (0..1000)
                .map(|i| {
                    let t = t_min + (1.0 - t_min) * i as f64 / 999.0;
                    let beta = process.is_vp_family().then(|| -2.0 * process.drift_coef(t));
                    row(None, t, beta)
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_the_variants_serde_reads() {
        let mut read = crate::tagged::serde_variants::<super::WrittenSchedule>();
        let mut listed = super::ScheduleParams::NAMES.to_vec();
        read.sort();
        listed.sort();
        assert_eq!(read, listed);
    }

    use super::*;

    /// (betas, alpha_bars) of a DDPM process.
    fn vp(process: Process) -> (Vec<f64>, Vec<f64>) {
        let Process::DiscreteVp {
            betas,
            log_alpha_bars,
        } = process
        else {
            panic!("not a DDPM schedule: {process:?}")
        };
        (betas, log_alpha_bars.iter().map(|l| l.exp()).collect())
    }

    #[test]
    fn linear_matches_ddpm_endpoints_and_product() {
        let s = ScheduleParams::Linear {
            beta_start: 1e-4,
            beta_end: 0.02,
            steps: 1000,
        }
        .build();
        let (betas, alpha_bars) = vp(s);
        assert_eq!(betas.len(), 1000);
        assert!((betas[0] - 1e-4).abs() < 1e-15);
        assert!((betas[999] - 0.02).abs() < 1e-15);
        assert!((betas[499] - (1e-4 + 0.0199 * 499.0 / 999.0)).abs() < 1e-15);
        let expected: f64 = betas.iter().map(|b| 1.0 - b).product();
        assert!((alpha_bars[999] - expected).abs() < 1e-15);
        // Known value for DDPM's schedule: alpha_bar_T is about 4.04e-5.
        assert!(
            (alpha_bars[999] - 4.035e-5).abs() < 1e-7,
            "{}",
            alpha_bars[999]
        );
    }

    #[test]
    fn cosine_matches_closed_form() {
        let (steps, s) = (50usize, 0.008);
        let sched = ScheduleParams::Cosine {
            steps,
            s,
            max_beta: 0.999,
        }
        .build();
        let (betas, alpha_bars) = vp(sched);
        let f = |t: f64| {
            (((t / steps as f64 + s) / (1.0 + s)) * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        for t in 1..steps {
            let closed = f(t as f64) / f(0.0);
            assert!(
                (alpha_bars[t - 1] - closed).abs() < 1e-12,
                "t={t}: {} vs {closed}",
                alpha_bars[t - 1]
            );
        }
        // The last beta is clipped at max_beta (f(T) = cos^2(pi/2) ~ 0).
        assert!((betas[steps - 1] - 0.999).abs() < 1e-12);
    }

    #[test]
    fn geometric_sigmas_are_geometric() {
        let sched = ScheduleParams::Geometric {
            sigma_max: 1.0,
            sigma_min: 0.01,
            levels: 10,
        }
        .build();
        let Process::SigmaLevels { sigmas } = sched else {
            panic!("geometric is sigmas")
        };
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
        assert_eq!(
            read("type: linear"),
            ScheduleParams::Linear {
                beta_start: 1e-4,
                beta_end: 0.02,
                steps: 1000
            }
        );
        let betas = |yaml: &str| match read(yaml) {
            ScheduleParams::Linear {
                beta_start,
                beta_end,
                ..
            } => (beta_start, beta_end),
            other => panic!("{other:?}"),
        };
        let close =
            |(a, b): (f64, f64), (x, y): (f64, f64)| (a - x).abs() < 1e-15 && (b - y).abs() < 1e-15;
        assert!(close(betas("{type: linear, steps: 50}"), (2e-3, 0.4)));
        assert!(
            close(betas("{type: linear, steps: 10}"), (0.01, 0.999)),
            "capped"
        );
        // Written values are kept as written.
        assert!(close(
            betas("{type: linear, steps: 50, beta_end: 0.02}"),
            (2e-3, 0.02)
        ));
        // T=50 with scaled betas ends near pure noise, as T=1000 does.
        let (_, alpha_bars) = vp(read("{type: linear, steps: 50}").build());
        assert!(alpha_bars[49] < 1e-4, "{}", alpha_bars[49]);
        assert!(
            serde_norway::from_str::<ScheduleParams>("{type: linear, beta: 1}")
                .unwrap_err()
                .to_string()
                .contains("unknown field `beta`")
        );
    }

    #[test]
    fn quadratic_and_sigmoid_follow_the_ddpm_code() {
        let (betas, _) = vp(ScheduleParams::Quadratic {
            beta_start: 1e-4,
            beta_end: 0.02,
            steps: 11,
        }
        .build());
        let mid = (1e-4f64.sqrt() + 0.02f64.sqrt()) / 2.0;
        assert!((betas[5] - mid * mid).abs() < 1e-15 && (betas[10] - 0.02).abs() < 1e-15);
        let (betas, _) = vp(ScheduleParams::Sigmoid {
            beta_start: 1e-4,
            beta_end: 0.02,
            steps: 11,
        }
        .build());
        assert!(
            (betas[5] - (1e-4 + 0.0199 * 0.5)).abs() < 1e-15,
            "sigmoid(0) = 1/2"
        );
        assert!(betas.windows(2).all(|w| w[1] > w[0]));
        let rows = table(
            &ScheduleParams::VpSde {
                beta_min: 0.1,
                beta_max: 20.0,
            }
            .build(),
        );
        assert_eq!(rows.len(), 1000);
        assert!((rows[999].1 - 1.0).abs() < 1e-12 && (rows[999].2.unwrap() - 20.0).abs() < 1e-9);
    }

    #[test]
    fn invalid_schedules_are_rejected() {
        assert!(
            ScheduleParams::Linear {
                beta_start: 0.02,
                beta_end: 1e-4,
                steps: 10
            }
            .validate()
            .is_err()
        );
        assert!(
            ScheduleParams::Geometric {
                sigma_max: 0.01,
                sigma_min: 1.0,
                levels: 10
            }
            .validate()
            .is_err()
        );
        assert!(
            ScheduleParams::Cosine {
                steps: 0,
                s: 0.008,
                max_beta: 0.999
            }
            .validate()
            .is_err()
        );
    }
}
