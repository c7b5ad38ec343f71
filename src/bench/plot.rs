//! The latency-by-percentile chart: x is the percentile on a "nines" scale
//! (50, 90, 99, 99.9, 99.99, … equally spaced), y is latency in microseconds on
//! a log scale, one line per (target, op type). Drawn with plotters as SVG.

use std::path::Path;

use plotters::prelude::*;

use super::driver::Measured;
use super::workload::OpType;

/// Points (nines, latency µs) of a histogram: x = -log10(1 - p).
fn curve(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    let mut x = 0.0;
    while x <= 5.0 {
        let p = 100.0 * (1.0 - 10f64.powf(-x));
        pts.push((x, (h.value_at_percentile(p) as f64 / 1000.0).max(0.001)));
        x += 0.05;
    }
    pts
}

const COLORS: [RGBColor; 8] = [
    BLUE,
    RED,
    GREEN,
    MAGENTA,
    CYAN,
    BLACK,
    RGBColor(255, 140, 0),
    RGBColor(128, 0, 128),
];

/// One line per (label, op type with data). Returns the number of series drawn.
pub fn percentile_svg(path: &Path, runs: &[(&str, &Measured)]) -> Result<usize, String> {
    let mut series = Vec::new();
    for (label, m) in runs {
        for op in OpType::ALL {
            let h = &m.hists[op.index()];
            if !h.is_empty() {
                let name = if runs.len() == 1 {
                    op.name().to_string()
                } else {
                    format!("{label} {}", op.name())
                };
                series.push((name, curve(h)));
            }
        }
    }
    if series.is_empty() {
        return Err("nothing was measured".into());
    }
    let y_max = series
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.5;
    let y_min = series
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .fold(f64::MAX, f64::min)
        .max(0.1)
        / 1.5;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("latency by percentile", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..5f64, (y_min..y_max).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_labels(6)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            format!("{p:.3}")
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
                + "%"
        })
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(series.len())
}
