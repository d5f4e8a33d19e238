//! SVG plots written next to the JSON report: latency percentile curves, throughput bars,
//! and the geo mode's lag histogram.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::geo::GeoReport;
use crate::report::{fmt_rate, RunReport};

const SIZE: (u32, u32) = (1000, 600);
/// Rightmost point of the percentile axis, in nines (99.999%).
const MAX_NINES: f64 = 5.0;

/// `dir/stem-suffix.svg` for `dir/stem.json`.
pub fn sibling(json: &Path, suffix: &str) -> PathBuf {
    let stem = json
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bench".to_string());
    json.with_file_name(format!("{stem}-{suffix}.svg"))
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

/// Percentile → "nines" (90% → 1, 99% → 2 …).
fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).max(1e-12).log10()
}

fn nines_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let s = format!("{p:.5}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// Milliseconds with as many decimals as their size needs.
fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else if ms >= 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    }
}

/// One curve of the latency plot.
pub struct Curve<'a> {
    /// Legend text.
    pub name: String,
    /// `(percentile, ms)` points.
    pub points: &'a [(f64, f64)],
    /// Colour index (one per target, or one per op for a single target).
    pub color: usize,
    /// Line style: 0 solid, 1 dashed, 2+ dotted (one per op when colours mark targets).
    pub dash: usize,
}

/// Latency by percentile, one line per curve, log-scaled milliseconds.
pub fn latency(path: &Path, title: &str, curves: &[Curve<'_>]) -> Result<()> {
    let pts: Vec<Vec<(f64, f64)>> = curves
        .iter()
        .map(|c| {
            c.points
                .iter()
                .filter(|(p, _)| *p < 100.0)
                .map(|&(p, ms)| (nines(p).min(MAX_NINES), ms.max(1e-3)))
                .collect()
        })
        .collect();
    let all = pts.iter().flatten().map(|p| p.1);
    let lo = all.clone().fold(f64::INFINITY, f64::min);
    let hi = all.fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        (lo * 0.8, hi * 1.25)
    } else {
        (0.001, 1.0)
    };
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..MAX_NINES, (lo..hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| nines_label(*x))
        .y_label_formatter(&|y| fmt_ms(*y))
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()
        .map_err(err)?;
    for (c, p) in curves.iter().zip(pts) {
        let color = Palette99::pick(c.color).to_rgba();
        let style = color.stroke_width(2);
        let drawn = match c.dash {
            0 => chart.draw_series(LineSeries::new(p, style)),
            1 => chart.draw_series(DashedLineSeries::new(p, 8, 5, style)),
            _ => chart.draw_series(DashedLineSeries::new(p, 2, 4, style)),
        };
        // The legend shows the colour; the line style is named by the label.
        drawn
            .map_err(err)?
            .label(c.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// One bar of the throughput plot.
pub struct Bar {
    /// Label under the bar.
    pub name: String,
    /// Requests per second.
    pub rps: f64,
    /// Colour group (one per target).
    pub group: usize,
}

/// Throughput bars.
pub fn throughput(path: &Path, title: &str, bars: &[Bar]) -> Result<()> {
    let n = bars.len().max(1);
    let hi = bars.iter().map(|b| b.rps).fold(0.0, f64::max).max(1.0) * 1.15;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((0..n).into_segmented(), 0f64..hi)
        .map_err(err)?;
    let names: Vec<String> = bars.iter().map(|b| b.name.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&|y| fmt_rate(*y))
        .y_desc("requests / s")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let color = Palette99::pick(b.group).to_rgba();
            let mut r = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), b.rps),
                ],
                color.filled(),
            );
            r.set_margin(0, 0, 10, 10);
            r
        }))
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(
                fmt_rate(b.rps),
                (SegmentValue::CenterOf(i), b.rps + hi * 0.04),
                ("sans-serif", 15),
            )
        }))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// The latency and throughput plots of one or more runs, next to `json`.
