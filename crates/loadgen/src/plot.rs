//! PNG plots of a bench: each step's timeline (calls live and the daemon's CPU over time), the
//! latency percentiles against concurrency, and the call setup bench's dispatch → INVITE
//! against the call rate achieved.
//!
//! Text is drawn with the system's sans-serif font as fontconfig names it (`fc-match`), read
//! once; without one the plots cannot be labelled and are not written (the JSON and Markdown
//! still are).

use std::path::Path;
use std::sync::OnceLock;

use plotters::chart::SeriesLabelStyle;
use plotters::coord::CoordTranslate;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::LoadgenError;
use crate::report::{Percentiles, Report};

/// One sample of a step's timeline, every 500 ms while the load runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct TimelineSample {
    /// Seconds since the step started.
    pub t_s: f64,
    /// Calls live at the simulator.
    pub live_calls: u64,
    /// The daemon's CPU over the last interval, % of one core.
    pub daemon_cpu_percent: f64,
    /// The daemon's resident memory, KiB.
    pub daemon_rss_kib: u64,
}

const SIZE: (u32, u32) = (1000, 560);

/// A latency line of the plot: its name, colour, and where a report keeps its percentiles.
type LatencySeries = (&'static str, RGBColor, fn(&Report) -> Option<Percentiles>);

/// Registers the system's sans-serif font with plotters, once; false when there is none.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let Some(file) = std::process::Command::new("fc-match")
            .args(["-f", "%{file}", "sans-serif:style=Regular"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        else {
            return false;
        };
        let Ok(bytes) = std::fs::read(file.trim()) else {
            return false;
        };
        // plotters keeps the font for the process's life.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

fn plot_error(file: &Path) -> impl Fn(&dyn std::fmt::Display) -> LoadgenError + '_ {
    move |e| LoadgenError::Plot {
        file: file.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Draws a chart's legend, the same on every plot: upper left, on a light box.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    mut labels: SeriesLabelStyle<'a, '_, DB, CT>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    labels
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

/// Writes `file`: calls live (left axis) and the daemon's CPU (right axis) over one step.
pub fn timeline(file: &Path, title: &str, samples: &[TimelineSample]) -> Result<(), LoadgenError> {
    if !font_ready() {
        return Err(LoadgenError::NoFont);
    }
    let fail = plot_error(file);
    let t_max = samples.iter().map(|s| s.t_s).fold(1.0, f64::max);
    let live_max = samples
        .iter()
        .map(|s| s.live_calls)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let cpu_max = samples
        .iter()
        .map(|s| s.daemon_cpu_percent)
        .fold(100.0, f64::max);
    let root = BitMapBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .right_y_label_area_size(64)
        .build_cartesian_2d(0.0..t_max, 0.0..live_max * 1.1)
        .map_err(|e| fail(&e))?
        .set_secondary_coord(0.0..t_max, 0.0..cpu_max * 1.1);
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("calls live")
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .configure_secondary_axes()
        .y_desc("daemon CPU, % of one core")
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(LineSeries::new(
            samples.iter().map(|s| (s.t_s, s.live_calls as f64)),
            BLUE.stroke_width(2),
        ))
        .map_err(|e| fail(&e))?
        .label("calls live")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart
        .draw_secondary_series(LineSeries::new(
            samples.iter().map(|s| (s.t_s, s.daemon_cpu_percent)),
            RED.stroke_width(2),
        ))
        .map_err(|e| fail(&e))?
        .label("daemon CPU %")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    legend(chart.configure_series_labels()).map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}

/// Writes `file`: p50 and p99 of dispatch → INVITE and of the daemon's media step against the
/// concurrency of each step (log scale, ms).
pub fn latencies(file: &Path, steps: &[(u64, &Report)]) -> Result<(), LoadgenError> {
    if !font_ready() {
        return Err(LoadgenError::NoFont);
    }
    let fail = plot_error(file);
    let series: [LatencySeries; 4] = [
        ("dispatch → INVITE", BLUE, |r| {
            Some(r.dispatch.dispatch_to_invite_ms)
        }),
        ("media step per call", RED, |r| {
            r.daemon.as_ref().map(|d| d.step_ms)
        }),
        ("agent frame → RTP out", GREEN, |r| {
            r.daemon.as_ref().map(|d| d.outbound_ms)
        }),
        (
            "RTP in → speech ring (with jitter buffer)",
            MAGENTA,
            |r| r.daemon.as_ref().map(|d| d.inbound_ms),
        ),
    ];
    let x_max = steps.iter().map(|(c, _)| *c).max().unwrap_or(1) as f64 * 1.1;
    let values = steps.iter().flat_map(|(_, r)| {
        series
            .iter()
            .filter_map(|(_, _, get)| get(r))
            .flat_map(|p| [p.p50, p.p99])
            .collect::<Vec<_>>()
    });
    let (lo, hi) = log_bounds(values);
    let root = BitMapBackend::new(file, SIZE).into_drawing_area();
    let mut chart = log_chart(
        &root,
        file,
        "latency percentiles by concurrency (solid p50, dashed p99)",
        "concurrent calls",
        x_max,
        (lo, hi),
    )?;
    for (name, color, get) in series {
        let points: Vec<(f64, Percentiles)> = steps
            .iter()
            .filter_map(|(c, r)| get(r).map(|p| (*c as f64, p)))
            .collect();
        percentile_lines(&mut chart, file, name, color, &points, lo)?;
    }
    legend(chart.configure_series_labels()).map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}

/// A chart in ms on a log scale against a linear x.
type LogChart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, LogCoord<f64>>>;

/// A white chart on `root` titled `caption`: `x_desc` from 0 to `x_max`, ms from `lo` to `hi`
/// on a log scale, its mesh drawn.
fn log_chart<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    file: &Path,
    caption: &str,
    x_desc: &str,
    x_max: f64,
    (lo, hi): (f64, f64),
) -> Result<LogChart<'a, 'b>, LoadgenError> {
    let fail = plot_error(file);
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..x_max, (lo..hi).log_scale())
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("ms")
        .draw()
        .map_err(|e| fail(&e))?;
    Ok(chart)
}

/// Draws one series' p50 (solid, in the legend as `name`) and p99 (dashed) at each point's x,
/// with their points; values under the axis' floor `lo` sit on it.
fn percentile_lines(
    chart: &mut LogChart<'_, '_>,
    file: &Path,
    name: &str,
    color: RGBColor,
    points: &[(f64, Percentiles)],
    lo: f64,
) -> Result<(), LoadgenError> {
    let fail = plot_error(file);
    let line = |pick: fn(&Percentiles) -> f64| -> Vec<(f64, f64)> {
        points.iter().map(|(x, p)| (*x, pick(p).max(lo))).collect()
    };
    let (p50, p99) = (line(|p| p.p50), line(|p| p.p99));
    chart
        .draw_series(LineSeries::new(p50.clone(), color.stroke_width(2)))
        .map_err(|e| fail(&e))?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    chart
        .draw_series(DashedLineSeries::new(
            p99.clone(),
            6,
            4,
            color.stroke_width(1),
        ))
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(
            p50.iter()
                .chain(&p99)
                .map(|p| Circle::new(*p, 3, color.filled())),
        )
        .map_err(|e| fail(&e))?;
    Ok(())
}

/// Log-scale bounds for `values` (ms): half the smallest positive one to twice the largest.
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if hi > 0.0 {
        (lo / 2.0, hi * 2.0)
    } else {
        (0.001, 1.0)
    }
}

/// Writes `file`: dispatch → INVITE p50 (solid) and p99 (dashed) against the call rate
/// achieved, one pair of lines per binary (`series`: its name and, per rate, the rate achieved
/// and the percentiles), log scale, ms; SIPp's ceiling, when known, as a vertical line.
pub fn setup_latency(
    file: &Path,
    series: &[(&str, Vec<(f64, Percentiles)>)],
    sipp_ceiling: Option<u64>,
) -> Result<(), LoadgenError> {
    if !font_ready() {
        return Err(LoadgenError::NoFont);
    }
    let fail = plot_error(file);
    let colors = [BLUE, RED, GREEN, MAGENTA];
    let x_max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(x, _)| *x))
        .chain(sipp_ceiling.map(|c| c as f64))
        .fold(1.0, f64::max)
        * 1.1;
    let (lo, hi) = log_bounds(
        series
            .iter()
            .flat_map(|(_, points)| points.iter().flat_map(|(_, p)| [p.p50, p.p99])),
    );
    let root = BitMapBackend::new(file, SIZE).into_drawing_area();
    let mut chart = log_chart(
        &root,
        file,
        "dispatch → INVITE by call rate (solid p50, dashed p99)",
        "calls per second achieved",
        x_max,
        (lo, hi),
    )?;
    for ((name, points), color) in series.iter().zip(colors.iter().cycle()) {
        percentile_lines(&mut chart, file, name, *color, points, lo)?;
    }
    if let Some(ceiling) = sipp_ceiling {
        let x = ceiling as f64;
        chart
            .draw_series(LineSeries::new([(x, lo), (x, hi)], BLACK.stroke_width(1)))
            .map_err(|e| fail(&e))?
            .label(format!("SIPp's ceiling, {ceiling} calls/s"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    }
    legend(chart.configure_series_labels()).map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}
