//! `--plot FILE.svg`: the latency percentile distribution on HdrHistogram's
//! usual axis (1/(1-q), log: p50 at 2, p99 at 100, p99.999 at 100000), one
//! curve per result; and, for one run, the per-interval series below it
//! (sent and received per second; p50 and p99 per interval). Drawn with
//! plotters' SVG backend; text in a small embedded font.

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
            include_bytes!("font/DejaVuSans-ascii.ttf"),
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

/// Draws `curves` (label, RTT histogram in ns) and, when given, one run's
/// interval `series`, into the SVG file `path`.
pub(crate) fn plot(
    path: &std::path::Path,
    title: &str,
    curves: &[(String, &Histogram<u64>)],
    series: Option<&[Point]>,
) -> Result<(), Failure> {
    font();
    let fail = |e: String| Failure {
        code: 1,
        msg: format!("{}: {e}", path.display()),
    };
    let curves: Vec<_> = curves.iter().filter(|(_, h)| !h.is_empty()).collect();
    if curves.is_empty() {
        return Err(fail("no reply was measured: nothing to plot".into()));
    }
    let mut svg = String::new();
    {
        let height = if series.is_some() { 820 } else { 480 };
        let root = SVGBackend::with_string(&mut svg, (960, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err).map_err(fail)?;
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
            .caption(title, ("sans-serif", 20))
            .margin(12)
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
            .y_desc("round-trip time (us)")
            .x_label_formatter(&|x| format!("{x:.0}"))
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
    std::fs::write(path, svg).map_err(|e| fail(e.to_string()))
}

/// One series of a lower panel: its label, colour, and value per point
/// (`None`: no figure for that interval).
type Series = (&'static str, RGBColor, fn(&Point) -> Option<f64>);

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
        &[
            ("sent", COLORS[0], |p| Some(p.sent)),
            ("received", COLORS[1], |p| Some(p.received)),
        ],
    )?;
    panel(
        &right,
        s,
        "round-trip time per interval",
        "us",
        SeriesLabelPosition::UpperRight,
        &[("p50", COLORS[2], |p| p.p50), ("p99", COLORS[3], |p| p.p99)],
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
        .flat_map(|p| series.iter().filter_map(move |(_, _, get)| get(p)))
        .fold(1.0, f64::max);
    let mut c = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max * 1.1)
        .map_err(draw_err)?;
    c.configure_mesh()
        .x_desc("time (s)")
        .y_desc(y_desc)
        .draw()
        .map_err(draw_err)?;
    for &(label, color, get) in series {
        c.draw_series(LineSeries::new(
            s.iter().filter_map(|p| get(p).map(|v| (p.t, v))),
            color.stroke_width(2),
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
