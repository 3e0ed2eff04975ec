//! Pictures where people would rather look than read: SVG charts drawn with
//! plotters (its SVG backend only: text is left to the viewer's fonts, so
//! no font library is needed to draw them).
//!
//! - [`sizing`]: machines needed against the workload, one line per profile
//!   (`hashrig size --plot`);
//! - [`sig_latency`]: batch latency against batch size, one line per scheme
//!   and engine (`hashrig bench sig --plot`).

use std::path::Path;

use plotters::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("nothing to plot: {0}")]
    Empty(String),
    #[error("drawing {path}: {reason}")]
    Draw { path: String, reason: String },
}

/// A line of the sizing chart: a profile's machine count at each workload
/// point (x in the chart's unit).
pub struct SizingLine {
    pub profile: String,
    pub points: Vec<(f64, u64)>,
}

/// A line of the latency chart: (batch size, p50, p99) in seconds.
pub struct LatencyLine {
    pub label: String,
    pub points: Vec<(usize, f64, f64)>,
}

const SIZE: (u32, u32) = (960, 560);

/// Colours that stay apart on white, then repeat.
fn color(i: usize) -> RGBColor {
    const P: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    P[i % P.len()]
}

fn draw_err(path: &Path) -> impl Fn(String) -> PlotError + '_ {
    move |reason| PlotError::Draw { path: path.display().to_string(), reason }
}

/// Machines needed (y) against the workload (x, in `x_unit`), a step line
/// per profile. `title` says what the workload is.
pub fn sizing(path: &Path, title: &str, x_unit: &str, lines: &[SizingLine]) -> Result<(), PlotError> {
    let pts = lines.iter().flat_map(|l| &l.points);
    let x_max = pts.clone().map(|p| p.0).fold(0.0, f64::max);
    let y_max = pts.map(|p| p.1).max().unwrap_or(0);
    if lines.iter().all(|l| l.points.is_empty()) || !(x_max > 0.0 && x_max.is_finite()) {
        return Err(PlotError::Empty("no profile can size this workload".into()));
    }
    let (div, prefix) = crate::sched::stats::si_prefix(x_max);
    let e = draw_err(path);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max / div, 0.0..(y_max as f64 * 1.08).max(1.0))
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .x_desc(format!("workload ({prefix}{x_unit})"))
        .y_desc("machines needed")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, l) in lines.iter().enumerate().filter(|(_, l)| !l.points.is_empty()) {
        let c = color(i);
        // A step: the count holds until the workload needs one more machine.
        let mut steps = Vec::with_capacity(l.points.len() * 2);
        for (j, &(x, n)) in l.points.iter().enumerate() {
            if j > 0 {
                steps.push((x / div, l.points[j - 1].1 as f64));
            }
            steps.push((x / div, n as f64));
        }
        chart
            .draw_series(LineSeries::new(steps, c.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(l.profile.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// Batch latency (y, log) against batch size (x, log), per line: p50 solid,
/// p99 dashed in the same colour.
pub fn sig_latency(path: &Path, title: &str, lines: &[LatencyLine]) -> Result<(), PlotError> {
    let pts: Vec<(usize, f64, f64)> = lines.iter().flat_map(|l| l.points.iter().copied()).collect();
    let ok = |v: f64| v.is_finite() && v > 0.0;
    if pts.is_empty() || pts.iter().any(|p| p.0 == 0 || !ok(p.1) || !ok(p.2)) {
        return Err(PlotError::Empty("no latency measured (or a non-positive figure)".into()));
    }
    let x_max = pts.iter().map(|p| p.0).max().unwrap_or(1).max(2) as f64;
    let y_min = pts.iter().map(|p| p.1.min(p.2)).fold(f64::INFINITY, f64::min) / 1.5;
    let y_max = pts.iter().map(|p| p.1.max(p.2)).fold(0.0, f64::max) * 1.5;
    let e = draw_err(path);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((1.0..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .x_desc("batch size (signatures)")
        .y_desc("batch latency (p50 solid, p99 dashed)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| fmt_seconds(*v))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, l) in lines.iter().enumerate() {
        let c = color(i);
        let p50: Vec<(f64, f64)> = l.points.iter().map(|p| (p.0 as f64, p.1)).collect();
        let p99: Vec<(f64, f64)> = l.points.iter().map(|p| (p.0 as f64, p.2)).collect();
        chart
            .draw_series(LineSeries::new(p50.clone(), c.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(l.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(p50.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(|x| e(x.to_string()))?;
        chart.draw_series(DashedLineSeries::new(p99, 6, 4, c.stroke_width(1))).map_err(|x| e(x.to_string()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// "250µs", "1.5ms", "2s".
fn fmt_seconds(s: f64) -> String {
    match s {
        s if s >= 1.0 => format!("{}s", trim(s)),
        s if s >= 1e-3 => format!("{}ms", trim(s * 1e3)),
        s => format!("{}µs", trim(s * 1e6)),
    }
}

fn trim(v: f64) -> String {
    let t = format!("{v:.1}");
    t.strip_suffix(".0").map(str::to_string).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_read_well() {
        assert_eq!(fmt_seconds(0.00025), "250µs");
        assert_eq!(fmt_seconds(0.0015), "1.5ms");
        assert_eq!(fmt_seconds(2.0), "2s");
    }

    #[test]
    fn nothing_to_draw_is_an_error_not_a_blank_picture() {
        let p = std::env::temp_dir().join(format!("hashrig-plot-empty-{}.svg", std::process::id()));
        assert!(matches!(sizing(&p, "t", "H/s", &[]), Err(PlotError::Empty(_))));
        let empty = SizingLine { profile: "a".into(), points: vec![] };
        assert!(matches!(sizing(&p, "t", "H/s", &[empty]), Err(PlotError::Empty(_))));
        assert!(matches!(sig_latency(&p, "t", &[]), Err(PlotError::Empty(_))));
        let zero = LatencyLine { label: "x".into(), points: vec![(1, 0.0, 1.0)] };
        assert!(matches!(sig_latency(&p, "t", &[zero]), Err(PlotError::Empty(_))));
        assert!(!p.exists());
    }
}
