//! The host's UDP error counters (`/proc/net/snmp`, `/proc/net/snmp6`),
//! read before and after a run to show where datagrams died outside
//! udpring.

/// UDP error counters of the host (`/proc/net/snmp`, `/proc/net/snmp6`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostUdp {
    /// Datagrams dropped because a receive buffer was full.
    pub rcvbuf_errors: u64,
    /// Sends dropped because a send buffer was full.
    pub sndbuf_errors: u64,
    /// Datagrams that could not be delivered (includes the above).
    pub in_errors: u64,
}

impl HostUdp {
    /// Reads the counters now (zeros where the files are missing).
    pub fn read() -> Self {
        let mut h = HostUdp::default();
        if let Ok(text) = std::fs::read_to_string("/proc/net/snmp") {
            let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
            if lines.len() >= 2 {
                let names = lines[0].split_whitespace();
                let values = lines[1].split_whitespace();
                for (n, v) in names.zip(values) {
                    let v: u64 = v.parse().unwrap_or(0);
                    match n {
                        "RcvbufErrors" => h.rcvbuf_errors += v,
                        "SndbufErrors" => h.sndbuf_errors += v,
                        "InErrors" => h.in_errors += v,
                        _ => {}
                    }
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string("/proc/net/snmp6") {
            for l in text.lines() {
                let mut it = l.split_whitespace();
                let (Some(n), Some(v)) = (it.next(), it.next()) else {
                    continue;
                };
                let v: u64 = v.parse().unwrap_or(0);
                match n {
                    "Udp6RcvbufErrors" => h.rcvbuf_errors += v,
                    "Udp6SndbufErrors" => h.sndbuf_errors += v,
                    "Udp6InErrors" => h.in_errors += v,
                    _ => {}
                }
            }
        }
        h
    }

    pub(crate) fn since(self, before: HostUdp) -> HostUdp {
        HostUdp {
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(before.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(before.sndbuf_errors),
            in_errors: self.in_errors.saturating_sub(before.in_errors),
        }
    }

    pub(crate) fn add(&mut self, o: &HostUdp) {
        self.rcvbuf_errors = self.rcvbuf_errors.saturating_add(o.rcvbuf_errors);
        self.sndbuf_errors = self.sndbuf_errors.saturating_add(o.sndbuf_errors);
        self.in_errors = self.in_errors.saturating_add(o.in_errors);
    }
}
