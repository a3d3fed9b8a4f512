//! `report --diff A B`: every figure of two results side by side, with the
//! change from A to B.

use super::report::LoadReport;

/// One figure of two results.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DiffRow {
    /// The figure's name in the result's JSON (`rtt_us.p99`, `lost`, ...).
    pub name: &'static str,
    /// Its value in A; `null` when A has none (no RTT without replies).
    pub a: Option<f64>,
    /// Its value in B.
    pub b: Option<f64>,
    /// `(b - a) / a`, a fraction; `null` when A is 0 or either is absent.
    pub change: Option<f64>,
}

/// The figures compared, in the order printed.
pub fn diff(a: &LoadReport, b: &LoadReport) -> Vec<DiffRow> {
    type Get = fn(&LoadReport) -> Option<f64>;
    let rows: [(&'static str, Get); 16] = [
        ("duration_s", |r| Some(r.duration_s)),
        ("sent", |r| Some(r.sent as f64)),
        ("received", |r| Some(r.received as f64)),
        ("lost", |r| Some(r.lost as f64)),
        ("loss_pct", |r| {
            (r.sent > 0).then(|| r.lost as f64 * 100.0 / r.sent as f64)
        }),
        ("reordered", |r| Some(r.reordered as f64)),
        ("duplicated", |r| Some(r.duplicated as f64)),
        ("pps_sent", |r| Some(r.pps_sent)),
        ("pps_received", |r| Some(r.pps_received)),
        ("gbps_received", |r| Some(r.gbps_received)),
        ("rtt_us.min", |r| r.rtt_us.as_ref().map(|x| x.min)),
        ("rtt_us.p50", |r| r.rtt_us.as_ref().map(|x| x.p50)),
        ("rtt_us.p90", |r| r.rtt_us.as_ref().map(|x| x.p90)),
        ("rtt_us.p99", |r| r.rtt_us.as_ref().map(|x| x.p99)),
        ("rtt_us.p999", |r| r.rtt_us.as_ref().map(|x| x.p999)),
        ("rtt_us.max", |r| r.rtt_us.as_ref().map(|x| x.max)),
    ];
    rows.iter()
        .map(|&(name, get)| {
            let (x, y) = (get(a), get(b));
            let change = match (x, y) {
                (Some(x), Some(y)) if x != 0.0 => Some((y - x) / x),
                _ => None,
            };
            DiffRow {
                name,
                a: x,
                b: y,
                change,
            }
        })
        .collect()
}

/// The rows as a table: figure, A, B, change in percent.
pub fn diff_text(rows: &[DiffRow], a_name: &str, b_name: &str) -> String {
    let v = |x: Option<f64>| match x {
        None => "-".to_string(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) => format!("{x:.3}"),
    };
    let mut s = format!("{:<14} {:>16} {:>16} {:>9}\n", "", a_name, b_name, "change");
    for r in rows {
        let c = r
            .change
            .map_or("-".to_string(), |c| format!("{:+.1}%", c * 100.0));
        s += &format!("{:<14} {:>16} {:>16} {:>9}\n", r.name, v(r.a), v(r.b), c);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_fractions_of_a_and_absent_without_a_base() {
        let a = LoadReport {
            sent: 100,
            lost: 0,
            ..LoadReport::default()
        };
        let b = LoadReport {
            sent: 150,
            lost: 3,
            ..LoadReport::default()
        };
        let rows = diff(&a, &b);
        let get = |n: &str| rows.iter().find(|r| r.name == n).unwrap().clone();
        assert_eq!(get("sent").change, Some(0.5));
        assert_eq!(get("lost").change, None, "from 0 there is no ratio");
        assert_eq!(get("loss_pct").b, Some(2.0));
        assert_eq!(get("rtt_us.p50").a, None);
        let t = diff_text(&rows, "a.json", "b.json");
        assert!(t.contains("+50.0%"), "{t}");
    }
}
