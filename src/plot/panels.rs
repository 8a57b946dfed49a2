//! Figures made of several 2D panels side by side: a sampling timeline (particles at
//! evenly spaced steps), the projections of 3D points, and score vector fields
//! (learned against exact, per time).

use std::ops::Range;
use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::{PALETTE, bounds, ensure_font, panels_size, plot_error, png_and_svg, titled_panels};
use crate::error::StageResult;
use crate::metrics::Points;

const PANEL: (u32, u32) = (300, 300);
const GREY: RGBColor = RGBColor(170, 170, 170);

type Panel<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A captioned panel with a frame and no ticks: the panels share their axes, so
/// numbers on each would only repeat.
fn panel<'a, DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    x: Range<f64>,
    y: Range<f64>,
) -> Result<Panel<'a, DB>, String> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(6)
        .build_cartesian_2d(x, y)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(0)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(chart)
}

/// One panel of a timeline: a caption and the particles at that moment.
pub struct Frame<'a> {
    pub caption: String,
    pub points: Points<'a>,
}

/// Particles moving from the prior to the data: one panel per frame (at most five per
/// row), all on the reference's axes so motion is comparable across panels.
pub fn timeline(path: &Path, title: &str, reference: Points, frames: &[Frame]) -> StageResult<()> {
    ensure_font();
    let fail = plot_error(path);
    png_and_svg!(path, panels_size(PANEL, frames.len(), 5), |root| {
        let (root, areas) = titled_panels(root, title, frames.len(), 5).map_err(&fail)?;
        let ((x0, x1), (y0, y1)) = bounds(&[reference]);
        let (w, h) = ((x1 - x0) * 0.5, (y1 - y0) * 0.5);
        for (area, frame) in areas.iter().zip(frames) {
            let mut chart = panel(area, &frame.caption, (x0 - w)..(x1 + w), (y0 - h)..(y1 + h))
                .map_err(&fail)?;
            let inside = |p: &[f32]| {
                let (x, y) = (p[0] as f64, *p.get(1).unwrap_or(&0.0) as f64);
                ((x0 - w..x1 + w).contains(&x) && (y0 - h..y1 + h).contains(&y)).then_some((x, y))
            };
            for (set, color) in [(reference, GREY), (frame.points, PALETTE[0])] {
                let step = (set.len() / 2000).max(1);
                chart
                    .draw_series(
                        (0..set.len())
                            .step_by(step)
                            .filter_map(|i| inside(set.row(i)))
                            .map(|p| Circle::new(p, 1, color.mix(0.6).filled())),
                    )
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
        root.present().map_err(|e| fail(e.to_string()))
    })
}

/// Points of three or more dimensions as three 2D projections (x-y, x-z, y-z),
/// samples (colour) over the reference (grey), each on the reference's axes.
pub fn projections(
    path: &Path,
    title: &str,
    reference: Points,
    samples: Points,
) -> StageResult<()> {
    ensure_font();
    let fail = plot_error(path);
    png_and_svg!(path, panels_size(PANEL, 3, 3), |root| {
        let (root, areas) = titled_panels(root, title, 3, 3).map_err(&fail)?;
        let names = ["x", "y", "z"];
        for (area, (i, j)) in areas.iter().zip([(0, 1), (0, 2), (1, 2)]) {
            let pick = |set: &[f32]| -> Vec<f32> {
                set.chunks(reference.dim)
                    .flat_map(|p| [p[i], p[j]])
                    .collect()
            };
            let (r, s) = (pick(reference.data), pick(samples.data));
            let (r, s) = (Points::new(&r, 2), Points::new(&s, 2));
            let ((x0, x1), (y0, y1)) = bounds(&[r]);
            let (w, h) = ((x1 - x0) * 0.25, (y1 - y0) * 0.25);
            let caption = format!("{}-{}", names[i], names[j]);
            let mut chart =
                panel(area, &caption, (x0 - w)..(x1 + w), (y0 - h)..(y1 + h)).map_err(&fail)?;
            for (set, color) in [(r, GREY), (s, PALETTE[0])] {
                let step = (set.len() / 3000).max(1);
                chart
                    .draw_series((0..set.len()).step_by(step).filter_map(|k| {
                        let p = set.row(k);
                        let (x, y) = (p[0] as f64, p[1] as f64);
                        ((x0 - w..x1 + w).contains(&x) && (y0 - h..y1 + h).contains(&y))
                            .then(|| Circle::new((x, y), 1, color.mix(0.6).filled()))
                    }))
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
        root.present().map_err(|e| fail(e.to_string()))
    })
}

/// One panel of a vector field: arrows from each grid point, the model's (blue, thin)
/// over the exact one (orange, wide) when it is known, both at the same scale.
pub struct Field {
    pub caption: String,
    /// Grid points, row-major [n, 2].
    pub at: Vec<f32>,
    pub learned: Vec<f32>,
    pub exact: Option<Vec<f32>>,
}

/// Score fields at several times, one panel each; arrows are rescaled per panel (the
/// score grows like 1/std) so the longest typical arrow spans about one grid cell.
pub fn vector_fields(
    path: &Path,
    title: &str,
    reference: Points,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    cell: f64,
    fields: &[Field],
) -> StageResult<()> {
    ensure_font();
    let fail = plot_error(path);
    let columns = fields.len().max(1);
    png_and_svg!(path, (360 * columns as u32, 400), |root| {
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        let root = root
            .titled(title, ("sans-serif", 20))
            .map_err(|e| fail(e.to_string()))?;
        let (x0, x1, y0, y1) = (x0 - cell, x1 + cell, y0 - cell, y1 + cell);
        for (area, field) in root.split_evenly((1, columns)).iter().zip(fields) {
            let mut chart = panel(area, &field.caption, x0..x1, y0..y1).map_err(&fail)?;
            let step = (reference.len() / 1000).max(1);
            chart
                .draw_series((0..reference.len()).step_by(step).map(|i| {
                    let p = reference.row(i);
                    Circle::new((p[0] as f64, p[1] as f64), 1, GREY.mix(0.4).filled())
                }))
                .map_err(|e| fail(e.to_string()))?;
            let scale = cell / typical_length(field.exact.as_deref().unwrap_or(&field.learned));
            let mut layers = Vec::new();
            if let Some(exact) = &field.exact {
                layers.push((exact.as_slice(), PALETTE[1].stroke_width(3)));
            }
            layers.push((field.learned.as_slice(), PALETTE[0].stroke_width(1)));
            for (vectors, style) in layers {
                chart
                    .draw_series(
                        field
                            .at
                            .chunks(2)
                            .zip(vectors.chunks(2))
                            .map(|(p, v)| arrow(p, v, scale, 1.5 * cell, style)),
                    )
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
        root.present().map_err(|e| fail(e.to_string()))
    })
}

/// The 90th percentile of arrow lengths: robust to the few huge scores near modes.
fn typical_length(vectors: &[f32]) -> f64 {
    let mut lengths: Vec<f64> = vectors
        .chunks(2)
        .map(|v| (v[0] as f64).hypot(v[1] as f64))
        .filter(|l| l.is_finite())
        .collect();
    if lengths.is_empty() {
        return 1.0;
    }
    lengths.sort_by(f64::total_cmp);
    lengths[(lengths.len() * 9 / 10).min(lengths.len() - 1)].max(1e-12)
}

/// A shaft and a two-stroke head; arrows longer than 1.5 cells are clipped to it.
fn arrow(
    p: &[f32],
    v: &[f32],
    scale: f64,
    limit: f64,
    style: ShapeStyle,
) -> PathElement<(f64, f64)> {
    let (x, y) = (p[0] as f64, p[1] as f64);
    let (mut dx, mut dy) = (v[0] as f64 * scale, v[1] as f64 * scale);
    let length = dx.hypot(dy);
    if length > limit {
        (dx, dy) = (dx * limit / length, dy * limit / length);
    }
    let (tx, ty) = (x + dx, y + dy);
    let (hx, hy) = (-dx * 0.3, -dy * 0.3);
    let (c, s) = (0.5f64.cos(), 0.5f64.sin());
    let left = (tx + hx * c - hy * s, ty + hx * s + hy * c);
    let right = (tx + hx * c + hy * s, ty - hx * s + hy * c);
    PathElement::new(vec![(x, y), (tx, ty), left, (tx, ty), right], style)
}
