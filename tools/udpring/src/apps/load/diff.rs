//! `report --diff A B`: every figure of two results side by side, with the
//! change from A to B.

use super::report::LoadReport;

/// A figure's value: a count stays an integer in JSON (`250000`, not
/// `250000.0`), as in the results compared.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Figure {
    /// Datagrams, replies, ...
    Count(u64),
    /// Seconds, rates, microseconds, percent.
    Number(f64),
}

impl Figure {
    /// As a number, for ratios.
    pub fn as_f64(self) -> f64 {
        match self {
            Figure::Count(n) => n as f64,
            Figure::Number(x) => x,
        }
    }
}

/// One figure of two results.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DiffRow {
    /// The figure's name in the result's JSON (`rtt_us.p99`, `lost`, ...).
    pub name: &'static str,
    /// Its value in A; `null` when A has none (no RTT without replies).
    pub a: Option<Figure>,
    /// Its value in B.
    pub b: Option<Figure>,
    /// `(b - a) / a`, a fraction; `null` when A is 0 or either is absent.
    pub change: Option<f64>,
}

/// The figures compared, in the order printed.
pub fn diff(a: &LoadReport, b: &LoadReport) -> Vec<DiffRow> {
    type Get = fn(&LoadReport) -> Option<Figure>;
    use Figure::{Count, Number};
    fn rtt(r: &LoadReport, f: fn(&super::report::RttUs) -> f64) -> Option<Figure> {
        r.rtt_us.as_ref().map(|x| Figure::Number(f(x)))
    }
    let rows: [(&'static str, Get); 17] = [
        ("duration_s", |r| Some(Number(r.duration_s))),
        ("sent", |r| Some(Count(r.counts.sent))),
        ("received", |r| Some(Count(r.counts.received))),
        ("lost", |r| Some(Count(r.lost))),
        ("loss_pct", |r| {
            (r.counts.sent > 0).then(|| Number(r.lost as f64 * 100.0 / r.counts.sent as f64))
        }),
        ("reordered", |r| Some(Count(r.counts.reordered))),
        ("duplicated", |r| Some(Count(r.counts.duplicated))),
        // Only a run that checked its answers (`--expect`) counted them.
        ("unexpected", |r| {
            (!r.expect.is_empty()).then_some(Count(r.counts.unexpected))
        }),
        ("pps_sent", |r| Some(Number(r.pps_sent))),
        ("pps_received", |r| Some(Number(r.pps_received))),
        ("gbps_received", |r| Some(Number(r.gbps_received))),
        ("rtt_us.min", |r| rtt(r, |x| x.min)),
        ("rtt_us.p50", |r| rtt(r, |x| x.p50)),
        ("rtt_us.p90", |r| rtt(r, |x| x.p90)),
        ("rtt_us.p99", |r| rtt(r, |x| x.p99)),
        ("rtt_us.p999", |r| rtt(r, |x| x.p999)),
        ("rtt_us.max", |r| rtt(r, |x| x.max)),
    ];
    rows.iter()
        .map(|&(name, get)| {
            let (x, y) = (get(a), get(b));
            let change = match (x.map(Figure::as_f64), y.map(Figure::as_f64)) {
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
    let v = |x: Option<Figure>| match x {
        None => "-".to_string(),
        Some(Figure::Count(n)) => n.to_string(),
        Some(Figure::Number(x)) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(Figure::Number(x)) => format!("{x:.3}"),
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
        let with = |sent, lost| {
            let mut r = LoadReport {
                lost,
                ..LoadReport::default()
            };
            r.counts.sent = sent;
            r
        };
        let (a, b) = (with(100, 0), with(150, 3));
        let rows = diff(&a, &b);
        let get = |n: &str| rows.iter().find(|r| r.name == n).unwrap().clone();
        assert_eq!(get("sent").change, Some(0.5));
        assert_eq!(get("lost").change, None, "from 0 there is no ratio");
        assert_eq!(get("loss_pct").b, Some(Figure::Number(2.0)));
        assert_eq!(get("sent").b, Some(Figure::Count(150)));
        let json = serde_json::to_string(&get("sent")).unwrap();
        assert!(
            json.contains(r#""b":150,"#),
            "a count stays an integer: {json}"
        );
        assert_eq!(get("rtt_us.p50").a, None);
        let t = diff_text(&rows, "a.json", "b.json");
        assert!(t.contains("+50.0%"), "{t}");
    }

    #[test]
    fn unexpected_answers_are_compared_only_where_answers_were_checked() {
        let run = |expect: &[&str], unexpected| {
            let mut r = LoadReport {
                expect: expect.iter().map(|e| e.to_string()).collect(),
                ..LoadReport::default()
            };
            r.counts.unexpected = unexpected;
            r
        };
        let rows = diff(&run(&[], 0), &run(&["8:56414c5545"], 40));
        let u = rows.iter().find(|r| r.name == "unexpected").unwrap();
        assert_eq!((u.a, u.b), (None, Some(Figure::Count(40))));
        let rows = diff(&run(&["0:4f4b"], 10), &run(&["0:4f4b"], 15));
        let u = rows.iter().find(|r| r.name == "unexpected").unwrap();
        assert_eq!(u.change, Some(0.5));
    }
}
