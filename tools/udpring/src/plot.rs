//! `--plot FILE.svg`: the latency percentile distribution on HdrHistogram's
//! usual axis (1/(1-q), log: p50 at 2, p99 at 100, p99.999 at 100000), one
//! curve per result; and, for one run, the per-interval series below it
//! (sent and received per second; p50 and p99 per interval). Drawn with
//! plotters' SVG backend; text in a small embedded font (DejaVu Sans, cut
//! to ASCII, µ, ·, ×, dashes and ≤ ≥). A line under the title says what
//! was run. [`svg`] makes the figure as text (the HTML report inlines it).

use hdrhistogram::Histogram;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::common::Failure;

/// One interval's figures, kept for the lower panels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Point {
    pub(crate) t: f64,
    pub(crate) sent: f64,
    pub(crate) received: f64,
    pub(crate) p50: Option<f64>,
    pub(crate) p99: Option<f64>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

fn font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("font/DejaVuSans-subset.ttf"),
        );
    });
}

/// The distribution's points: (1/(1-q), µs) from q = 0 to 0.99999.
fn percentiles(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    (0..=200)
        .map(|k| {
            let x = 10f64.powf(k as f64 * 5.0 / 200.0);
            let q = 1.0 - 1.0 / x;
            (x, (h.value_at_quantile(q) as f64 / 1000.0).max(0.001))
        })
        .collect()
}

fn draw_err(e: impl std::fmt::Debug) -> String {
    format!("drawing: {e:?}")
}

/// What a result ran, in one line: the command, target, mode, rate, size,
/// flows, backend, when, and the generator.
pub(crate) fn about(r: &crate::apps::load::LoadReport) -> String {
    let mut parts = vec![format!("{} {}", r.command, r.target), r.mode.clone()];
    if let Some(rate) = r.rate {
        parts.push(format!("{} /s", tidy(rate)));
    }
    parts.push(format!("{} B", r.size));
    parts.push(format!(
        "{} flow{}",
        r.flows,
        if r.flows == 1 { "" } else { "s" }
    ));
    parts.push(r.backend.clone());
    if r.runs > 1 {
        parts.push(format!("{} runs", r.runs));
    }
    if let Some(t) = r.start_unix_s {
        parts.push(crate::fleet::utc_text(t));
    }
    parts.push(r.generator.clone());
    parts.join(" · ")
}

/// A curve's name for a result among others: what it ran; the file's
/// name is added where two would read the same.
pub(crate) fn labels(results: &[(String, &crate::apps::load::LoadReport)]) -> Vec<String> {
    let short = |r: &crate::apps::load::LoadReport| {
        let when = r
            .start_unix_s
            .map(|t| format!(" at {}", &crate::fleet::utc_text(t)[11..19]))
            .unwrap_or_default();
        let mode = match r.rate {
            Some(rate) => format!("{} {}/s", r.mode, tidy(rate)),
            None => r.mode.clone(),
        };
        format!("{} {} B {mode}{when}", r.target, r.size)
    };
    let names: Vec<String> = results.iter().map(|(_, r)| short(r)).collect();
    names
        .iter()
        .zip(results)
        .map(|(n, (file, _))| {
            if names.iter().filter(|m| *m == n).count() > 1 {
                format!("{n} ({file})")
            } else {
                n.clone()
            }
        })
        .collect()
}

