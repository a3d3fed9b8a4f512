//! Backends: how a worker moves datagrams between its socket and its handler.
//!
//! # The contract
//!
//! Every backend runs one worker's loop on the worker's own thread, over the
//! worker's own socket and [`Pool`](crate::bufring::Pool), and must:
//!
//! 1. **Receive into pool slots** and hand each datagram to
//!    `Core::dispatch` as a lent slot with the payload at
//!    [`HEADROOM`](crate::worker::HEADROOM), so every backend truncates at
//!    the same size; report truncation, the source address, and the control
//!    messages (`UDP_GRO` segment size, `SO_RXQ_OVFL` drop counter).
//! 2. **Never lose a slot**: every slot it takes from the pool goes back,
//!    whatever happens (truncation, errors, an empty pool, shutdown), so
//!    that `Pool::counts().out` is zero whenever the worker is idle.
//! 3. **Send in batches**: after each batch of received datagrams, submit
//!    everything the handler queued (`Core::queue`) together, count each
//!    send's outcome (`sent` or `send_errors` by errno), drop the slot
//!    reference a send held once the kernel is done with it, and turn GSO off
//!    (resending the train as plain datagrams) when the kernel answers a
//!    `UDP_SEGMENT` send with `EIO`/`EINVAL`.
//! 4. **Report errors**: drain the socket error queue when the kernel signals
//!    one and turn each entry into an [`ErrorEvent`](crate::ErrorEvent);
//!    nothing is dropped without a counter.
//! 5. **Wake and stop**: watch the worker's eventfd (posted by `Sender`s and
//!    by the stop handle), drain the inbox, fire timers on time, and when the
//!    stop flag is set, stop receiving, call `on_stop`, finish in-flight sends
//!    and return with nothing of the pool held by the kernel.
//! 6. Publish counters (`Core::publish`) at least once per loop iteration.
//!
//! The backends:
//! - `uring` ([`crate::sys::uring`]): multishot `RecvMsgMulti` on a
//!   provided-buffer ring, many `SendMsg` SQEs per `io_uring_enter`.
//! - `mmsg` ([`mmsg`]): `recvmmsg`/`sendmmsg` batches over `poll`.
//! - `simple` ([`mmsg`] with one message per call): one `recvmsg`/`sendmsg`
//!   per datagram, the baseline every figure is compared with.

pub(crate) mod mmsg;
