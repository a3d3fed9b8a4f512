//! Checking a [`Config`] before anything is built from it: every number
//! in its range, and the combinations that would mean nothing refused
//! with the reason ([`ConfigError`]).

use std::fmt;
use std::net::SocketAddr;

use super::{Backend, Config, GRO_SLOT_SIZE, XDP_SLOT_SIZE};
use crate::bufring::HEADROOM;

/// Why a [`Config`] was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A number outside its range.
    OutOfRange {
        /// The field.
        field: &'static str,
        /// What it was.
        value: u64,
        /// The smallest allowed.
        min: u64,
        /// The largest allowed.
        max: u64,
    },
    /// Something else about a field, in words.
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::OutOfRange {
                field,
                value,
                min,
                max,
            } => write!(f, "{field} must be {min}..{max}, not {value}"),
            ConfigError::Invalid { field, why } => write!(f, "{field}: {why}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for std::io::Error {
    fn from(e: ConfigError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
    }
}

fn range(field: &'static str, value: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value: value as u64,
            min: min as u64,
            max: max as u64,
        })
    }
}

impl Config {
    /// Checks that the numbers hold together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        range("workers", self.workers, 0, 1024)?;
        range("batch", self.batch, 1, 1024)?;
        range(
            "slot_size",
            self.effective_slot_size(),
            HEADROOM + 1,
            1 << 20,
        )?;
        range("recv_slots", self.recv_slots, 0, 32768)?;
        range(
            "send_slots",
            self.send_slots,
            0,
            65535 - self.effective_recv_slots(),
        )?;
        range("max_queued_sends", self.max_queued_sends, 1, 1 << 24)?;
        range("sender_queue", self.sender_queue, 1, 1 << 20)?;
        range("sockets_per_worker", self.sockets_per_worker, 1, 1024)?;
        range("also_bind", self.also_bind.len(), 0, 64)?;
        range("sq_entries", self.sq_entries as usize, 8, 32768)?;
        range("spin_us", self.spin_us as usize, 0, 1000)?;
        if self.spin_us > 0 && self.busy_poll {
            return Err(ConfigError::Invalid {
                field: "spin_us",
                why: "busy_poll already never sleeps: a spin before sleeping adds nothing".into(),
            });
        }
        if let (true, Some(b @ (Backend::Mmsg | Backend::Simple | Backend::Xdp))) =
            (self.spin_us > 0, self.backend)
        {
            return Err(ConfigError::Invalid {
                field: "spin_us",
                why: format!(
                    "the spin watches an io_uring's shared flags (the uring backend); the {} \
                     backend has busy_poll",
                    b.name()
                ),
            });
        }
        // A GRO train is up to 64 KiB in one buffer: a smaller slot would
        // cut every longer train, and the datagrams past the cut could not
        // even be counted.
        if self.gro && self.slot_size != 0 && self.slot_size < GRO_SLOT_SIZE {
            return Err(ConfigError::Invalid {
                field: "slot_size",
                why: format!(
                    "with gro a slot holds a whole GRO train (up to 64 KiB): at least \
                     {GRO_SLOT_SIZE} bytes, or 0, which picks that; {} would cut trains",
                    self.slot_size
                ),
            });
        }
        if self.backend == Some(Backend::Xdp) {
            if self.effective_slot_size() != XDP_SLOT_SIZE {
                return Err(ConfigError::Invalid {
                    field: "slot_size",
                    why: format!(
                        "the xdp backend's slots are its UMEM's chunks: {XDP_SLOT_SIZE} bytes (0 picks it)"
                    ),
                });
            }
            if self.gro || self.sockets_per_worker > 1 {
                return Err(ConfigError::Invalid {
                    field: "backend",
                    why: "the xdp backend takes one socket per worker on the bound \
                          address (sockets_per_worker 1; also_bind sockets receive \
                          through the kernel) and no GRO (it sees frames)"
                        .into(),
                });
            }
        }
        if let (Some(_), Some(b @ (Backend::Mmsg | Backend::Simple | Backend::Xdp))) =
            (self.send_zero_copy_min, self.backend)
        {
            return Err(ConfigError::Invalid {
                field: "send_zero_copy_min",
                why: format!(
                    "zero-copy sends are the uring backend's (IORING_OP_SEND_ZC); the {} \
                     backend would send copies",
                    b.name()
                ),
            });
        }
        // Without each datagram's TOS read, there is nothing to reflect.
        if self.reflect_tos && !self.recv_tos {
            return Err(ConfigError::Invalid {
                field: "reflect_tos",
                why: "needs recv_tos: the TOS byte a reply reflects is read per datagram \
                      (IP_RECVTOS)"
                    .into(),
            });
        }
        // IPV6_V6ONLY is an IPv6 socket's option: on IPv4 ones it would be
        // accepted and mean nothing.
        if self.only_v6.is_some()
            && !self.bind.is_ipv6()
            && !self.also_bind.iter().any(SocketAddr::is_ipv6)
        {
            return Err(ConfigError::Invalid {
                field: "only_v6",
                why: format!(
                    "IPV6_V6ONLY is for IPv6 sockets, and every socket here is IPv4 ({}); \
                     bind an IPv6 address (e.g. [::]:{}) or leave it unset",
                    self.bind,
                    self.bind.port()
                ),
            });
        }
        self.guard.validate().map_err(|why| ConfigError::Invalid {
            field: "guard",
            why,
        })
    }
}
