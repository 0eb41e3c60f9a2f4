//! The live page (`agentguard run --ui ADDR`): one self-contained HTML page
//! (ui.html, compiled in) and a Server-Sent Events stream of what the daemon
//! sees, for a person watching their agents on a dev machine.
//!
//! Access: a random token made at start (OS RNG), logged once and written
//! root-only next to the status socket (`ui.token`, mode 0600). Every
//! request without it is answered 401 with no data. The browser brings it
//! as `?token=` once; the page then lives on an `HttpOnly; SameSite=Strict`
//! cookie (`Authorization: Bearer` works too, for scripts).
//!
//! Bounds (a busy host must not swamp the browser nor slow the daemon):
//! - the event path only does a relaxed load while no page is open, and a
//!   non-blocking broadcast send otherwise: never a wait;
//! - timeline events are capped per second ([`Limits::timeline_per_sec`]);
//!   the rest are counted and the page is told how many it did not get;
//! - every client reads the broadcast ring at its own pace: one that falls
//!   more than [`Limits::channel`] frames behind skips ahead and is told how
//!   many it missed; one that stops reading for [`WRITE_TIMEOUT`] is closed;
//! - at most [`MAX_CLIENTS`] streams at once; the page keeps at most N rows.

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

use super::{AlertSink, SinkStats};
use crate::alert::Alert;
use crate::event::{Detail, Event, Kind};
use crate::status::SharedStatus;

/// The page, inline CSS and JS: no external assets, works offline.
const PAGE: &str = include_str!("ui.html");

/// The cookie that carries the token after the first load.
const COOKIE: &str = "agentguard_ui";
/// Streams served at once; more get 503 (each costs a task and a cursor).
pub const MAX_CLIENTS: usize = 8;
/// A client that takes longer than this to accept one frame is closed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A comment line now and then keeps proxies and the browser from timing
/// the stream out while nothing happens.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// How much the page may be sent.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Frames a client may fall behind before it skips ahead.
    pub channel: usize,
    /// Timeline events (execs, file operations, connects) sent per second,
    /// over all agents; alerts are not capped here (grouping bounds them).
    pub timeline_per_sec: u32,
    /// Recent alerts a newly opened page is sent.
    pub alerts_kept: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            channel: 1024,
            timeline_per_sec: 200,
            alerts_kept: 200,
        }
    }
}

/// Reads `--ui`/`ui:` values: a bare port (or `localhost:PORT`) means
/// loopback; anything else must be an IP address and port (no name
/// lookups: what is bound must be what was written).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("ui address {s:?}: bad port"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| format!("ui address {s:?}: expected PORT, IP:PORT or [IPv6]:PORT"))
}

/// A non-loopback address shows every agent's actions to the network:
/// only when asked for in so many words (`ui_allow_remote`).
pub fn check_addr(addr: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || allow_remote {
        return Ok(());
    }
    Err(format!(
        "ui address {addr} is not a loopback address: the page shows what every agent does; \
         bind it to 127.0.0.1 (`--ui PORT`), or add --ui-allow-remote (ui_allow_remote: true) to mean it"
    ))
}

/// The access token: 32 random bytes from the OS, as lowercase hex.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    pub fn generate() -> std::io::Result<Token> {
        use ring::rand::SecureRandom as _;
        let mut b = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| std::io::Error::other("the OS random generator failed"))?;
        Ok(Token(b.iter().map(|x| format!("{x:02x}")).collect()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Exact, byte for byte (another case is another token), in time that
    /// does not depend on where they differ.
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Writes it to `path`, readable by its owner only. An old file is
    /// replaced; the new one is created exclusively (never through a
    /// symlink someone left there).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir)?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        writeln!(f, "{}", self.0)
    }
}

/// What a request carried that may be the token.
#[derive(Debug, Default, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    query_token: Option<&'a str>,
    cookie_token: Option<&'a str>,
    bearer: Option<&'a str>,
}

