//! The live observer (`GET /ui`) in a real browser: headless Chromium,
//! driven over WebDriver by chromedriver, on a 3-node cluster of
//! `foundation node` processes. The browser tier:
//!
//! ```text
//! cargo test -p foundation-testkit --test observer_browser -- --ignored
//! ```
//!
//! It needs `chromium` and `chromedriver` on the PATH (Debian's `chromium`
//! and `chromium-driver`; `.ci/run` installs them) and the `foundation`
//! binary (built by `cargo test --workspace`, or `FOUNDATION_BIN`). The
//! screenshots go to `CARGO_TARGET_TMPDIR/observer`.
//!
//! Checked, in the page as a browser renders it:
//! - the members and the leader are shown;
//! - a process killed through the API leaves the tree, and its restart
//!   appears under the same supervisor;
//! - a partition shows in the reachability matrix (its time is printed);
//! - `foundation chaos --observe` draws its run live (the plot loads as an
//!   image as it grows), then shows the verdict.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use foundation_cluster::admin::{AdminToken, client};
use foundation_testkit::cluster::{Backend, ClusterSpec, Fault, TestCluster, free_ports, run};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(30);

async fn read_some(s: &mut foundation::rt::BoxStream, buf: &mut [u8]) -> anyhow::Result<usize> {
    Ok(tokio::time::timeout(Duration::from_secs(120), s.read(buf)).await.map_err(|_| anyhow::anyhow!("chromedriver went quiet"))??)
}

/// One WebDriver request to chromedriver at `addr`; the answer's `value`.
async fn webdriver(addr: &str, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut s = tokio::time::timeout(WAIT, foundation::rt::Network::connect(&foundation::rt::TokioNetwork, addr)).await??;
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    // chromedriver keeps the connection open: read the head, then exactly
    // the body its length (or its chunks) says.
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let split = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = read_some(&mut s, &mut buf).await?;
        anyhow::ensure!(n > 0, "chromedriver closed the connection");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut rest = raw[split + 4..].to_vec();
    let complete = |rest: &[u8]| -> Option<Vec<u8>> {
        if head.contains("transfer-encoding: chunked") {
            let mut body = Vec::new();
            let mut at = 0;
            loop {
                let line = rest[at..].windows(2).position(|w| w == b"\r\n")?;
                let size = usize::from_str_radix(String::from_utf8_lossy(&rest[at..at + line]).trim(), 16).ok()?;
                if size == 0 {
                    return Some(body);
                }
                let start = at + line + 2;
                body.extend_from_slice(rest.get(start..start + size)?);
                at = start + size + 2;
            }
        }
        let len = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        (rest.len() >= len).then(|| rest[..len].to_vec())
    };
    let rest = loop {
        if let Some(body) = complete(&rest) {
            break body;
        }
        let n = read_some(&mut s, &mut buf).await?;
        anyhow::ensure!(n > 0, "chromedriver closed the connection mid-answer");
        rest.extend_from_slice(&buf[..n]);
    };
    let v: Value = serde_json::from_slice(&rest)?;
    let code: u16 = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    anyhow::ensure!(code == 200, "{method} {path}: {code}: {}", v["value"]["message"]);
    Ok(v["value"].clone())
}

/// A browser session.
struct Browser {
    driver: tokio::process::Child,
    addr: String,
    session: String,
    profile: PathBuf,
}

