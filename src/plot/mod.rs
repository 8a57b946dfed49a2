//! Figures as PNG, each also as SVG beside it (vector figures go into a paper as they
//! are), drawn with plotters and a font embedded in the binary (no system font
//! configuration needed).

pub mod density;
pub mod images;
pub mod panels;

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

use crate::error::{StageError, StageResult};
use crate::metrics::Points;

const FONT_BYTES: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");
const SIZE: (u32, u32) = (640, 480);
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn ensure_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if register_font("sans-serif", FontStyle::Normal, FONT_BYTES).is_err() {
            eprintln!(
                "warning: the embedded plot font could not be loaded; figures will have no text"
            );
        }
    });
}

fn plot_error(path: &Path) -> impl Fn(String) -> StageError + '_ {
    move |e| StageError::Failed(format!("drawing {}: {e}", path.display()))
}

/// Draws a figure twice: `|root| body` runs once on a PNG of `size` pixels at `path`,
/// once on an SVG of the same size beside it (`x.png` -> `x.svg`). The body returns a
/// `StageResult<()>` and presents its root.
macro_rules! png_and_svg {
    ($path:expr, $size:expr, |$root:ident| $body:block) => {{
        let path: &std::path::Path = $path;
        let size: (u32, u32) = $size;
        {
            let $root = plotters::prelude::BitMapBackend::new(path, size).into_drawing_area();
            (|| -> $crate::error::StageResult<()> { $body })()?;
        }
        let svg = path.with_extension("svg");
        let $root = plotters::prelude::SVGBackend::new(&svg, size).into_drawing_area();
        (|| -> $crate::error::StageResult<()> { $body })()
    }};
}

pub(crate) use png_and_svg;

/// The pixel size of a figure of `count` panels of `panel` pixels each, at most
/// `per_row` side by side, under a title (see [`titled_panels`]).
fn panels_size(panel: (u32, u32), count: usize, per_row: usize) -> (u32, u32) {
    let columns = count.clamp(1, per_row);
    let rows = count.div_ceil(columns).max(1);
    (panel.0 * columns as u32, panel.1 * rows as u32 + 40)
}

/// Splits `root` (of [`panels_size`]) into `count` panels under a title: the titled
/// root (to `present`) and the panels' areas in reading order.
#[allow(clippy::type_complexity)]
fn titled_panels<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    count: usize,
    per_row: usize,
) -> Result<(DrawingArea<DB, Shift>, Vec<DrawingArea<DB, Shift>>), String> {
    let columns = count.clamp(1, per_row);
    let rows = count.div_ceil(columns).max(1);
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    let areas = root.split_evenly((rows, columns));
    Ok((root, areas))
}

/// Padded bounds of the first two coordinates of some point sets.
fn bounds(sets: &[Points]) -> ((f64, f64), (f64, f64)) {
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for set in sets {
        for i in 0..set.len() {
            for (j, &v) in set.row(i).iter().take(2).enumerate() {
                if v.is_finite() {
                    lo[j] = lo[j].min(v as f64);
                    hi[j] = hi[j].max(v as f64);
                }
            }
        }
    }
    let pad = |a: f64, b: f64| {
        if !a.is_finite() {
            return (-1.0, 1.0);
        }
        let p = ((b - a) * 0.05).max(1e-3);
        (a - p, b + p)
    };
    (pad(lo[0], hi[0]), pad(lo[1], hi[1]))
}

