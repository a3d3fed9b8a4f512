//! `load --hist-log FILE`: one RTT histogram per interval in HdrHistogram's
//! interval log format (V2 deflate-compressed, base64), with StartTime and
//! BaseTime headers, written as the run goes (a long run holds no more
//! than one interval in memory).

use std::io::Write;
use std::time::{Duration, SystemTime};

use crate::apps::load::Progress;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;

use crate::common::Failure;

/// An interval log being written.
pub(crate) struct HistLog {
    path: std::path::PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    ser: V2DeflateSerializer,
    /// The first write error, reported at the end.
    error: Option<String>,
}

impl HistLog {
    /// Creates `path` (so an unwritable file fails before the run) and
    /// writes the headers: measuring starts `warmup` from now, and the
    /// intervals' times count from there.
    pub(crate) fn create(path: &std::path::Path, warmup: Duration) -> Result<HistLog, Failure> {
        let named = |e: std::io::Error| Failure {
            code: 2,
            msg: format!("{}: {e}", path.display()),
        };
        let file = std::fs::File::create(path).map_err(named)?;
        let mut l = HistLog {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
            ser: V2DeflateSerializer::new(),
            error: None,
        };
        let start = SystemTime::now() + warmup;
        IntervalLogWriterBuilder::new()
            .add_comment("udpring load: round-trip times, ns")
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut l.file, &mut l.ser)
            .map_err(named)?;
        writeln!(
            l.file,
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        )
        .map_err(named)?;
        Ok(l)
    }

    /// Appends the interval `p` reports.
    pub(crate) fn write(&mut self, p: &Progress) {
        if self.error.is_some() {
            return;
        }
        let start = Duration::from_secs_f64((p.elapsed - p.interval_s).max(0.0));
        let len = Duration::from_secs_f64(p.interval_s.max(0.0));
        // The builder writes no header a second time: only the line.
        let r = IntervalLogWriterBuilder::new()
            .begin_log_with(&mut self.file, &mut self.ser)
            .map_err(|e| e.to_string())
            .and_then(|mut w| {
                w.write_histogram(&p.histogram, start, len, None)
                    .map_err(|e| format!("{e:?}"))
            });
        if let Err(e) = r {
            self.error = Some(e);
        }
    }

    /// Flushes; reports the first error the log met.
    pub(crate) fn finish(mut self) -> Result<(), Failure> {
        let flushed = self.file.flush().map_err(|e| e.to_string());
        match self.error.take().map(Err).unwrap_or(flushed) {
            Ok(()) => Ok(()),
            Err(e) => Err(Failure {
                code: 1,
                msg: format!("{}: {e}", self.path.display()),
            }),
        }
    }
}
