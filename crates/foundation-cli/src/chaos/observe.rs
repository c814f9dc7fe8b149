//! `foundation chaos --observe ADDR`: the run drawn live in a browser.
//!
//! `GET /` is a page (embedded, no network needed) that follows
//! `GET /events`, a server-sent-events stream: about twice a second of the
//! run's time, the timeline so far (successful operations per second and
//! their p99 from the history as it grows, KV and service operations; the
//! fault bands, the one being injected drawn up to now), the run's clock,
//! and the nemesis at work; at the end, the report's own timeline and its
//! verdict lines, which the page keeps after the run's process is gone.
//!
//! - **Where it runs.** On a runtime of its own (one thread), so it draws a
//!   simulated run as well as a real one, and is never part of the run's
//!   schedule.
//! - **Who may look.** Loopback only (refused otherwise, exit 2): it is a
//!   view of a test run on this host. It shows figures, nemesis names and
//!   what they hit, never keys, values or secrets.
//! - **Bounds.** The stream always carries the latest view only (a
//!   `watch`: a slow browser skips views, it never makes the run buffer);
//!   at most [`STREAMS_MAX`] streams (one more gets 503) and
//!   [`CONNECTIONS_MAX`] connections (one more is closed), each request
//!   head read within [`HEAD_TIMEOUT`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use foundation::rt::{Network, TokioNetwork};
use foundation_testkit::chaos::Nemesis;
use foundation_testkit::recorder::EventType;
use foundation_testkit::scenario::Live;
use serde_json::json;
use std::sync::Mutex;
use tokio::sync::{Semaphore, watch};

use super::timeline::{self, Band, Second};

/// Streams open at once.
pub const STREAMS_MAX: usize = 8;
/// Connections open at once.
pub const CONNECTIONS_MAX: usize = 16;
/// A request's head must arrive within this.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// After the verdict, how long the run waits for open pages to get it.
const LINGER_MAX: Duration = Duration::from_secs(2);

const PAGE: &str = include_str!("observe.html");

/// The live view's server and what it has drawn.
pub struct Observer {
    addr: String,
    view: watch::Sender<Arc<str>>,
    shared: Arc<Shared>,
    follow: Mutex<Follow>,
    runtime: tokio::runtime::Runtime,
}

struct Shared {
    streams: Arc<Semaphore>,
    /// Streams that have sent the final view.
    told: AtomicUsize,
}

/// The history read so far, as seconds of successful operations.
#[derive(Default)]
struct Follow {
    read: usize,
    /// Invoke times (µs) of operations in flight, by client process.
    invoked: HashMap<u64, u64>,
    /// The successful operations: invoke time and latency (µs), what
    /// [`timeline::seconds`] reads.
    ok: Vec<(u64, u64)>,
}

impl Observer {
    /// Serves on `addr` (loopback; port 0 picks one).
    pub fn start(addr: &str) -> Result<Self, String> {
        let ip = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_matches(['[', ']']);
        let loopback = ip.eq_ignore_ascii_case("localhost") || ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback());
        if !loopback {
            return Err(format!("--observe {addr}: give a loopback address (127.0.0.1:PORT); the live view is for this host"));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("chaos-observer")
            .enable_all()
            .build()
            .map_err(|e| format!("--observe: no runtime for it: {e}"))?;
        let listener = runtime
            .block_on(TokioNetwork.bind(addr))
            .map_err(|e| format!("--observe {addr}: cannot listen there ({e}); choose a free port, or port 0"))?;
        let bound = listener.local_addr().map_err(|e| format!("--observe {addr}: {e}"))?;
        let (view, _) = watch::channel(Arc::from(json!({ "state": "starting" }).to_string()));
        let shared = Arc::new(Shared { streams: Arc::new(Semaphore::new(STREAMS_MAX)), told: AtomicUsize::new(0) });
        let app =
            Router::new().route("/", get(|| async { Html(PAGE) })).route("/events", get(events)).with_state((view.clone(), shared.clone()));
        runtime.spawn(serve(listener, app));
        Ok(Self { addr: bound, view, shared, follow: Mutex::default(), runtime })
    }