fn parse_request(head: &str) -> Request<'_> {
    let mut lines = head.split("\r\n");
    let mut r = Request::default();
    let mut first = lines.next().unwrap_or("").split_whitespace();
    r.method = first.next().unwrap_or("");
    let target = first.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    r.path = path;
    r.query_token = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .filter(|t| !t.is_empty());
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("cookie") {
            for c in value.split(';') {
                if let Some(t) = c
                    .trim()
                    .strip_prefix(COOKIE)
                    .and_then(|t| t.strip_prefix('='))
                {
                    r.cookie_token = Some(t);
                }
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            r.bearer = value.strip_prefix("Bearer ").map(str::trim);
        }
    }
    r
}

impl Request<'_> {
    /// Any one of the ways in carrying the token.
    fn authorized(&self, token: &Token) -> bool {
        [self.query_token, self.cookie_token, self.bearer]
            .into_iter()
            .flatten()
            .any(|t| token.matches(t))
    }
}

/// Timeline rate state, touched by the publisher only.
struct Window {
    second: u64,
    sent: u32,
    skipped: u64,
}

/// The publisher's side: the daemon's event path and alert fan-out call it;
/// the server's clients read from it.
pub struct Hub {
    tx: broadcast::Sender<Arc<str>>,
    /// Open streams: the event path's only cost while it is 0.
    clients: AtomicUsize,
    limits: Limits,
    window: Mutex<Window>,
    /// The last alerts, as sent, for a page opened later.
    recent: Mutex<VecDeque<Arc<str>>>,
    /// Frames serialized (tests check none are while no page is open).
    serialized: AtomicU64,
    /// Timeline events left out by the per-second cap.
    capped: AtomicU64,
    stats: Arc<SinkStats>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn frame(name: &str, json: &str) -> Arc<str> {
    Arc::from(format!("event: {name}\ndata: {json}\n\n"))
}

/// One timeline row: what the page draws for an event.
#[derive(Serialize)]
struct Row<'a> {
    ms: u64,
    kind: &'static str,
    pid: u32,
    ppid: u32,
    comm: &'a str,
    agent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    what: String,
    ret: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    killed: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    denied: bool,
}