/// Samples (colour) over reference data (grey), first two coordinates.
pub fn scatter(path: &Path, title: &str, reference: Points, samples: Points) -> StageResult<()> {
    ensure_font();
    let fail = plot_error(path);
    png_and_svg!(path, SIZE, |root| {
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        // Axes from the reference, so far-off samples do not squash the picture.
        let ((x0, x1), (y0, y1)) = bounds(&[reference]);
        let (w, h) = ((x1 - x0) * 0.25, (y1 - y0) * 0.25);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d((x0 - w)..(x1 + w), (y0 - h)..(y1 + h))
            .map_err(|e| fail(e.to_string()))?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        let limit = 5000;
        for (set, color, label) in [
            (reference, RGBColor(170, 170, 170), "held-out data"),
            (samples, PALETTE[0], "samples"),
        ] {
            let step = (set.len() / limit).max(1);
            chart
                .draw_series((0..set.len()).step_by(step).map(|i| {
                    let p = set.row(i);
                    Circle::new(
                        (p[0] as f64, *p.get(1).unwrap_or(&0.0) as f64),
                        1,
                        color.mix(0.6).filled(),
                    )
                }))
                .map_err(|e| fail(e.to_string()))?
                .label(label)
                .legend(move |(x, y)| Circle::new((x, y), 3, color.filled()));
        }
        draw_legend(&mut chart).map_err(&fail)?;
        root.present().map_err(|e| fail(e.to_string()))
    })
}

/// Line plot of named (x, y) series on linear axes.
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> StageResult<()> {
    line_chart(
        path,
        &LineChart {
            title,
            x_label,
            y_label,
            series,
            errors: &[],
            log_x: false,
            log_y: false,
        },
    )
    .map(|_| ())
}

/// A line chart; log axes need positive values (others are dropped, and said so).
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [(&'a str, Vec<(f64, f64)>)],
    /// Per series, per point: the half-height of an error bar (0: none). Empty for a
    /// chart without error bars.
    pub errors: &'a [Vec<f64>],
    pub log_x: bool,
    pub log_y: bool,
}

impl LineChart<'_> {
    /// The error bar of point `i` of series `s`, 0 when it has none.
    fn error(&self, s: usize, i: usize) -> f64 {
        self.errors
            .get(s)
            .and_then(|e| e.get(i))
            .copied()
            .filter(|e| e.is_finite() && *e > 0.0)
            .unwrap_or(0.0)
    }

    /// The bottom of an error bar from `y` down by `e`, kept on a log axis.
    fn low(&self, y: f64, e: f64) -> f64 {
        if self.log_y && y - e <= 0.0 {
            y / 10.0
        } else {
            y - e
        }
    }
}

/// Draws the chart; returns, when a log axis left values out (zeros: an exact model's
/// score error), the sentence that says so, which is also written under the chart.
pub fn line_chart(path: &Path, spec: &LineChart) -> StageResult<Option<String>> {
    let usable = |&(x, y): &(f64, f64)| {
        x.is_finite() && y.is_finite() && (!spec.log_x || x > 0.0) && (!spec.log_y || y > 0.0)
    };
    let note = not_drawn(spec);
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for (s, (_, points)) in spec.series.iter().enumerate() {
        for (i, &(x, y)) in points.iter().enumerate() {
            if usable(&(x, y)) {
                let e = spec.error(s, i);
                (x0, x1) = (x0.min(x), x1.max(x));
                (y0, y1) = (y0.min(spec.low(y, e)), y1.max(y + e));
            }
        }
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (1.0, 10.0, 1.0, 10.0);
    }
    let x1 = if x1 > x0 {
        x1
    } else {
        x0 + x0.abs().max(1.0) * 1e-3
    };
    // A little room at both ends, so end points and their tick labels are not clipped.
    let (x0, x1) = if spec.log_x {
        (x0 / 1.15, x1 * 1.15)
    } else {
        (x0 - (x1 - x0) * 0.03, x1 + (x1 - x0) * 0.03)
    };
    let (y0, y1) = if spec.log_y {
        (y0 / 1.2, y1 * 1.2)
    } else {
        let pad = ((y1 - y0) * 0.05).max(1e-6);
        (y0 - pad, y1 + pad)
    };
    let drawn = note.as_deref();
    match (spec.log_x, spec.log_y) {
        (false, false) => draw_lines(path, spec, x0..x1, y0..y1, &usable, drawn),
        (true, false) => draw_lines(path, spec, (x0..x1).log_scale(), y0..y1, &usable, drawn),
        (false, true) => draw_lines(path, spec, x0..x1, (y0..y1).log_scale(), &usable, drawn),
        (true, true) => draw_lines(
            path,
            spec,
            (x0..x1).log_scale(),
            (y0..y1).log_scale(),
            &usable,
            drawn,
        ),
    }?;
    Ok(note)
}

