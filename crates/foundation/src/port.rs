//! Ports: an external OS process that behaves as a Foundation process.
//!
//! A port is a process that owns a child OS process and talks to it in
//! length-framed messages over the child's stdin and stdout: each frame is a
//! 4-byte big-endian length, then that many bytes.
//!
//! - [`PortCommand::send`] writes a frame to the child's stdin.
//! - Every frame the child writes to stdout reaches the port's owner as a
//!   [`PortData`] message.
//! - When the child exits, the port exits: `Normal` for exit status 0,
//!   `Error("port `cmd` exited with ...")` otherwise, so its links, monitors
//!   and supervisor see the death like any other.
//! - A frame over [`PortConfig::max_frame_bytes`], or a stream that ends in
//!   the middle of a frame, is garbage: the port kills the child and exits
//!   with an error saying so. The node is untouched.
//! - On an exit signal (the supervisor's `Shutdown`, say) the port kills the
//!   child's whole process group and reaps the child before exiting, so no
//!   OS process outlives it. If the port is killed outright, the group is
//!   killed on drop and tokio reaps the child in the background.
//! - Like an Erlang port, it closes when its owner exits.
//! - Frames the child does not read pile up to a bound; then the port takes
//!   no more messages (senders see its mailbox fill) but still answers
//!   signals, so a wedged command can always be shut down.
//!
//! A command that cannot start fails [`start_port`] with
//! [`PortError::Spawn`], which names the command.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

use crate::mailbox::{MAILBOX_BYTES_DEFAULT, MESSAGE_BYTES_MAX_DEFAULT};
use crate::supervisor::StartFn;
use crate::{Addr, Ctx, Event, ExitReason, MailboxConfig, Message, Node, Pid, Reply, SpawnOpts};

/// Frames waiting to be written to the child's stdin.
const STDIN_QUEUE_FRAMES: usize = 2;
/// Largest frame a port can carry (frame lengths are 32-bit).
pub const FRAME_BYTES_MAX: usize = u32::MAX as usize;
/// How long the port waits for the child's last frames after it exited.
const DRAIN_WAIT: Duration = Duration::from_millis(100);

/// What to run, and the frame size limit.
#[derive(Clone, Debug)]
pub struct PortConfig {
    /// The program (a path, or a name looked up in `PATH`).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Largest frame accepted from the child (and written to it).
    pub max_frame_bytes: usize,
}

impl PortConfig {
    /// Runs `program` with `args`, default frame limit.
    pub fn new(program: impl Into<String>, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { program: program.into(), args: args.into_iter().map(Into::into).collect(), max_frame_bytes: MESSAGE_BYTES_MAX_DEFAULT }
    }

    fn describe(&self) -> String {
        std::iter::once(self.program.as_str()).chain(self.args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    }
}

/// Why a port did not start.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The command could not be started.
    #[error("port command `{command}` could not start: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config is invalid.
    #[error("invalid port config: {0}")]
    Config(String),
    /// The port process could not be spawned.
    #[error("port process: {0}")]
    Process(#[from] crate::SpawnError),
}

/// A frame from a port's child, delivered to the port's owner.
#[derive(Debug)]
pub struct PortData {
    /// The port it came from.
    pub port: Pid,
    /// The frame's payload.
    pub data: Bytes,
}

impl Message for PortData {
    fn heap_bytes(&self) -> usize {
        self.data.len()
    }
}

/// A request to a port.
pub struct PortCommand(Cmd);

enum Cmd {
    Send(Bytes),
    OsPid(Reply<Option<u32>>),
    /// From the port's own stdout reader: it stopped, with this reason.
    ReaderDone(Option<String>),
}

impl Message for PortCommand {
    fn heap_bytes(&self) -> usize {
        match &self.0 {
            Cmd::Send(b) => b.len(),
            _ => 0,
        }
    }
}

impl PortCommand {
    /// Write `data` to the child as one frame.
    pub fn send(data: Bytes) -> Self {
        Self(Cmd::Send(data))
    }