/// The object of an event in a few words (argv, path, destination).
fn what(ev: &Event) -> String {
    let mut s = match &ev.detail {
        Detail::Exec(x) if !x.argv.is_empty() => x.argv.join(" "),
        Detail::Exec(x) => x.file.path.clone(),
        Detail::File(f) => f.file.path.clone(),
        Detail::Rename(r) => format!("{} -> {}", r.from.path, r.to.path),
        Detail::Net(n) => match (&n.unix_path, &n.addr) {
            (Some(p), _) => p.clone(),
            (None, Some(a)) if a.contains(':') => format!("[{a}]:{}", n.port.unwrap_or(0)),
            (None, Some(a)) => format!("{a}:{}", n.port.unwrap_or(0)),
            (None, None) => String::new(),
        },
        Detail::Dns(d) => d.name.clone().unwrap_or_default(),
        Detail::Fork(f) => format!("child {}", f.child_pid),
        Detail::Exit(x) => match (x.code, x.signal) {
            (_, Some(sig)) => format!("signal {sig}"),
            (Some(c), None) => format!("code {c}"),
            _ => String::new(),
        },
        _ => String::new(),
    };
    // The page shows one line; argv can be 4 KiB.
    if s.len() > 240 {
        let mut cut = 240;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Kinds the timeline shows (fork and exit feed the process tree).
fn timeline_kind(k: Kind) -> bool {
    matches!(
        k,
        Kind::Exec
            | Kind::Fork
            | Kind::Exit
            | Kind::Open
            | Kind::Unlink
            | Kind::Rmdir
            | Kind::Rename
            | Kind::Truncate
            | Kind::Connect
            | Kind::Send
            | Kind::Dns
    )
}

fn row<'a>(ev: &'a Event, agent: &'a crate::identity::model::Agent) -> Row<'a> {
    let info = ev
        .identity
        .as_ref()
        .and_then(|i| i.container.as_ref())
        .and_then(|c| c.info.as_deref());
    Row {
        ms: now_ms(),
        kind: ev.kind.as_str(),
        pid: ev.pid,
        ppid: ev.ppid,
        comm: &ev.comm,
        agent: &agent.name,
        session: agent.session.as_deref(),
        container: info.map(|c| c.name.as_str()).filter(|n| !n.is_empty()),
        image: info.map(|c| c.image.as_str()).filter(|n| !n.is_empty()),
        what: what(ev),
        ret: ev.ret,
        error: ev.error.as_deref(),
        killed: ev.kernel_action.is_some_and(|k| k.killed),
        denied: ev.kernel_action.is_some_and(|k| k.denied),
    }
}

#[derive(Serialize)]
struct AlertRow<'a> {
    time: &'a str,
    policy: &'a str,
    rule: &'a str,
    action: &'static str,
    severity: &'static str,
    mode: crate::alert::Mode,
    message: &'a str,
    outcome: crate::alert::Outcome,
    by: crate::alert::Enforcer,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ancestry: Option<&'a [crate::identity::model::Ancestor]>,
    #[serde(flatten)]
    ev: Row<'a>,
}

impl Hub {
    pub fn new(limits: Limits) -> Hub {
        let (tx, _) = broadcast::channel(limits.channel.max(1));
        Hub {
            tx,
            clients: AtomicUsize::new(0),
            limits,
            window: Mutex::new(Window {
                second: 0,
                sent: 0,
                skipped: 0,
            }),
            recent: Mutex::new(VecDeque::new()),
            serialized: AtomicU64::new(0),
            capped: AtomicU64::new(0),
            stats: Arc::default(),
        }
    }

    /// Pages open now.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Frames serialized so far.
    pub fn serialized(&self) -> u64 {
        self.serialized.load(Ordering::Relaxed)
    }

    /// Timeline events the per-second cap kept from the page.
    pub fn capped(&self) -> u64 {
        self.capped.load(Ordering::Relaxed)
    }

    /// Never waits: a broadcast send overwrites the oldest frame when the
    /// ring is full (readers behind it are told they lagged).
    fn publish(&self, f: Arc<str>) {
        let _ = self.tx.send(f);
    }

    /// One event from the pipeline (after identity). Nothing is built
    /// unless a page is open, the event is an agent's and the second's
    /// budget is not spent.
    pub fn event(&self, ev: &Event) {
        if self.clients.load(Ordering::Relaxed) == 0 || !timeline_kind(ev.kind) {
            return;
        }
        let Some(agent) = ev.identity.as_ref().and_then(|i| i.agent.as_deref()) else {
            return;
        };
        let second = now_ms() / 1000;
        {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            if w.second != second {
                self.roll(&mut w, second);
            }
            if w.sent >= self.limits.timeline_per_sec {
                w.skipped += 1;
                self.capped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            w.sent += 1;
        }
        if let Ok(json) = serde_json::to_string(&row(ev, agent)) {
            self.serialized.fetch_add(1, Ordering::Relaxed);
            self.publish(frame("ev", &json));
        }
    }

    /// A new second: the page hears how many rows the last one left out.
    fn roll(&self, w: &mut Window, second: u64) {
        if w.skipped > 0 {
            self.serialized.fetch_add(1, Ordering::Relaxed);
            self.publish(frame(
                "capped",
                &format!(
                    "{{\"skipped\":{},\"per_sec\":{}}}",
                    w.skipped, self.limits.timeline_per_sec
                ),
            ));
        }
        *w = Window {
            second,
            sent: 0,
            skipped: 0,
        };
    }

    /// Sends a pending "skipped" notice when events stopped coming.
    fn tick(&self) {
        let second = now_ms() / 1000;
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.second != second {
            self.roll(&mut w, second);
        }
    }

    /// One alert as the outputs ship it. Kept (the last
    /// [`Limits::alerts_kept`]) so a page opened later shows recent denies;
    /// alerts are few (grouped), so this costs little with no page open.
    pub fn alert(&self, a: &Alert) {
        let agent = a.event.identity.as_ref().and_then(|i| i.agent.as_deref());
        let placeholder;
        let ag = match agent {
            Some(ag) => ag,
            None => {
                placeholder = crate::identity::model::Agent {
                    name: String::new(),
                    session: None,
                    source: crate::identity::model::AgentSource::Label,
                    pid: None,
                    runner: None,
                };
                &placeholder
            }
        };
        let d = &a.decision;
        let r = AlertRow {
            time: &a.time,
            policy: &d.policy,
            rule: &d.rule,
            action: d.action.as_str(),
            severity: d.severity.as_str(),
            mode: d.mode,
            message: &d.message,
            outcome: a.result.outcome,
            by: a.result.by,
            reason: a.result.reason.as_deref(),
            count: a.group.as_ref().map(|g| g.count),
            ancestry: a
                .event
                .identity
                .as_ref()
                .map(|i| &*i.ancestry)
                .filter(|x| !x.is_empty()),
            ev: row(&a.event, ag),
        };
        let Ok(json) = serde_json::to_string(&r) else {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.serialized.fetch_add(1, Ordering::Relaxed);
        let f = frame("alert", &json);
        {
            let mut q = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= self.limits.alerts_kept {
                q.pop_front();
            }
            q.push_back(Arc::clone(&f));
        }
        self.stats.written.fetch_add(1, Ordering::Relaxed);
        if self.clients() > 0 {
            self.publish(f);
        }
    }

    fn recent(&self) -> Vec<Arc<str>> {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// A client's cursor; counted as open until the guard drops.
    fn subscribe(self: &Arc<Self>) -> (broadcast::Receiver<Arc<str>>, ClientGuard) {
        self.clients.fetch_add(1, Ordering::Relaxed);
        (self.tx.subscribe(), ClientGuard(Arc::clone(self)))
    }
}

struct ClientGuard(Arc<Hub>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The next frame for a client: a lag becomes a frame saying how many it
/// missed; None when the hub is gone.
async fn next_frame(rx: &mut broadcast::Receiver<Arc<str>>) -> Option<Arc<str>> {
    match rx.recv().await {
        Ok(f) => Some(f),
        Err(broadcast::error::RecvError::Lagged(n)) => {
            Some(frame("lagged", &format!("{{\"missed\":{n}}}")))
        }
        Err(broadcast::error::RecvError::Closed) => None,
    }
}

/// The alerts' way to the hub, as one more sink (its counters show in
/// metrics as sink `ui`).
pub(super) struct UiAlerts(Arc<Hub>);

impl UiAlerts {
    pub(super) fn new(hub: Arc<Hub>) -> UiAlerts {
        UiAlerts(hub)
    }
}

impl AlertSink for UiAlerts {
    fn name(&self) -> &str {
        "ui"
    }
    fn send(&self, alert: &Alert, _json: &Arc<[u8]>) -> bool {
        // Its own shape: the page needs the same fields whatever format
        // the other sinks ship.
        self.0.alert(alert);
        true
    }
    fn stats(&self) -> Arc<SinkStats> {
        Arc::clone(&self.0.stats)
    }
    fn close(self: Box<Self>) {}
}

/// Health: events per second from the status counters, refreshed by the
/// server's ticker.
#[derive(Default)]
struct Health {
    last: Option<(Instant, u64)>,
    eps: f64,
}

/// The status snapshot with the events rate, as the page wants it.
fn status_json(status: &SharedStatus, eps: f64, hub: &Hub) -> Option<String> {
    let s = match status.read() {
        Ok(s) => serde_json::to_value(&*s),
        Err(p) => serde_json::to_value(&*p.into_inner()),
    }
    .ok()?;
    serde_json::to_string(&serde_json::json!({
        "eps": (eps * 10.0).round() / 10.0,
        "clients": hub.clients(),
        "capped": hub.capped(),
        "limits": {
            "timeline_per_sec": hub.limits.timeline_per_sec,
            "channel": hub.limits.channel,
        },
        "status": s,
    }))
    .ok()
}

/// The running page; stops, and removes the token file, when dropped.
pub struct UiServer {
    addr: SocketAddr,
    token_path: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl UiServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for UiServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.token_path);
    }
}

/// The daemon's one call: if the config asks for the page, makes the token,
/// binds, hooks the hub into `outputs` and serves. The token file goes
/// next to the status socket.
pub async fn start(
    cfg: &crate::config::Config,
    status: SharedStatus,
    outputs: &mut super::Outputs,
) -> anyhow::Result<Option<UiServer>> {
    use anyhow::Context as _;
    let Some(addr) = cfg.ui else {
        return Ok(None);
    };
    check_addr(addr.0, cfg.ui_allow_remote).map_err(anyhow::Error::msg)?;
    let token = Token::generate().context("making the ui token")?;
    let token_path = cfg.status_socket.with_file_name("ui.token");
    token
        .write(&token_path)
        .with_context(|| format!("writing the ui token to {}", token_path.display()))?;
    let hub = Arc::new(Hub::new(Limits::default()));
    let server = match serve(
        addr.0,
        token.clone(),
        Arc::clone(&hub),
        status,
        token_path.clone(),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            // No page, no token left lying about.
            let _ = std::fs::remove_file(&token_path);
            return Err(anyhow::Error::new(e).context(format!("serving the ui on {}", addr.0)));
        }
    };
    outputs.set_ui(hub);
    tracing::info!(
        "live page: http://{}/?token={} (token also in {}, root only)",
        server.addr,
        token.as_str(),
        server.token_path.display()
    );
    Ok(Some(server))
}

/// Binds `addr` and serves the page and its stream.
pub async fn serve(
    addr: SocketAddr,
    token: Token,
    hub: Arc<Hub>,
    status: SharedStatus,
    token_path: PathBuf,
) -> std::io::Result<UiServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let health = Arc::new(Mutex::new(Health::default()));
    let ticker = {
        let (hub, status, health) = (Arc::clone(&hub), status.clone(), Arc::clone(&health));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                let events = status
                    .read()
                    .map(|s| s.counters.get("events").copied().unwrap_or(0))
                    .unwrap_or(0);
                let now = Instant::now();
                let eps = {
                    let mut h = health.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some((t, n)) = h.last {
                        let dt = now.duration_since(t).as_secs_f64();
                        if dt > 0.0 {
                            h.eps = events.saturating_sub(n) as f64 / dt;
                        }
                    }
                    h.last = Some((now, events));
                    h.eps
                };
                hub.tick();
                if hub.clients() > 0 {
                    if let Some(j) = status_json(&status, eps, &hub) {
                        hub.publish(frame("status", &j));
                    }
                }
            }
        })
    };
    let acceptor = tokio::spawn(async move {
        loop {
            let (conn, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("ui: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (hub, status, health, token) = (
                Arc::clone(&hub),
                status.clone(),
                Arc::clone(&health),
                token.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = handle(conn, &token, &hub, &status, &health).await {
                    tracing::debug!("ui: {e}");
                }
            });
        }
    });
    Ok(UiServer {
        addr,
        token_path,
        tasks: vec![ticker, acceptor],
    })
}