/// What the log axes of `spec` cannot show: finite values at or below zero, by series
/// (`not drawn on the log scale: oracle (6 of 6 values <= 0)`).
fn not_drawn(spec: &LineChart) -> Option<String> {
    let hidden = |&(x, y): &(f64, f64)| {
        x.is_finite() && y.is_finite() && ((spec.log_x && x <= 0.0) || (spec.log_y && y <= 0.0))
    };
    let parts: Vec<String> = spec
        .series
        .iter()
        .filter_map(|(name, points)| {
            let n = points.iter().filter(|p| hidden(p)).count();
            (n > 0).then(|| format!("{name} ({n} of {} values <= 0)", points.len()))
        })
        .collect();
    (!parts.is_empty()).then(|| format!("not drawn on the log scale: {}", parts.join(", ")))
}

fn draw_lines<X, Y>(
    path: &Path,
    spec: &LineChart,
    x: X,
    y: Y,
    usable: &dyn Fn(&(f64, f64)) -> bool,
    note: Option<&str>,
) -> StageResult<()>
where
    X: AsRangedCoord<Value = f64> + Clone,
    Y: AsRangedCoord<Value = f64> + Clone,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    ensure_font();
    let fail = plot_error(path);
    png_and_svg!(path, SIZE, |root| {
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(spec.title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(x.clone(), y.clone())
            .map_err(|e| fail(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(spec.x_label)
            .y_desc(spec.y_label)
            .x_labels(6)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        for (i, (name, points)) in spec.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let bars: Vec<ErrorBar<f64, f64, _>> = points
                .iter()
                .enumerate()
                .filter(|&(k, p)| usable(p) && spec.error(i, k) > 0.0)
                .map(|(k, &(x, y))| {
                    let e = spec.error(i, k);
                    ErrorBar::new_vertical(x, spec.low(y, e), y, y + e, color.stroke_width(1), 8)
                })
                .collect();
            chart.draw_series(bars).map_err(|e| fail(e.to_string()))?;
            let points: Vec<(f64, f64)> = points.iter().copied().filter(|p| usable(p)).collect();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| fail(e.to_string()))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 15, y)], color.stroke_width(2))
                });
            if points.len() < 30 {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
        draw_legend(&mut chart).map_err(&fail)?;
        if let Some(note) = note {
            let style = TextStyle::from(("sans-serif", 13))
                .color(&RGBColor(90, 90, 90))
                .pos(Pos::new(HPos::Left, VPos::Bottom));
            root.draw(&Text::new(note.to_string(), (8, SIZE.1 as i32 - 4), style))
                .map_err(|e| fail(e.to_string()))?;
        }
        root.present().map_err(|e| fail(e.to_string()))
    })
}

/// The series legend, boxed, in the same style on every chart.
fn draw_legend<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

/// A tick label: integers without a decimal point, others with few digits.
fn tick(v: f64) -> String {
    if v == v.round() && v.abs() < 1e7 {
        format!("{v:.0}")
    } else if v.abs() >= 1e-3 && v.abs() < 1e5 {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:.1e}")
    }
}

