//! 1D data drawn as densities: a histogram of the points under a curve (the true
//! density where it is known), one panel per moment of a process. A scatter of 1D
//! points says nothing about how much mass each mode holds; this does.

use std::path::Path;

use plotters::prelude::*;

use super::{PALETTE, ensure_font, panels_size, plot_error, png_and_svg, titled_panels};
use crate::error::StageResult;

const PANEL: (u32, u32) = (320, 260);
const BINS: usize = 60;

/// One panel: a histogram of `points` and, when known, the density they should follow.
pub struct DensityPanel<'a> {
    pub caption: String,
    pub points: &'a [f32],
    /// (x, density) along the axis, drawn as a line over the histogram.
    pub curve: Option<Vec<(f64, f64)>>,
}

/// Normalised histogram of `points` on `range`: (left edge, density) per bin, so its
/// area over the range is the fraction of points inside it.
pub fn histogram(points: &[f32], range: (f64, f64), bins: usize) -> Vec<(f64, f64)> {
    let width = (range.1 - range.0) / bins as f64;
    let mut counts = vec![0usize; bins];
    for &p in points {
        let bin = ((p as f64 - range.0) / width).floor();
        if bin >= 0.0 && (bin as usize) < bins {
            counts[bin as usize] += 1;
        }
    }
    let n = points.len().max(1) as f64;
    counts
        .iter()
        .enumerate()
        .map(|(i, &c)| (range.0 + i as f64 * width, c as f64 / (n * width)))
        .collect()
}

/// Panels side by side (at most five per row) on a shared x range.
pub fn densities(
    path: &Path,
    title: &str,
    range: (f64, f64),
    panels: &[DensityPanel],
) -> StageResult<()> {
    ensure_font();
    let fail = plot_error(path);
    png_and_svg!(path, panels_size(PANEL, panels.len(), 5), |root| {
        let (root, areas) = titled_panels(root, title, panels.len(), 5).map_err(&fail)?;
        let width = (range.1 - range.0) / BINS as f64;
        for (area, panel) in areas.iter().zip(panels) {
            let bars = histogram(panel.points, range, BINS);
            let top = bars
                .iter()
                .map(|b| b.1)
                .chain(panel.curve.iter().flatten().map(|c| c.1))
                .filter(|v| v.is_finite())
                .fold(0f64, f64::max)
                .max(1e-6)
                * 1.1;
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.caption, ("sans-serif", 15))
                .margin(6)
                .x_label_area_size(20)
                .y_label_area_size(30)
                .build_cartesian_2d(range.0..range.1, 0.0..top)
                .map_err(|e| fail(e.to_string()))?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(5)
                .y_labels(3)
                .draw()
                .map_err(|e| fail(e.to_string()))?;
            chart
                .draw_series(bars.iter().map(|&(x, d)| {
                    Rectangle::new([(x, 0.0), (x + width, d)], PALETTE[0].mix(0.5).filled())
                }))
                .map_err(|e| fail(e.to_string()))?;
            if let Some(curve) = &panel.curve {
                chart
                    .draw_series(LineSeries::new(
                        curve.iter().copied(),
                        PALETTE[1].stroke_width(2),
                    ))
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
        root.present().map_err(|e| fail(e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_a_density() {
        let points: Vec<f32> = (0..1000).map(|i| (i as f32 + 0.5) / 1000.0).collect();
        let bars = histogram(&points, (0.0, 2.0), 20);
        let area: f64 = bars.iter().map(|b| b.1 * 0.1).sum();
        assert!((area - 1.0).abs() < 1e-9, "{area}");
        // Uniform on [0, 1): density 1 there, 0 beyond.
        assert!(bars[..10].iter().all(|b| (b.1 - 1.0).abs() < 1e-9));
        assert!(bars[10..].iter().all(|b| b.1 == 0.0));
    }
}
