//! `schedule`: tabulates a noise schedule (`schedule.csv`) and plots it.

use polars::prelude::*;

use super::context::StageContext;
use super::kind::{Kind, Neighbours, Role};
use crate::artifacts::write_csv;
use crate::error::{StageError, StageResult};
use crate::plot;

pub use crate::diffusion::schedule::ScheduleParams;
use crate::diffusion::schedule::{ScheduleRow, table};

/// The `schedule` kind.
pub struct Schedule;

impl Kind for Schedule {
    const NAME: &'static str = "schedule";
    /// Bumped whenever the bytes this stage writes change (3: the figure also as SVG).
    const VERSION: u32 = 3;
    const ROLES: &'static [Role] = &[];
    const WRITES: &'static str =
        "`schedule.csv` (level, t, beta, alpha_bar, sigma, snr), `schedule.png`";
    const FIGURES: &'static [(&'static str, &'static str)] = &[("schedule.png", "Noise schedules")];
    type Params = ScheduleParams;

    fn validate(params: &ScheduleParams, _: &Neighbours) -> Result<(), String> {
        params.validate()
    }

    fn run(params: &ScheduleParams, ctx: &StageContext) -> StageResult<()> {
        run(params, ctx)
    }
}

fn run(params: &ScheduleParams, ctx: &StageContext) -> StageResult<()> {
    let rows = table(&params.build());
    let column = |name: &str, f: &dyn Fn(&ScheduleRow) -> f64| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<f64>>())
    };
    let mut df = DataFrame::new_infer_height(vec![
        Column::new(
            "level".into(),
            rows.iter()
                .map(|r| r.0.map(|l| l as u64))
                .collect::<Vec<Option<u64>>>(),
        ),
        column("t", &|r| r.1),
        Column::new(
            "beta".into(),
            rows.iter().map(|r| r.2).collect::<Vec<Option<f64>>>(),
        ),
        column("alpha_bar", &|r| r.3),
        column("sigma", &|r| r.4),
        column("snr", &|r| r.5),
    ])
    .map_err(|e| StageError::Failed(e.to_string()))?;
    write_csv(&ctx.path("schedule.csv"), &mut df)?;
    let sigma: Vec<(f64, f64)> = rows.iter().map(|r| (r.1, r.4)).collect();
    let snr: Vec<(f64, f64)> = rows.iter().map(|r| (r.1, r.5.log10())).collect();
    plot::lines(
        &ctx.path("schedule.png"),
        &format!("schedule `{}`", ctx.id),
        "time t",
        "value",
        &[("sigma(t)", sigma), ("log10 snr(t)", snr)],
    )
}