    /// Ask for the child's OS process id.
    pub fn os_pid(reply: Reply<Option<u32>>) -> Self {
        Self(Cmd::OsPid(reply))
    }
}

/// Starts the command and a port process owning it; frames go to `owner`.
pub fn start_port(node: &Node, config: PortConfig, owner: Addr<PortData>, mut opts: SpawnOpts) -> Result<Addr<PortCommand>, PortError> {
    if config.max_frame_bytes == 0 || config.max_frame_bytes > FRAME_BYTES_MAX {
        return Err(PortError::Config(format!("max_frame_bytes must be 1..={FRAME_BYTES_MAX}, got {}", config.max_frame_bytes)));
    }
    let mut child = Command::new(&config.program)
        .args(&config.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        // Its own process group, so its descendants die with it.
        .process_group(0)
        .spawn()
        .map_err(|source| PortError::Spawn { command: config.describe(), source })?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    opts.trap_exit = true;
    if opts.mailbox.is_none() {
        // A frame too large for the child is refused at the sender, typed.
        let max_message_bytes = config.max_frame_bytes + std::mem::size_of::<PortCommand>();
        opts.mailbox = Some(Arc::new(MailboxConfig {
            max_message_bytes,
            max_bytes: max_message_bytes.max(MAILBOX_BYTES_DEFAULT),
            ..MailboxConfig::default()
        }));
    }
    Ok(node.spawn_with(opts, move |ctx| run(ctx, config, child, stdin, stdout, owner))?)
}

/// A [`StartFn`] for supervising a port: each (re)start runs the command anew.
pub fn port_child(config: PortConfig, owner: Addr<PortData>) -> StartFn {
    Arc::new(move |node: &Node, opts: SpawnOpts| {
        start_port(node, config.clone(), owner.clone(), opts).map(|a| a.pid()).map_err(|e| e.to_string())
    })
}

/// Frames taken from the mailbox and not yet handed to the stdin writer.
/// At this bound, or at [`PENDING_BYTES_MAX`], the port stops taking
/// messages (senders then see its mailbox fill) but still watches signals
/// and the child.
const PENDING_FRAMES_MAX: usize = 256;
/// Bytes of those frames (one frame is always taken, whatever its size).
/// So a port holds at most this, plus two frames in its writer's queue,
/// beyond what its mailbox holds (256 frames of the largest size were
/// 4 GiB).
pub const PENDING_BYTES_MAX: usize = 4 << 20;

/// The child and its process group: killed together, on every way out.
struct ChildGuard {
    child: Child,
    group: Option<i32>,
}

impl ChildGuard {
    fn kill_group(&self) {
        if let Some(group) = self.group {
            // SAFETY: kill(2) with a negative pid signals that process group;
            // it touches no memory.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
    }

    /// Kills the group and reaps the child, so nothing outlives the port.
    async fn kill_and_reap(&mut self) {
        self.kill_group();
        let _ = self.child.kill().await;
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // The port was killed outright: the direct child dies by
        // `kill_on_drop` (tokio reaps it); its descendants die here.
        self.kill_group();
    }
}

/// Aborts the port's helper tasks however the port ends.
struct Tasks([tokio::task::JoinHandle<()>; 2]);

impl Drop for Tasks {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

async fn run(
    mut ctx: Ctx<PortCommand>,
    config: PortConfig,
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    owner: Addr<PortData>,
) -> ExitReason {
    let command = config.describe();
    let max = config.max_frame_bytes;
    let group = child.id().and_then(|id| i32::try_from(id).ok());
    let mut child = ChildGuard { child, group };
    // Like an Erlang port, it closes when its owner dies.
    let owner_watch = ctx.monitor(owner.pid());
    let (frames_tx, frames_rx) = mpsc::channel::<Bytes>(STDIN_QUEUE_FRAMES);
    let _tasks =
        Tasks([crate::rt::spawn(write_frames(stdin, frames_rx)), crate::rt::spawn(read_frames(stdout, max, ctx.pid(), owner, ctx.addr()))]);
    let mut pending: VecDeque<Bytes> = VecDeque::new();
    let mut pending_bytes = 0usize;
    let mut reader_done = false;
    let reason = loop {
        let take_messages = pending.is_empty() || (pending.len() < PENDING_FRAMES_MAX && pending_bytes < PENDING_BYTES_MAX);
        tokio::select! {
            biased;
            status = child.child.wait() => {
                break child_exited(&mut ctx, &command, status, reader_done).await;
            }
            permit = frames_tx.reserve(), if !pending.is_empty() => match permit {
                Ok(permit) => {
                    let frame = pending.pop_front().expect("pending is not empty");
                    pending_bytes -= frame.len();
                    permit.send(frame);
                }
                // The writer stopped (the child closed its stdin); its exit comes next.
                Err(_) => {
                    pending.clear();
                    pending_bytes = 0;
                }
            },
            event = next_event(&mut ctx, take_messages) => match event {
                Event::Message(PortCommand(Cmd::Send(data))) => {
                    pending_bytes += data.len();
                    pending.push_back(data);
                }
                Event::Message(PortCommand(Cmd::OsPid(reply))) => {
                    let _ = reply.send(child.child.id());
                }
                Event::Message(PortCommand(Cmd::ReaderDone(Some(garbage)))) => {
                    break ExitReason::error(format!("port `{command}`: {garbage}"));
                }
                // Clean end of stdout: the exit status comes from `wait`.
                Event::Message(PortCommand(Cmd::ReaderDone(None))) => reader_done = true,
                Event::Down { monitor, reason, .. } if monitor == owner_watch => {
                    break if reason == ExitReason::Normal {
                        ExitReason::Normal
                    } else {
                        ExitReason::error(format!("port `{command}`: owner exited: {reason}"))
                    };
                }
                Event::Exit { reason: ExitReason::Normal, .. } | Event::Down { .. } => {}
                Event::Exit { reason, .. } => break reason,
            },
        }
    };
    child.kill_and_reap().await;
    reason
}

/// Messages and signals, or only signals while frames pile up.
async fn next_event(ctx: &mut Ctx<PortCommand>, take_messages: bool) -> Event<PortCommand> {
    if take_messages { ctx.recv_event().await } else { ctx.recv_signal().await }
}

/// The exit reason once the child has exited, after its last frames.
async fn child_exited(
    ctx: &mut Ctx<PortCommand>,
    command: &str,
    status: std::io::Result<std::process::ExitStatus>,
    reader_done: bool,
) -> ExitReason {
    let drained = if reader_done { Ok(None) } else { tokio::time::timeout(DRAIN_WAIT, wait_reader(ctx)).await };
    match (drained, status) {
        (Ok(Some(garbage)), _) => ExitReason::error(format!("port `{command}`: {garbage}")),
        (Err(_), _) => {
            ExitReason::error(format!("port `{command}` exited, and its last frames did not reach the owner within {DRAIN_WAIT:?}"))
        }
        (Ok(None), Ok(s)) if s.success() => ExitReason::Normal,
        (Ok(None), Ok(s)) => ExitReason::error(format!("port `{command}` exited with {s}")),
        (Ok(None), Err(e)) => ExitReason::error(format!("port `{command}`: waiting for it failed: {e}")),
    }
}

/// Waits for the reader's end; `Some` if it ended on garbage.
async fn wait_reader(ctx: &mut Ctx<PortCommand>) -> Option<String> {
    loop {
        if let PortCommand(Cmd::ReaderDone(garbage)) = ctx.recv().await {
            return garbage;
        }
    }
}

async fn write_frames(mut stdin: ChildStdin, mut frames: mpsc::Receiver<Bytes>) {
    while let Some(frame) = frames.recv().await {
        let len = u32::try_from(frame.len()).expect("frames are bounded by max_frame_bytes, far below 4 GiB");
        if stdin.write_all(&len.to_be_bytes()).await.is_err() || stdin.write_all(&frame).await.is_err() || stdin.flush().await.is_err() {
            return;
        }
    }
}

/// Reads frames until end of stream or garbage; tells the port which.
async fn read_frames(mut stdout: ChildStdout, max: usize, port: Pid, owner: Addr<PortData>, me: Addr<PortCommand>) {
    let garbage = loop {
        // The first byte alone: end of stream here is a clean end; anywhere
        // later it cuts a frame.
        let mut len = [0u8; 4];
        match stdout.read(&mut len[..1]).await {
            Ok(0) => break None,
            Ok(_) => {}
            Err(e) => break Some(format!("reading its stdout failed: {e}")),
        }
        if let Err(e) = stdout.read_exact(&mut len[1..]).await {
            break Some(format!("stdout ended inside a frame header: {e}"));
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > max {
            break Some(format!("garbage on stdout: a frame header announces {len} bytes, over the limit of {max}"));
        }
        let mut buf = BytesMut::zeroed(len);
        if let Err(e) = stdout.read_exact(&mut buf).await {
            break Some(format!("stdout ended inside a {len}-byte frame: {e}"));
        }
        if owner.send(PortData { port, data: buf.freeze() }).await.is_err() {
            // The owner is gone: keep draining so the child is not blocked.
        }
    };
    let _ = me.send(PortCommand(Cmd::ReaderDone(garbage))).await;
}