/// Headers every answer carries: nothing cached, nothing framed, nothing
/// loaded from elsewhere (the page's own inline code only).
const SECURITY: &str = "Cache-Control: no-store\r\n\
X-Content-Type-Options: nosniff\r\n\
Referrer-Policy: no-referrer\r\n\
X-Frame-Options: DENY\r\n\
Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'\r\n";

async fn respond(
    conn: &mut TcpStream,
    status: &str,
    ctype: &str,
    extra: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n{SECURITY}{extra}\r\n",
        body.len()
    );
    if !head_only {
        resp.push_str(body);
    }
    tokio::time::timeout(WRITE_TIMEOUT, async {
        conn.write_all(resp.as_bytes()).await?;
        conn.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
}

async fn handle(
    mut conn: TcpStream,
    token: &Token,
    hub: &Arc<Hub>,
    status: &SharedStatus,
    health: &Mutex<Health>,
) -> std::io::Result<()> {
    let Some(head) = super::metrics::read_head(&mut conn).await? else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&head);
    let req = parse_request(&head);
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        return respond(
            &mut conn,
            "405 Method Not Allowed",
            "text/plain",
            "",
            "method not allowed\n",
            false,
        )
        .await;
    }
    if !req.authorized(token) {
        // Nothing about the host, not even the page's code.
        return respond(
            &mut conn,
            "401 Unauthorized",
            "text/plain; charset=utf-8",
            "",
            "401: the live page needs its token: open the URL the daemon logged at start (http://ADDR/?token=...); the token is also in ui.token next to the status socket\n",
            head_only,
        )
        .await;
    }
    let cookie = format!(
        "Set-Cookie: {COOKIE}={}; HttpOnly; SameSite=Strict; Path=/\r\n",
        token.as_str()
    );
    match req.path {
        // The token leaves the address bar (and history) at once; the
        // cookie carries it from here.
        "/" if req.query_token.is_some() => {
            respond(
                &mut conn,
                "303 See Other",
                "text/plain",
                &format!("{cookie}Location: /\r\n"),
                "",
                head_only,
            )
            .await
        }
        "/" | "/index.html" => {
            respond(
                &mut conn,
                "200 OK",
                "text/html; charset=utf-8",
                &cookie,
                PAGE,
                head_only,
            )
            .await
        }
        "/api/state" => {
            let eps = health.lock().map_or(0.0, |h| h.eps);
            let body = serde_json::json!({
                "status": status_json(status, eps, hub)
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok()),
                "alerts": hub.recent().iter().filter_map(|f| {
                    f.split_once("data: ").and_then(|(_, j)| serde_json::from_str::<serde_json::Value>(j.trim_end()).ok())
                }).collect::<Vec<_>>(),
            });
            respond(
                &mut conn,
                "200 OK",
                "application/json",
                "",
                &body.to_string(),
                head_only,
            )
            .await
        }
        "/events" if !head_only => stream(conn, hub, status, health).await,
        _ => {
            respond(
                &mut conn,
                "404 Not Found",
                "text/plain",
                "",
                "not found\n",
                head_only,
            )
            .await
        }
    }
}

