//! Exit reasons and the signals processes receive about other processes.
//!
//! # Semantics (as OTP's, with Rust's means)
//!
//! A process ends with an [`ExitReason`]: returning from its body gives
//! `Normal` (or the reason it returned), a panic gives `Panic(message)`, being
//! killed gives `Killed`. Then:
//!
//! - every **linked** process receives an exit signal `(from, reason)`:
//!   - if it traps exits, the signal becomes an [`Event::Exit`](crate::Event)
//!     message;
//!   - otherwise a `Normal` reason is ignored and any other reason makes it
//!     exit with that same reason (so `Killed` propagates as `Killed`, and it
//!     is trappable when it arrives through a link, as in OTP);
//! - every **monitoring** process receives an [`Event::Down`](crate::Event)
//!   message, whatever the reason and whether or not it traps exits.
//!
//! [`Node::exit`](crate::Node::exit) sends an exit signal from outside:
//! `ExitReason::Kill` is untrappable and ends the target with `Killed`
//! (`Process.exit(pid, :kill)`); `Normal` only reaches a process that traps
//! exits; any other reason behaves like a link's signal.
//!
//! **Signals are never lost silently** (OTP's guarantee that a linked
//! process always learns of an exit). A process queues at most
//! [`SIGNAL_QUEUE_MAX`](crate::SIGNAL_QUEUE_MAX) exit and down signals it
//! has not received yet; one more kills it, untrappably, with
//! [`ExitReason::SignalOverflow`], which its own links and monitors see
//! (fail-stop: a supervisor that cannot keep up with its children's exits
//! dies and is restarted by its own supervisor instead of carrying on with
//! a wrong view of its children). OTP has no such bound (its signal queue
//! is unbounded); this is where the two differ.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Pid;

/// Why a process ended (or, as a signal, why another should).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExitReason {
    /// Finished its work.
    Normal,
    /// Asked to stop by its supervisor or owner.
    Shutdown,
    /// As a signal: the untrappable kill. As an exit reason, it becomes `Killed`.
    Kill,
    /// Ended by an untrappable kill.
    Killed,
    /// The process did not exist (a link or monitor to a dead pid).
    NoProc,
    /// The connection to the process's node was lost.
    NoConnection,
    /// A supervisor gave up: too many restarts within its period.
    RestartIntensity,
    /// Ended with an error (the message of the error).
    Error(Arc<str>),
    /// Ended by a panic (the panic message).
    Panic(Arc<str>),
    /// Killed because a signal arrived while its signal queue held
    /// [`SIGNAL_QUEUE_MAX`](crate::SIGNAL_QUEUE_MAX) (fail-stop: a signal is
    /// never dropped while the process carries on). Last, so the variants
    /// before keep their wire tags.
    SignalOverflow,
}

impl ExitReason {
    /// An `Error` reason with this message.
    pub fn error(msg: impl fmt::Display) -> Self {
        Self::Error(msg.to_string().into())
    }

    /// `Normal` or `Shutdown`: the reasons a transient child is not restarted for.
    pub fn is_clean(&self) -> bool {
        matches!(self, Self::Normal | Self::Shutdown)
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Normal => f.write_str("normal"),
            Self::Shutdown => f.write_str("shutdown"),
            Self::Kill => f.write_str("kill"),
            Self::Killed => f.write_str("killed"),
            Self::NoProc => f.write_str("noproc"),
            Self::NoConnection => f.write_str("noconnection"),
            Self::RestartIntensity => f.write_str("reached_max_restart_intensity"),
            Self::Error(m) => write!(f, "error: {m}"),
            Self::Panic(m) => write!(f, "panic: {m}"),
            Self::SignalOverflow => f.write_str("signal_queue_overflow"),
        }
    }
}

impl fmt::Debug for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a process body may return; converted to its exit reason.
pub trait IntoExit {
    /// The exit reason this value stands for.
    fn into_exit(self) -> ExitReason;
}

impl IntoExit for () {
    fn into_exit(self) -> ExitReason {
        ExitReason::Normal
    }
}

impl IntoExit for ExitReason {
    fn into_exit(self) -> ExitReason {
        self
    }
}

/// Names the never type `!` on stable Rust (through `fn() -> !`'s output),
/// so a body that loops forever (`async { loop { .. } }`, whose output is `!`
/// under edition 2024's fallback) is a valid process body.
pub trait FnOutput {
    /// The return type.
    type Output;
}

impl<O> FnOutput for fn() -> O {
    type Output = O;
}

/// The never type, `!`.
pub type Never = <fn() -> ! as FnOutput>::Output;

impl IntoExit for Never {
    fn into_exit(self) -> ExitReason {
        self
    }
}

impl<E: fmt::Display> IntoExit for Result<(), E> {
    fn into_exit(self) -> ExitReason {
        match self {
            Ok(()) => ExitReason::Normal,
            Err(e) => ExitReason::error(e),
        }
    }
}

/// Identifies one monitor, returned by `monitor` and carried by its `Down`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct MonitorRef(pub(crate) u64);

/// A system message: what a process learns about others.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Signal {
    /// A linked process exited (only seen by processes that trap exits), or
    /// someone sent this process an exit signal.
    Exit {
        /// Who exited or sent the signal.
        from: Pid,
        /// Why.
        reason: ExitReason,
    },
    /// A monitored process is gone.
    Down {
        /// The monitor that fired.
        monitor: MonitorRef,
        /// The process that ended.
        pid: Pid,
        /// Why it ended (`NoProc` if it was already dead when monitored).
        reason: ExitReason,
    },
}