/// An axis value as people write it: `1000`, `2.5`, `0.25` (not `1000.0`).
fn tidy(v: f64) -> String {
    if v >= 10.0 || (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Draws `curves` (label, RTT histogram in ns) and, when given, one run's
/// interval `series`, into the SVG file `path`, `subtitle` (what was run)
/// under the title.
pub(crate) fn plot(
    path: &std::path::Path,
    title: &str,
    subtitle: &str,
    curves: &[(String, &Histogram<u64>)],
    series: Option<&[Point]>,
) -> Result<(), Failure> {
    let fail = |e: String| Failure {
        code: 1,
        msg: format!("{}: {e}", path.display()),
    };
    let text = svg(title, subtitle, curves, series).map_err(fail)?;
    std::fs::write(path, text).map_err(|e| fail(e.to_string()))
}

/// The figure of [`plot`], as SVG text.
pub(crate) fn svg(
    title: &str,
    subtitle: &str,
    curves: &[(String, &Histogram<u64>)],
    series: Option<&[Point]>,
) -> Result<String, String> {
    font();
    let fail = |e: String| e;
    let curves: Vec<_> = curves.iter().filter(|(_, h)| !h.is_empty()).collect();
    if curves.is_empty() {
        return Err("no reply was measured: nothing to plot".into());
    }
    let mut svg = String::new();
    {
        let height = if series.is_some() { 870 } else { 530 };
        let root = SVGBackend::with_string(&mut svg, (960, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err).map_err(fail)?;
        let (head, root) = root.split_vertically(50);
        head.draw(&Text::new(title, (12, 6), ("sans-serif", 20)))
            .map_err(draw_err)?;
        head.draw(&Text::new(
            subtitle,
            (12, 30),
            ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
        ))
        .map_err(draw_err)?;
        let (top, bottom) = match series {
            Some(_) => {
                let (t, b) = root.split_vertically(480);
                (t, Some(b))
            }
            None => (root.clone(), None),
        };
        let pts: Vec<Vec<(f64, f64)>> = curves.iter().map(|(_, h)| percentiles(h)).collect();
        let (lo, hi) = pts
            .iter()
            .flatten()
            .fold((f64::MAX, 0f64), |(a, b), &(_, y)| (a.min(y), b.max(y)));
        let mut c = ChartBuilder::on(&top)
            .margin(12)
            .margin_right(30)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (1f64..100_000f64).log_scale(),
                (lo / 1.5..hi * 1.5).log_scale(),
            )
            .map_err(draw_err)
            .map_err(fail)?;
        c.configure_mesh()
            .x_desc("percentile, as 1/(1-q): 2 = p50, 100 = p99, 1000 = p99.9")
            .y_desc("round-trip time (µs)")
            .x_label_formatter(&|x| tidy(*x))
            .y_label_formatter(&|y| tidy(*y))
            .draw()
            .map_err(draw_err)
            .map_err(fail)?;
        for (k, ((label, _), p)) in curves.iter().zip(pts).enumerate() {
            let color = COLORS[k % COLORS.len()];
            c.draw_series(LineSeries::new(p, color.stroke_width(2)))
                .map_err(draw_err)
                .map_err(fail)?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(draw_err)
            .map_err(fail)?;
        if let (Some(b), Some(s)) = (bottom, series) {
            lower(&b, s).map_err(fail)?;
        }
        root.present().map_err(draw_err).map_err(fail)?;
    }
    Ok(svg)
}

/// One series of a lower panel: its label, colour, line width, and value
/// per point (`None`: no figure for that interval).
type Series = (&'static str, RGBColor, u32, fn(&Point) -> Option<f64>);

/// The per-interval panels: rates, and p50/p99.
fn lower(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    s: &[Point],
) -> Result<(), String> {
    let (left, right) = area.split_horizontally(480);
    panel(
        &left,
        s,
        "datagrams per second",
        "per second",
        SeriesLabelPosition::LowerRight,
        // Sent wide beneath, received narrow on top: equal, both show.
        &[
            ("sent", COLORS[0], 6, |p| Some(p.sent)),
            ("received", COLORS[1], 2, |p| Some(p.received)),
        ],
    )?;
    panel(
        &right,
        s,
        "round-trip time per interval",
        "µs",
        SeriesLabelPosition::UpperRight,
        &[
            ("p50", COLORS[2], 2, |p| p.p50),
            ("p99", COLORS[3], 2, |p| p.p99),
        ],
    )
}

/// A panel of `series` against time, from 0 to the largest value.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    s: &[Point],
    caption: &str,
    y_desc: &str,
    legend: SeriesLabelPosition,
    series: &[Series],
) -> Result<(), String> {
    let t_max = s.iter().map(|p| p.t).fold(1e-3, f64::max);
    let y_max = s
        .iter()
        .flat_map(|p| series.iter().filter_map(move |(_, _, _, get)| get(p)))
        .fold(1.0, f64::max);
    let mut c = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .margin_right(30)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max * 1.1)
        .map_err(draw_err)?;
    c.configure_mesh()
        .x_desc("time (s)")
        .y_desc(y_desc)
        .x_label_formatter(&|x| tidy(*x))
        .y_label_formatter(&|y| tidy(*y))
        .draw()
        .map_err(draw_err)?;
    for &(label, color, width, get) in series {
        let style = if width > 2 {
            color.mix(0.45).stroke_width(width)
        } else {
            color.stroke_width(width)
        };
        c.draw_series(LineSeries::new(
            s.iter().filter_map(|p| get(p).map(|v| (p.t, v))),
            style,
        ))
        .map_err(draw_err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(legend)
        .draw()
        .map_err(draw_err)?;
    Ok(())
}