/// Writes one frame, or gives up on a client that does not read.
async fn send<W: tokio::io::AsyncWrite + Unpin>(conn: &mut W, f: &str) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_TIMEOUT, conn.write_all(f.as_bytes()))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "client not reading"))?
}

/// The SSE stream: the status and recent alerts first, then live frames.
async fn stream(
    mut conn: TcpStream,
    hub: &Arc<Hub>,
    status: &SharedStatus,
    health: &Mutex<Health>,
) -> std::io::Result<()> {
    if hub.clients() >= MAX_CLIENTS {
        return respond(
            &mut conn,
            "503 Service Unavailable",
            "text/plain",
            "",
            "too many pages open\n",
            false,
        )
        .await;
    }
    // Subscribed before the snapshot is taken: nothing falls between.
    let (mut rx, _guard) = hub.subscribe();
    let (mut rd, mut conn) = conn.split();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n{SECURITY}\r\n"
    );
    send(&mut conn, &head).await?;
    let eps = health.lock().map_or(0.0, |h| h.eps);
    if let Some(j) = status_json(status, eps, hub) {
        send(&mut conn, &frame("status", &j)).await?;
    }
    for f in hub.recent() {
        send(&mut conn, &f).await?;
    }
    send(&mut conn, &frame("ready", "{}")).await?;
    let mut sink = [0u8; 256];
    loop {
        tokio::select! {
            f = next_frame(&mut rx) => match f {
                Some(f) => send(&mut conn, &f).await?,
                None => return Ok(()),
            },
            // The browser sends nothing more: a read is how a closed tab
            // is noticed while the host is quiet.
            r = rd.read(&mut sink) => {
                if matches!(r, Ok(0) | Err(_)) {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep(KEEPALIVE) => send(&mut conn, ": keepalive\n\n").await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token("0123456789abcdef".into())
    }

    #[test]
    fn a_bare_port_is_loopback_and_other_addresses_must_be_meant() {
        assert_eq!(parse_addr("8080"), Ok("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(
            parse_addr("localhost:9"),
            Ok("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(parse_addr("[::1]:9"), Ok("[::1]:9".parse().unwrap()));
        assert!(parse_addr("example.org:80").is_err());
        assert!(parse_addr("99999").is_err());
        for ok in ["127.0.0.1:1", "127.9.9.9:1", "[::1]:1"] {
            assert!(check_addr(ok.parse().unwrap(), false).is_ok(), "{ok}");
        }
        for remote in ["0.0.0.0:1", "192.168.1.2:1", "[::]:1"] {
            let e = check_addr(remote.parse().unwrap(), false).expect_err(remote);
            assert!(e.contains("ui_allow_remote"), "{e}");
            assert!(check_addr(remote.parse().unwrap(), true).is_ok());
        }
    }

    #[test]
    fn the_token_is_random_exact_and_case_sensitive() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_eq!(a.as_str().len(), 64);
        assert_ne!(a.as_str(), b.as_str());
        assert!(a.matches(a.as_str()));
        assert!(!a.matches(b.as_str()));
        assert!(!a.matches(&a.as_str().to_uppercase()));
        assert!(!a.matches(&a.as_str()[1..]));
        assert!(!a.matches(""));
        assert!(!format!("{a:?}").contains(a.as_str()), "Debug leaks it");
    }

    #[test]
    fn requests_are_authorized_by_query_cookie_or_bearer_only() {
        let t = token();
        let ok = |head: &str| parse_request(head).authorized(&t);
        assert!(ok(
            "GET /?token=0123456789abcdef HTTP/1.1\r\nHost: x\r\n\r\n"
        ));
        assert!(ok(
            "GET /events HTTP/1.1\r\ncookie: a=b; agentguard_ui=0123456789abcdef\r\n\r\n"
        ));
        assert!(ok(
            "GET /events HTTP/1.1\r\nAuthorization: Bearer 0123456789abcdef\r\n\r\n"
        ));
        for bad in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET /events HTTP/1.1\r\n\r\n",
            "GET /?token= HTTP/1.1\r\n\r\n",
            "GET /?token=0123456789ABCDEF HTTP/1.1\r\n\r\n",
            "GET /?token=0123456789abcde HTTP/1.1\r\n\r\n",
            "GET /?xtoken=0123456789abcdef HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nCookie: agentguard_uix=0123456789abcdef\r\n\r\n",
            "GET / HTTP/1.1\r\nCookie: agentguard_ui=wrong\r\n\r\n",
            "GET / HTTP/1.1\r\nAuthorization: Basic 0123456789abcdef\r\n\r\n",
        ] {
            assert!(!ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_token_file_is_owner_only_and_replaced() {
        let dir = std::env::temp_dir().join(format!("agentguard-ui-tok-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/ui.token");
        let t = token();
        t.write(&path).unwrap();
        t.write(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), t.as_str());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn agent_event(n: u32) -> Event {
        let mut ev = Event::daemon(
            Kind::Exec,
            100 + n,
            "sh",
            0,
            Detail::Exec(crate::event::ExecDetail {
                file: crate::event::PathInfo {
                    path: "/bin/sh".into(),
                    raw: None,
                    resolution: crate::event::Resolution::Absolute,
                    truncated: false,
                },
                argv: vec!["sh".into(), format!("-c{n}")],
                argv_truncated: false,
                flags: 0,
                binary: None,
                stdin_pipe: None,
                stdout_pipe: None,
                stdin_from: None,
            }),
        );
        let mut id = crate::identity::model::Identity::host();
        id.agent = Some(Arc::new(crate::identity::model::Agent {
            name: "claude".into(),
            session: Some("s1".into()),
            source: crate::identity::model::AgentSource::Ancestry,
            pid: Some(1),
            runner: None,
        }));
        ev.identity = Some(id);
        ev
    }

    #[test]
    fn nothing_is_serialized_while_no_page_is_open() {
        let hub = Arc::new(Hub::new(Limits::default()));
        for n in 0..1000 {
            hub.event(&agent_event(n));
        }
        assert_eq!(hub.serialized(), 0);
        let (_rx, guard) = hub.subscribe();
        hub.event(&agent_event(1));
        assert_eq!(hub.serialized(), 1);
        drop(guard);
        hub.event(&agent_event(2));
        assert_eq!(hub.serialized(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_client_never_blocks_the_publisher_and_hears_what_it_missed() {
        let hub = Arc::new(Hub::new(Limits {
            channel: 8,
            timeline_per_sec: 1_000_000,
            alerts_kept: 4,
        }));
        let (mut slow, _g1) = hub.subscribe();
        let (mut fast, _g2) = hub.subscribe();
        // The slow client reads nothing while 1000 events go out: the
        // publisher must not wait for it (this would hang if it did).
        let t = Instant::now();
        for n in 0..1000 {
            hub.event(&agent_event(n));
            if n % 100 == 0 {
                // The fast one keeps up.
                while let Ok(f) = fast.try_recv() {
                    assert!(f.starts_with("event: ev\n"));
                }
            }
        }
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let first = next_frame(&mut slow).await.unwrap();
        assert!(first.starts_with("event: lagged\n"), "{first}");
        let missed: u64 = first
            .split("\"missed\":")
            .nth(1)
            .and_then(|s| s.trim_end().trim_end_matches('}').parse().ok())
            .unwrap();
        assert_eq!(missed, 1000 - 8);
        // Then the newest frames it still can have, in order.
        let next = next_frame(&mut slow).await.unwrap();
        assert!(next.contains("-c992"), "{next}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn timeline_events_are_capped_per_second_and_the_page_is_told() {
        let hub = Arc::new(Hub::new(Limits {
            channel: 4096,
            timeline_per_sec: 50,
            alerts_kept: 4,
        }));
        let (mut rx, _g) = hub.subscribe();
        // Start at the beginning of a second so all 500 fall within it.
        while now_ms() % 1000 > 500 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for n in 0..500 {
            hub.event(&agent_event(n));
        }
        let mut evs = 0;
        while let Ok(f) = rx.try_recv() {
            assert!(f.starts_with("event: ev\n"));
            evs += 1;
        }
        assert_eq!(evs, 50);
        assert_eq!(hub.capped(), 450);
        // The next second's first tick says how many were left out.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        hub.tick();
        let f = rx.try_recv().unwrap();
        assert!(f.starts_with("event: capped\n"), "{f}");
        assert!(f.contains("\"skipped\":450"), "{f}");
    }

    /// A plain request to the server; the answer up to `until` (or EOF).
    async fn get(addr: SocketAddr, head: &str, until: &str) -> String {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let read = async {
            loop {
                let n = c.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&out).contains(until) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_server_says_401_without_the_token_and_streams_with_it() {
        let dir = std::env::temp_dir().join(format!("agentguard-ui-srv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = crate::config::Config {
            status_socket: dir.join("status.sock"),
            ..Default::default()
        };
        // A port someone else holds: refused, and no token left behind.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        cfg.ui = Some(crate::config::UiAddr(taken.local_addr().unwrap()));
        let status = crate::status::Status::new().shared();
        let mut outputs = super::super::Outputs::new(super::super::Format::Native);
        assert!(start(&cfg, status.clone(), &mut outputs).await.is_err());
        assert!(!dir.join("ui.token").exists());
        drop(taken);

        cfg.ui = Some(crate::config::UiAddr("127.0.0.1:0".parse().unwrap()));
        let server = start(&cfg, status, &mut outputs).await.unwrap().unwrap();
        let addr = server.local_addr();
        let token = std::fs::read_to_string(dir.join("ui.token")).unwrap();
        let token = token.trim();
        for head in [
            "GET / HTTP/1.1\r\n\r\n".to_owned(),
            "GET /events HTTP/1.1\r\n\r\n".to_owned(),
            format!("GET /?token={} HTTP/1.1\r\n\r\n", token.to_uppercase()),
            format!("GET /events HTTP/1.1\r\nCookie: {COOKIE}=x{token}\r\n\r\n"),
        ] {
            let r = get(addr, &head, "\r\n\r\n").await;
            assert!(r.starts_with("HTTP/1.1 401 "), "{head:?}: {r}");
            assert!(!r.contains("<script"), "{r}");
        }
        let r = get(
            addr,
            &format!("GET /?token={token} HTTP/1.1\r\n\r\n"),
            "\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 303 "), "{r}");
        assert!(r.contains("HttpOnly; SameSite=Strict"), "{r}");
        let r = get(
            addr,
            &format!("GET / HTTP/1.1\r\nCookie: {COOKIE}={token}\r\n\r\n"),
            "</html>",
        )
        .await;
        assert!(
            r.starts_with("HTTP/1.1 200 ") && r.contains("new EventSource"),
            "{r}"
        );
        let r = get(
            addr,
            &format!("GET /events HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n"),
            "event: ready",
        )
        .await;
        assert!(
            r.contains("text/event-stream") && r.contains("event: status\ndata: {"),
            "{r}"
        );
        assert!(r.contains("event: ready"), "{r}");
        drop(server);
        assert!(
            !dir.join("ui.token").exists(),
            "token left after the server stopped"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