/// Grouped bars: one group per category, one bar per series (None: no value), with
/// an error bar of `errors[series][category]` where it is above 0 (`errors` may be
/// empty).
pub fn bars(
    path: &Path,
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[(String, Vec<Option<f64>>)],
    errors: &[Vec<f64>],
) -> StageResult<()> {
    ensure_font();
    let fail = plot_error(path);
    png_and_svg!(path, SIZE, |root| {
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        let error = |s: usize, c: usize| {
            errors
                .get(s)
                .and_then(|e| e.get(c))
                .copied()
                .filter(|e| e.is_finite() && *e > 0.0)
                .unwrap_or(0.0)
        };
        let values = series
            .iter()
            .enumerate()
            .flat_map(|(s, (_, v))| {
                v.iter()
                    .enumerate()
                    .filter_map(move |(c, v)| v.map(|v| (s, c, v)))
            })
            .filter(|(_, _, v)| v.is_finite())
            .flat_map(|(s, c, v)| [v - error(s, c), v + error(s, c)]);
        let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let hi = if hi > lo { hi } else { lo + 1.0 };
        let pad = (hi - lo) * 0.08;
        let n = categories.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n, lo.min(0.0)..(hi + pad))
            .map_err(|e| fail(e.to_string()))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(y_label)
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| fail(e.to_string()))?;
        let width = 0.8 / series.len().max(1) as f64;
        for (s, (name, values)) in series.iter().enumerate() {
            let color = PALETTE[s % PALETTE.len()];
            let rects = values.iter().enumerate().filter_map(|(c, v)| {
                let v = (*v).filter(|v| v.is_finite())?;
                let left = c as f64 + 0.1 + s as f64 * width;
                Some(Rectangle::new(
                    [(left, 0.0), (left + width * 0.95, v)],
                    color.filled(),
                ))
            });
            chart
                .draw_series(rects)
                .map_err(|e| fail(e.to_string()))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
            let whiskers = values.iter().enumerate().filter_map(|(c, v)| {
                let v = (*v).filter(|v| v.is_finite())?;
                let e = error(s, c);
                let middle = c as f64 + 0.1 + s as f64 * width + width * 0.475;
                (e > 0.0).then(|| {
                    ErrorBar::new_vertical(middle, v - e, v, v + e, BLACK.stroke_width(1), 8)
                })
            });
            chart
                .draw_series(whiskers)
                .map_err(|e| fail(e.to_string()))?;
        }
        draw_legend(&mut chart).map_err(&fail)?;
        let style = TextStyle::from(("sans-serif", 14)).pos(Pos::new(HPos::Center, VPos::Top));
        for (c, name) in categories.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(c as f64 + 0.5, lo.min(0.0)));
            root.draw(&Text::new(name.clone(), (px, py + 6), style.clone()))
                .map_err(|e| fail(e.to_string()))?;
        }
        root.present().map_err(|e| fail(e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log axis cannot show zeros: the chart says which series lost which values,
    /// on the figure (PNG and SVG) and to the caller, instead of dropping them.
    #[test]
    fn log_axes_say_what_they_leave_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let series = [
            ("net", vec![(0.1, 0.5), (1.0, 0.2)]),
            ("oracle", vec![(0.1, 0.0), (1.0, 0.0)]),
        ];
        let chart = |log_y| LineChart {
            title: "score error",
            x_label: "std",
            y_label: "mse",
            series: &series,
            errors: &[],
            log_x: true,
            log_y,
        };
        let note = line_chart(&path, &chart(true)).unwrap();
        let want = "not drawn on the log scale: oracle (2 of 2 values <= 0)";
        assert_eq!(note.as_deref(), Some(want));
        assert!(path.is_file());
        let svg = std::fs::read_to_string(path.with_extension("svg")).unwrap();
        assert!(svg.contains("oracle (2 of 2 values &lt;= 0)"), "{svg}");
        // Error bars are drawn where a point has one.
        let lines = |svg: &str| svg.matches("<line").count() + svg.matches("<polyline").count();
        let plain = lines(&svg);
        let errors = [vec![0.1, 0.05], vec![]];
        line_chart(
            &path,
            &LineChart {
                errors: &errors,
                ..chart(true)
            },
        )
        .unwrap();
        let svg = std::fs::read_to_string(path.with_extension("svg")).unwrap();
        assert!(lines(&svg) >= plain + 2, "{} vs {plain}", lines(&svg));
        // On a linear y axis the zeros are drawn, and nothing is said.
        assert_eq!(line_chart(&path, &chart(false)).unwrap(), None);
        let svg = std::fs::read_to_string(path.with_extension("svg")).unwrap();
        assert!(!svg.contains("not drawn"));
    }
}
