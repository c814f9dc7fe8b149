//! One connection's task: the writer (frames and heartbeats, batched into
//! sealed records), the reader (verifies each record, then hands its frames
//! to the remote and RPC layers, never waiting on a local process), the
//! watchdog (silence, and a handover's deadline), and how it ends: cut at
//! once, or handed over to the connection that replaced it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use foundation::rt::BoxStream;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

use super::link::{End, Which, end};
use super::{Inner, READ_BUFFER_BYTES, WRITE_BATCH_BYTES, Wire, learn};
use crate::frame::{FrameError, decode_header, next_frame};
use crate::outbox::{Lanes, Out};
use crate::seal::{COPY_TAIL_BYTES_MAX, SessionKeys};

/// How long a replaced connection may take to hand over: the peer's side
/// closes once it has installed the replacing connection too.
pub const HANDOVER_MAX: Duration = Duration::from_secs(2);

/// When a connection last heard from its peer (any record, heartbeats
/// included): what the connection's watchdog judges, and what
/// [`super::Cluster::silences`] reports.
pub(super) struct Heard {
    base: tokio::time::Instant,
    /// Milliseconds since `base`.
    ms: AtomicU64,
}

impl Heard {
    pub(super) fn new() -> Self {
        Self { base: tokio::time::Instant::now(), ms: AtomicU64::new(0) }
    }

    fn hear(&self) {
        self.ms.store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long the peer has been silent.
    pub(super) fn silence(&self) -> Duration {
        self.base.elapsed().saturating_sub(Duration::from_millis(self.ms.load(Ordering::Relaxed)))
    }
}

/// How a connection's task starts and ends.
pub(super) struct Lifecycle {
    /// Fires (or drops) when the connection must end.
    pub(super) stop: tokio::sync::oneshot::Receiver<()>,
    /// The connection this one replaced, still ending.
    pub(super) previous: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Held while the task runs.
    pub(super) _ended: tokio::sync::oneshot::Sender<()>,
    /// When the peer was last heard (shared with the peer table's entry).
    pub(super) heard: Arc<Heard>,
}

pub(super) async fn run_conn(
    inner: Arc<Inner>,
    peer: String,
    (id, session): (u64, u64),
    keys: SessionKeys,
    (read, mut write): (ReadHalf<BoxStream>, WriteHalf<BoxStream>),
    mut out: Lanes,
    lifecycle: Lifecycle,
) {
    let Lifecycle { stop, previous, _ended, heard } = lifecycle;
    let tick = inner.config.tick;
    let limit = inner.config.frame_limit;
    let silent_max = tick * inner.config.ticks_to_down;
    // The reader never waits on local processes (a full mailbox parks or
    // drops the message, remote.rs), so silence is the peer's alone.
    let hear = || heard.hear();
    // Set when a replacing connection took over (see `Conn::stop`).
    let handing_over = std::sync::atomic::AtomicBool::new(false);
    let writer = async {
        let mut beat = tokio::time::interval(tick);
        let mut sealer = keys.sealer();
        let mut stop = stop;
        loop {
            // Control frames first (see `outbox.rs`).
            let first = tokio::select! {
                biased;
                frame = out.control.recv() => match frame { Some(f) => f, None => return "closed".to_owned() },
                _ = beat.tick() => Out::header(&Wire::Heartbeat),
                frame = out.data.recv() => match frame { Some(f) => f, None => return "closed".to_owned() },
                stopped = &mut stop => match stopped {
                    Err(_) => return "disconnected".to_owned(),
                    Ok(()) => {
                        handing_over.store(true, Ordering::Relaxed);
                        // What was queued goes out, then our side closes:
                        // the peer reads it all, then the end.
                        while let Some(o) = out.try_recv() {
                            o.mark_sent();
                            sealer.push(&o.frame);
                            if let Err(e) = sealer.write(&mut write, &o.tail).await {
                                return format!("write failed during handover: {e}");
                            }
                            o.release();
                        }
                        let _ = write.shutdown().await;
                        // The reader ends the connection at the peer's close.
                        return std::future::pending::<String>().await;
                    }
                },
            };
            // Under load, many frames go out in one record and one write;
            // a frame with a large raw payload ends its record (the payload
            // is hashed and written where it lies, not copied), a small one
            // is copied in.
            let mut next = Some(first);
            while let Some(o) = next.take() {
                o.mark_sent();
                sealer.push(&o.frame);
                if o.tail.len() > COPY_TAIL_BYTES_MAX {
                    if let Err(e) = sealer.write(&mut write, &o.tail).await {
                        return format!("write failed: {e}");
                    }
                } else {
                    sealer.push(&o.tail);
                }
                o.release();
                if sealer.pending() < WRITE_BATCH_BYTES {
                    next = out.try_recv();
                }
            }
            if sealer.pending() > 0
                && let Err(e) = sealer.write(&mut write, &[]).await
            {
                return format!("write failed: {e}");
            }
            if let Err(e) = write.flush().await {
                return format!("write failed: {e}");
            }
        }
    };
    let reader = async {
        if let Some(previous) = previous {
            // Ends promptly: its stop was dropped when this one replaced it.
            let _ = previous.await;
            hear();
        }
        let mut read = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, read);
        // A record holds at most a batch plus the frame that ended it.
        let mut opener = keys.opener(limit.saturating_add(WRITE_BATCH_BYTES));
        loop {
            let mut record = match opener.read(&mut read).await {
                Err(FrameError::Closed) => return "connection closed".to_owned(),
                Err(e) => return format!("{e}"),
                Ok(r) => r,
            };
            hear();
            loop {
                let frame = match next_frame(&mut record, limit) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return format!("{e}"),
                };
                match decode_header::<Wire>(&frame.header) {
                    Ok(Wire::Heartbeat) => {}
                    Ok(Wire::Peers { me, known }) => learn(&inner, &peer, me, known),
                    Ok(Wire::Proc(p)) => crate::remote::on_frame(&inner, &peer, p, frame.payload),
                    Ok(Wire::Rpc(r)) => crate::rpc::on_frame(&inner, &peer, session, r, frame.payload),
                    Err(e) => return format!("{e}"),
                }
            }
        }
    };
    let watchdog = async {
        let mut handover_since = None;
        loop {
            foundation::rt::sleep(tick.min(HANDOVER_MAX)).await;
            if heard.silence() > silent_max {
                return format!("silent for {silent_max:?}");
            }
            if handing_over.load(Ordering::Relaxed) {
                let since = *handover_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= HANDOVER_MAX {
                    return format!("the peer did not close a replaced connection within {HANDOVER_MAX:?}");
                }
            }
        }
    };
    let reason = tokio::select! {
        biased;
        r = writer => r,
        r = reader => r,
        r = watchdog => r,
    };
    end(&inner, &peer, Which::Id(id), End::Lost(reason));
}