pub fn runs(json: &Path, runs: &[&RunReport]) -> Result<Vec<PathBuf>> {
    let mut curves = Vec::new();
    let mut bars = Vec::new();
    for (g, r) in runs.iter().enumerate() {
        let prefix = if runs.len() > 1 {
            format!("{} ", r.label)
        } else {
            String::new()
        };
        let several = runs.len() > 1;
        for (i, o) in r.ops.iter().enumerate() {
            curves.push(Curve {
                name: format!("{prefix}{}", o.name),
                points: &o.curve,
                color: if several { g } else { i },
                dash: if several { i } else { 0 },
            });
            bars.push(Bar {
                name: format!("{prefix}{}", o.name),
                rps: o.rps,
                group: g,
            });
        }
    }
    let title_targets: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
    let summary = runs
        .first()
        .map(|r| format!("{} conns, P{}", r.settings.clients, r.settings.pipeline))
        .unwrap_or_default();
    let lat = sibling(json, "latency");
    latency(
        &lat,
        &format!("latency: {} ({summary})", title_targets.join(" vs ")),
        &curves,
    )?;
    let thr = sibling(json, "throughput");
    throughput(
        &thr,
        &format!("throughput: {} ({summary})", title_targets.join(" vs ")),
        &bars,
    )?;
    Ok(vec![lat, thr])
}

/// The lag histogram (one colour per reader) and lag percentiles, next to `json`.
pub fn geo(json: &Path, r: &GeoReport) -> Result<Vec<PathBuf>> {
    let path = sibling(json, "lag");
    let root = SVGBackend::new(&path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let xmax = r
        .readers
        .iter()
        .filter_map(|rd| rd.lag_histogram.last().map(|b| b.to_ms))
        .fold(0.0, f64::max)
        .max(1e-3);
    let ymax = r
        .readers
        .iter()
        .flat_map(|rd| rd.lag_histogram.iter().map(|b| b.count))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "visibility lag: write {} at {:.0}/s",
                r.write_label, r.achieved_rate
            ),
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("lag (ms)")
        .y_desc("keys")
        .x_label_formatter(&|x| fmt_ms(*x))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    for (i, rd) in r.readers.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let fill = color.mix(if r.readers.len() > 1 { 0.5 } else { 0.9 });
        chart
            .draw_series(rd.lag_histogram.iter().map(|b| {
                Rectangle::new([(b.from_ms, 0.0), (b.to_ms, b.count as f64)], fill.filled())
            }))
            .map_err(err)?
            .label(format!(
                "{}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                rd.label, rd.lag_ms.p50, rd.lag_ms.p99, rd.lag_ms.max
            ))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    drop(chart);
    drop(root);

    let pct = sibling(json, "lag-percentiles");
    let curves: Vec<Curve<'_>> = r
        .readers
        .iter()
        .enumerate()
        .map(|(i, rd)| Curve {
            name: rd.label.clone(),
            points: &rd.lag_curve,
            color: i,
            dash: 0,
        })
        .collect();
    latency(
        &pct,
        &format!("visibility lag by percentile: write {}", r.write_label),
        &curves,
    )?;
    Ok(vec![path, pct])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(
            sibling(Path::new("/tmp/x/run.json"), "latency"),
            PathBuf::from("/tmp/x/run-latency.svg")
        );
    }

    #[test]
    fn writes_svgs() {
        let dir = std::env::temp_dir().join(format!("mb-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pts = vec![
            (0.0, 0.1),
            (50.0, 0.2),
            (99.0, 0.9),
            (99.9, 2.0),
            (100.0, 5.0),
        ];
        let p = dir.join("l.svg");
        latency(
            &p,
            "t",
            &[
                Curve {
                    name: "GET".into(),
                    points: &pts,
                    color: 0,
                    dash: 0,
                },
                Curve {
                    name: "SET".into(),
                    points: &pts,
                    color: 1,
                    dash: 1,
                },
            ],
        )
        .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("<svg") && text.contains("GET"));
        let p = dir.join("t.svg");
        throughput(
            &p,
            "t",
            &[
                Bar {
                    name: "a GET".into(),
                    rps: 1e6,
                    group: 0,
                },
                Bar {
                    name: "b GET".into(),
                    rps: 5e5,
                    group: 1,
                },
            ],
        )
        .unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("b GET"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
