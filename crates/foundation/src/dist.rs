//! The seam between a node and a distribution layer: how links, monitors
//! and exit signals reach pids on other nodes.
//!
//! A [`Node`] knows only its own processes. When one of them links to,
//! monitors or signals a pid of another node, the node hands the operation
//! to the [`Distribution`] installed with [`Node::set_distribution`] (the
//! `foundation-cluster` crate installs one). Without one, a remote pid is
//! unreachable: a link fails with `NoConnection`, a monitor fires `Down`
//! with `NoConnection` at once, and a signal is dropped.
//!
//! In the other direction, the distribution layer applies what arrives from
//! peers with the `remote_*` methods of [`Node`].

use std::sync::Arc;

use crate::exit::{ExitReason, MonitorRef};
use crate::node::Node;
use crate::pid::Pid;
use crate::process::{SignalKind, Watcher};

/// What a node asks of its distribution layer. Every method returns at once
/// (the work is queued for the peer); `false` means the peer's node is not
/// connected.
pub trait Distribution: Send + Sync + 'static {
    /// `local` has linked to `remote`: install the remote end.
    fn link(&self, local: Pid, remote: Pid) -> bool;
    /// `local` has removed its link to `remote`.
    fn unlink(&self, local: Pid, remote: Pid);
    /// `watcher` (local) monitors `target` (remote) under `monitor`.
    fn monitor(&self, watcher: Pid, target: Pid, monitor: MonitorRef) -> bool;
    /// `watcher` no longer monitors `target`.
    fn demonitor(&self, watcher: Pid, target: Pid, monitor: MonitorRef);
    /// An exit signal from local `from` to remote `to`: through a link when
    /// `link` is true (`from` exited), else an explicit `exit`.
    fn exit_signal(&self, from: Pid, to: Pid, reason: ExitReason, link: bool);
    /// Local `target`, monitored by remote `watcher`, has ended.
    fn down(&self, watcher: Pid, monitor: MonitorRef, target: Pid, reason: ExitReason);
}

impl Node {
    /// Installs the distribution layer (once; a second call returns false).
    pub fn set_distribution(&self, dist: Arc<dyn Distribution>) -> bool {
        self.shared.dist.set(dist).is_ok()
    }

    /// The installed distribution layer.
    pub fn distribution(&self) -> Option<&Arc<dyn Distribution>> {
        self.shared.dist.get()
    }

    /// Whether `pid` lives on this node incarnation.
    pub fn is_local(&self, pid: Pid) -> bool {
        pid.node() == self.shared.id
    }

    /// A peer says remote `from` linked to local `to`. Returns false if `to`
    /// is not alive (the caller answers with a `NoProc` exit signal).
    pub fn remote_link(&self, to: Pid, from: Pid) -> bool {
        self.shared.get(to).is_some_and(|p| p.add_link(from))
    }

    /// A peer says remote `from` removed its link to local `to`.
    pub fn remote_unlink(&self, to: Pid, from: Pid) {
        if let Some(p) = self.shared.get(to) {
            p.remove_link(from);
        }
    }

    /// A peer says remote `watcher` monitors local `target`. Returns false if
    /// `target` is not alive (the caller answers with a `NoProc` down).
    pub fn remote_monitor(&self, target: Pid, watcher: Pid, monitor: MonitorRef) -> bool {
        self.shared.get(target).is_some_and(|p| p.add_watcher(monitor, Watcher::Process(watcher)).is_ok())
    }

    /// A peer says a remote watcher dropped `monitor` on local `target`.
    pub fn remote_demonitor(&self, target: Pid, monitor: MonitorRef) {
        if let Some(p) = self.shared.get(target) {
            p.remove_watcher(monitor);
        }
    }

    /// Delivers an exit signal from remote `from` to local `to`. Through a
    /// link it counts only while the link stands, as locally.
    pub fn remote_exit(&self, from: Pid, to: Pid, reason: ExitReason, link: bool) {
        if let Some(p) = self.shared.get(to) {
            p.exit_signal(from, reason, if link { SignalKind::Link } else { SignalKind::Explicit });
        }
    }

    /// Delivers a `Down` for remote `target` to local `watcher` (only while
    /// `watcher` still holds `monitor`).
    pub fn remote_down(&self, watcher: Pid, monitor: MonitorRef, target: Pid, reason: ExitReason) {
        if let Some(p) = self.shared.get(watcher) {
            p.down(monitor, target, reason);
        }
    }
}