    /// Where the page is.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// What the run calls at each tick.
    pub fn live(self: &Arc<Self>) -> Arc<dyn Fn(Live) + Send + Sync> {
        let this = self.clone();
        Arc::new(move |live: Live| this.draw(&live))
    }

    fn draw(&self, live: &Live) {
        let duration_s = live.duration.as_secs().max(1);
        let points = self.follow.lock().unwrap_or_else(|e| e.into_inner()).read(live);
        let mut bands: Vec<Band> = live.injections.iter().filter(|i| i.effective).map(|i| Band::of(i, live.workload_start_us)).collect();
        let active = live.active.as_ref().and_then(|(name, at_us)| Some((name.parse::<Nemesis>().ok()?, *at_us)));
        if let Some((nemesis, at_us)) = active {
            let start_s = at_us.saturating_sub(live.workload_start_us) as f64 / 1e6;
            let held_s = (live.elapsed.as_secs_f64() - start_s).max(0.0);
            bands.push(Band { start_s, held_s, nemesis, detail: "now".into() });
        }
        let view = json!({
            "state": "running",
            "elapsed_s": live.elapsed.as_secs_f64(),
            "duration_s": duration_s,
            "operations": live.history.len() / 2,
            "injections": live.injections.iter().filter(|i| i.effective).count(),
            "active": active.map(|(n, _)| n.name()),
            "svg": timeline::draw(duration_s, &points, &bands),
        });
        self.view.send_replace(Arc::from(view.to_string()));
    }

    /// The run is over: its report's timeline and verdict. Waits (up to
    /// [`LINGER_MAX`]) for the open pages to get it.
    pub fn finish(&self, passed: bool, lines: &[String], svg: String) {
        self.shared.told.store(0, Ordering::Relaxed);
        self.view.send_replace(Arc::from(json!({ "state": "done", "passed": passed, "lines": lines, "svg": svg }).to_string()));
        self.runtime.block_on(async {
            let deadline = tokio::time::Instant::now() + LINGER_MAX;
            while tokio::time::Instant::now() < deadline {
                let open = STREAMS_MAX - self.shared.streams.available_permits();
                if self.shared.told.load(Ordering::Relaxed) >= open {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
}

impl Follow {
    /// Reads what the history gained since the last tick; the seconds so
    /// far (`0..elapsed`).
    fn read(&mut self, live: &Live) -> Vec<Second> {
        let new = live.history.events_from(self.read);
        self.read += new.len();
        for e in new {
            match e.kind {
                EventType::Invoke => {
                    self.invoked.insert(e.process, e.time);
                }
                EventType::Ok => {
                    if let Some(at) = self.invoked.remove(&e.process) {
                        self.ok.push((at, e.time.saturating_sub(at)));
                    }
                }
                EventType::Fail | EventType::Info => {
                    self.invoked.remove(&e.process);
                }
            }
        }
        // The whole seconds so far.
        timeline::seconds(self.ok.iter().copied(), live.elapsed.as_secs())
    }
}

type ViewState = (watch::Sender<Arc<str>>, Arc<Shared>);

/// `GET /events`: the latest view now, then each new one.
async fn events(State((view, shared)): State<ViewState>) -> Response {
    let Ok(permit) = shared.streams.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{STREAMS_MAX} pages are watching; close one")).into_response();
    };
    let mut rx = view.subscribe();
    rx.mark_changed();
    let stream = futures_util::stream::unfold((rx, permit, shared), |(mut rx, permit, shared)| async move {
        rx.changed().await.ok()?;
        let data = rx.borrow_and_update().clone();
        if data.contains("\"state\":\"done\"") {
            shared.told.fetch_add(1, Ordering::Relaxed);
        }
        Some((Ok::<_, Infallible>(Event::default().event("view").data(&*data)), (rx, permit, shared)))
    });
    Sse::new(stream).into_response()
}

/// The accept loop: each connection in a task, at most
/// [`CONNECTIONS_MAX`] at once.
async fn serve(listener: Box<dyn foundation::rt::Listener>, app: Router) {
    let open = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = open.clone().try_acquire_owned() else { continue };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        foundation::rt::spawn(async move {
            let _permit = permit;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT);
            let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
        });
    }
}