impl Browser {
    async fn start() -> anyhow::Result<Self> {
        let port = free_ports(1).map_err(|e| anyhow::anyhow!("{e}"))?[0];
        let addr = format!("127.0.0.1:{port}");
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("chromedriver does not start ({e}): install Debian's chromium and chromium-driver"))?;
        let deadline = Instant::now() + WAIT;
        while webdriver(&addr, "GET", "/status", None).await.map(|v| v["ready"] == true).ok() != Some(true) {
            anyhow::ensure!(Instant::now() < deadline, "chromedriver is not ready within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A profile of its own: two browsers on one profile clash (the
        // second removed the first's directory under it, and its renderer
        // went away: "target frame detached").
        static BROWSERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = BROWSERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile = std::env::temp_dir().join(format!("foundation-observer-browser-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1500,1000",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": which("chromium").unwrap_or_else(|| "/usr/bin/chromium".into()), "args": args },
        }}});
        let session = webdriver(&addr, "POST", "/session", Some(caps)).await?;
        let session = session["sessionId"].as_str().ok_or_else(|| anyhow::anyhow!("no session: {session}"))?.to_owned();
        Ok(Self { driver, addr, session, profile })
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        webdriver(&self.addr, method, &format!("/session/{}{path}", self.session), body).await
    }

    async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.call("POST", "/url", Some(json!({ "url": url }))).await.map(drop)
    }

    /// Runs `script` in the page (a function body; `arguments` are `args`).
    async fn js(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.call("POST", "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    /// Waits until `script` returns a truthy value; returns it and when.
    async fn until(&self, what: &str, script: &str, timeout: Duration) -> anyhow::Result<(Value, Duration)> {
        let start = Instant::now();
        loop {
            let v = self.js(script, json!([])).await?;
            if !(v.is_null() || v == false) {
                return Ok((v, start.elapsed()));
            }
            anyhow::ensure!(start.elapsed() < timeout, "the page did not show {what} within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.call("GET", "/screenshot", None).await?;
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("observer");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, base64(png.as_str().unwrap_or_default())?)?;
        eprintln!("screenshot: {}", path.display());
        Ok(path)
    }

    async fn close(mut self) {
        let _ = webdriver(&self.addr, "DELETE", &format!("/session/{}", self.session), None).await;
        let _ = self.driver.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn which(program: &str) -> Option<String> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(program))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

/// Standard base64 (a screenshot's PNG).
fn base64(text: &str) -> anyhow::Result<Vec<u8>> {
    let value = |c: u8| -> anyhow::Result<u32> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => anyhow::bail!("not base64: {c}"),
        } as u32)
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    Ok(out)
}

/// What the page shows of the cluster: the leader, the members' rows, and
/// each cell of the reachability matrix.
const CLUSTER: &str = r##"
    const leader = document.getElementById("leader").textContent;
    const members = [...document.querySelectorAll("#members tbody tr")].map((r) => r.dataset.member);
    const cells = {};
    for (const td of document.querySelectorAll("#matrix td")) cells[td.dataset.from + ">" + td.dataset.to] = td.dataset.state;
    return { leader, members, cells, live: document.getElementById("live").className };
"##;

async fn observe(cluster: TestCluster) -> anyhow::Result<()> {
    let (addr, token_file) = cluster.admin(0).ok_or_else(|| anyhow::anyhow!("no admin API"))?;
    cluster.set_step("phase", "waiting for the admin token file");
    let deadline = Instant::now() + WAIT;
    while !token_file.exists() {
        anyhow::ensure!(Instant::now() < deadline, "{} was not created", token_file.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = AdminToken::from_file(&token_file)?;
    cluster.set_step("phase", "starting the browser");
    let browser = Browser::start().await?;
    let result = check(&cluster, &browser, &addr, &token).await;
    browser.close().await;
    result
}

async fn check(cluster: &TestCluster, browser: &Browser, addr: &str, token: &AdminToken) -> anyhow::Result<()> {
    let names = cluster.names().to_vec();
    cluster.set_step("phase", "signing in");
    // Sign in: the login form takes the token, the session opens the page.
    browser.open(&format!("http://{addr}/ui")).await?;
    browser.until("the login form", r##"return document.getElementById("token") != null;"##, WAIT).await?;
    // The token goes straight into the form field (never into a URL or a log).
    let secret = token.bearer().trim_start_matches("Bearer ").to_owned();
    browser
        .js(
            r##"document.getElementById("token").value = arguments[0]; document.getElementById("login").submit(); return true;"##,
            json!([secret]),
        )
        .await?;

    // 1. The members and the leader.
    cluster.set_step("phase", "members and leader");
    let want = json!(names);
    let script = CLUSTER;
    let (shown, _) = browser
        .until(
            "three members and a leader",
            &format!(
                "const s = (() => {{ {script} }})(); return JSON.stringify(s.members) === JSON.stringify({want}) && {want}.includes(s.leader) ? s : null;"
            ),
            WAIT,
        )
        .await?;
    eprintln!("the page shows {shown}");
    browser.until("every link up", &format!("const s = (() => {{ {script} }})(); return Object.values(s.cells).every((c) => c === 'up' || c === 'self') && Object.keys(s.cells).length === 9;"), WAIT).await?;
    browser.screenshot("1-cluster").await?;

    // 2. A supervised process killed through the API.
    cluster.set_step("phase", "a process killed");
    let (code, body) = client::request(addr, Some(token), "GET", "/processes", b"").await.map_err(|e| anyhow::anyhow!(e))?;
    anyhow::ensure!(code == 200, "GET /processes: {code} {body}");
    let list: Value = serde_json::from_str(&body)?;
    let procs = list["processes"].as_array().cloned().unwrap_or_default();
    let ids: Vec<u64> = procs.iter().filter_map(|p| p["id"].as_u64()).collect();
    let victim = procs
        .iter()
        .find(|p| p["parent"].as_u64().is_some_and(|parent| ids.contains(&parent)) && p["restarts"] == 0 && p["trap_exit"] == false)
        .ok_or_else(|| anyhow::anyhow!("no supervised process in {list}"))?;
    let (id, parent) = (victim["id"].as_u64().unwrap_or_default(), victim["parent"].as_u64().unwrap_or_default());
    let children = |p: u64| format!(r##"document.querySelectorAll('#tree li[data-parent="{p}"]').length"##);
    let before = browser.js(&format!("return {};", children(parent)), json!([])).await?;
    browser
        .until("the victim in the tree", &format!(r##"return document.querySelector('#tree li[data-id="{id}"]') != null;"##), WAIT)
        .await?;
    let (code, body) =
        client::request(addr, Some(token), "POST", &format!("/processes/{id}/kill"), b"").await.map_err(|e| anyhow::anyhow!(e))?;
    anyhow::ensure!(code == 200, "kill: {code} {body}");
    let (restarted, _) = browser
        .until(
            "the killed process gone and its restart under the same supervisor",
            &format!(
                r##"if (document.querySelector('#tree li[data-id="{id}"]') != null) return null;
                   const again = [...document.querySelectorAll('#tree li[data-parent="{parent}"]')].filter((li) => Number(li.dataset.restarts) >= 1);
                   return again.length >= 1 && {} === {before} ? again[0].dataset.id : null;"##,
                children(parent)
            ),
            WAIT,
        )
        .await?;
    eprintln!("process {id} killed; its restart is {restarted}, under {parent}");
    browser
        .js(
            &format!(
                r##"document.querySelector('#tree li[data-id="{}"] .proc').click(); return true;"##,
                restarted.as_str().unwrap_or_default()
            ),
            json!([]),
        )
        .await?;
    browser
        .until(
            "its links, message and poll counts in the detail panel",
            &format!(
                r##"const t = document.getElementById("detail").textContent;
                   return t.includes("#{parent}") && /received\d+ messages/.test(t) && /polls[1-9]\d*/.test(t);"##
            ),
            WAIT,
        )
        .await?;
    browser.screenshot("2-restarted").await?;

    // 3. A partition: the third node cut off from the first two.
    cluster.set_step("phase", "a partition");
    let (a, b, c) = (&names[0], &names[1], &names[2]);
    cluster.apply(Fault::Partition { groups: vec![vec![0, 1], vec![2]] }).await?;
    let (_, took) = browser
        .until(
            "the partition in the reachability matrix",
            &format!(
                r##"const s = (() => {{ {script} }})();
                   const cut = (x) => x === "suspect" || x === "down" || x === "unknown";
                   return cut(s.cells["{a}>{c}"]) && cut(s.cells["{b}>{c}"]) && s.cells["{a}>{b}"] === "up" ? s.cells : null;"##
            ),
            WAIT,
        )
        .await?;
    eprintln!("the partition showed in the matrix {:.2} s after it was applied", took.as_secs_f64());
    browser.screenshot("3-partition").await?;
    cluster.apply(Fault::Heal).await?;
    browser
        .until(
            "every link up again",
            &format!("const s = (() => {{ {script} }})(); return Object.values(s.cells).every((c) => c === 'up' || c === 'self');"),
            WAIT,
        )
        .await?;
    Ok(())
}

/// The tier's tests run one at a time: each runs a cluster or a chaos run
/// in real time beside a browser, and two at once on two cores starve
/// each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
#[ignore = "browser tier: needs chromium and chromedriver (see the file's docs)"]
fn the_observer_shows_a_live_cluster_in_a_browser() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut spec = ClusterSpec::new(Backend::Processes, 3, 1);
    spec.http = true;
    spec.wall_limit = Some(Duration::from_secs(180));
    run(&spec, |cluster| async move { observe(cluster).await }).unwrap_or_else(|e| panic!("{e}"));
}

/// `foundation chaos --observe`: the run's timeline drawn live in the
/// browser (the plot is an image the page renders: its SVG must load),
/// then the report's verdict.
async fn chaos_page() -> anyhow::Result<()> {
    let spec = ClusterSpec::new(Backend::Processes, 3, 5);
    let binary = foundation_testkit::cluster::processes::foundation_binary(&spec).map_err(anyhow::Error::msg)?;
    let port = free_ports(1).map_err(|e| anyhow::anyhow!("{e}"))?[0];
    let addr = format!("127.0.0.1:{port}");
    // The browser first: the run lasts 10 s and its page goes with it, and
    // a browser that started after the page came up took longer than the
    // run on a loaded CI machine (the page was gone: ERR_CONNECTION_REFUSED).
    let browser = Browser::start().await?;
    let mut run = tokio::process::Command::new(binary)
        .args(["chaos", "--backend", "inprocess", "--duration", "10", "--seed", "5", "--observe", &addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let deadline = Instant::now() + WAIT;
    while client::request(&addr, None, "GET", "/", b"").await.is_err() {
        if Instant::now() >= deadline {
            browser.close().await;
            anyhow::bail!("the chaos page did not come up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result = async {
        browser.open(&format!("http://{addr}/")).await?;
        let live = r#"const s = document.getElementById("status").textContent, p = document.getElementById("plot");
            return s.startsWith("running") && /injections/.test(s) && p.complete && p.naturalWidth > 0 && s;"#;
        let (status, _) = browser.until("the run drawn live", live, WAIT).await?;
        eprintln!("live: {status}");
        // A few seconds in: some seconds plotted, perhaps a fault band.
        browser
            .until(
                "5 s of the run",
                r#"const s = document.getElementById("status").textContent; return /running: ([5-9]|1[0-9])\./.test(s);"#,
                WAIT,
            )
            .await?;
        browser.screenshot("4-chaos-live").await?;
        let verdict = r#"const v = document.getElementById("verdict").textContent, p = document.getElementById("plot");
            return v !== "" && p.complete && p.naturalWidth > 0 ? v : null;"#;
        let (verdict, _) = browser.until("the verdict", verdict, Duration::from_secs(120)).await?;
        let lines = browser.js(r#"return document.getElementById("lines").textContent;"#, json!([])).await?;
        let lines = lines.as_str().unwrap_or_default().to_owned();
        eprintln!("verdict {verdict}; the report's lines on the page:\n{lines}");
        // Safety holds whatever the load: the history is linearizable.
        anyhow::ensure!(lines.contains("linearizable   yes"), "{lines}");
        browser.screenshot("5-chaos-verdict").await?;
        anyhow::Ok(verdict)
    }
    .await;
    browser.close().await;
    let status = run.wait().await?;
    let verdict = result?;
    // The page shows the run's own verdict. A run starved of CPU beside the
    // browser can fail a liveness bound (a CI run reached 369 operations and
    // 2 injections in 8.5 s); the chaos tiers hold those bounds, this test
    // holds what the page shows.
    anyhow::ensure!(
        (verdict == "PASS") == status.success() && (verdict == "PASS" || verdict == "FAIL"),
        "the page says {verdict}, foundation chaos exited with {status}"
    );
    Ok(())
}

#[test]
#[ignore = "browser tier: needs chromium and chromedriver (see the file's docs)"]
fn a_chaos_run_is_drawn_live_in_a_browser() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Runtime::new().expect("a runtime").block_on(chaos_page()).unwrap_or_else(|e| panic!("{e}"));
}
