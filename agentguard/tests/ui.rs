//! The live page (`agentguard run --ui`), end to end: the real daemon, an
//! agent container on the real Docker engine making a connect the default
//! pack denies, and headless Chromium (Debian's `chromium`) reading the page.
//!
//! Chromium is driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages ended by NUL on fds 3 and 4),
//! not `--dump-dom`: the page's SSE stream never finishes loading, so a
//! dump either comes before the first frame or never. Over the protocol the
//! test polls the live DOM with a deadline and takes the screenshot.
//!
//! Traffic goes only to this machine: the page on 127.0.0.1 and the
//! container's connects to the docker bridge's gateway (refused in the
//! kernel before leaving the container).

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::{FromRawFd as _, RawFd};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::daemon::{cleanup, one_daemon, pack, Daemon};

const CHROMIUM: &str = "/usr/bin/chromium";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One plain HTTP/1.1 request; (status code, body).
fn http(port: u16, path: &str, headers: &str) -> (u16, String) {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the page");
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n"
    )
    .expect("send");
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (code, body)
}

/// Base64 (standard alphabet), for the screenshot Chromium sends.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A pipe whose two ends sit above fd 10 (so moving them to 3 and 4 in the
/// child cannot clobber one with the other), close-on-exec.
fn high_pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the 2-element array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let high = |fd: RawFd| {
        // SAFETY: fcntl on an fd this function just opened.
        let h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        assert!(h >= 10);
        // SAFETY: closing the original, now duplicated.
        unsafe { libc::close(fd) };
        h
    };
    (high(fds[0]), high(fds[1]))
}

/// Headless Chromium under the DevTools protocol, one page attached.
struct Browser {
    child: Child,
    to: std::fs::File,
    from: mpsc::Receiver<Value>,
    next: u64,
    session: String,
    profile: PathBuf,
}

impl Browser {
    fn start() -> Browser {
        let profile =
            std::env::temp_dir().join(format!("agentguard-ui-chromium-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let (cmd_r, cmd_w) = high_pipe();
        let (ev_r, ev_w) = high_pipe();
        let mut cmd = Command::new(CHROMIUM);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-sync",
            "--remote-debugging-pipe",
            "--window-size=1440,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: between fork and exec only dup2 (async-signal-safe) runs:
        // the protocol's fds are 3 (commands in) and 4 (replies out).
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(cmd_r, 3) < 0 || libc::dup2(ev_w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start chromium");
        // SAFETY: the child has its copies; these are ours to close or own.
        let (to, from_file) = unsafe {
            libc::close(cmd_r);
            libc::close(ev_w);
            (
                std::fs::File::from_raw_fd(cmd_w),
                std::fs::File::from_raw_fd(ev_r),
            )
        };
        let (tx, from) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from_file);
            loop {
                let mut msg = Vec::new();
                match r.read_until(0, &mut msg) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                msg.pop();
                if let Ok(v) = serde_json::from_slice::<Value>(&msg) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to,
            from,
            next: 0,
            session: String::new(),
            profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let id = target["targetId"].as_str().expect("targetId").to_owned();
        let att = b.call(
            "Target.attachToTarget",
            json!({"targetId": id, "flatten": true}),
        );
        b.session = att["sessionId"].as_str().expect("sessionId").to_owned();
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1440, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    /// One protocol command (on the page once attached); its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("json");
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Opens `url` and waits until its document has loaded.
    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        let deadline = Instant::now() + Duration::from_secs(15);
        // A navigation away from the last page starts with the old one
        // still complete: wait for the new address too.
        let want = url.split('?').next().unwrap_or(url).to_owned();
        loop {
            let st = self.eval("[document.readyState, location.href]");
            if st[0] == "complete" && st[1].as_str().is_some_and(|h| h.starts_with(&want)) {
                return;
            }
            assert!(Instant::now() < deadline, "{url} did not load: {st}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    fn text(&mut self, selector: &str) -> String {
        let sel = serde_json::to_string(selector).expect("json");
        self.eval(&format!(
            "(document.querySelector({sel}) || {{innerText: ''}}).innerText"
        ))
        .as_str()
        .unwrap_or("")
        .to_owned()
    }

    fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).expect("mkdir artefacts");
        }
        std::fs::write(path, &png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn artefacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artefacts")
}

#[test]
fn the_page_shows_an_agent_its_container_and_its_denied_connect_only_with_the_token() {
    if !common::docker_ready()
        || !common::require(
            "chromium (cargo xtask setup --docker installs it)",
            Path::new(CHROMIUM).exists(),
        )
    {
        return;
    }
    let _one = one_daemon();
    cleanup();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_args(&pack(), "ui", None, &["--ui", &addr]);

    // The token: in the log once, and root-only next to the status socket.
    let token_file = d.dir.join("ui.token");
    let meta = std::fs::metadata(&token_file).expect("ui.token written");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file)
        .expect("read ui.token")
        .trim()
        .to_owned();
    assert_eq!(token.len(), 64, "{token:?}");
    assert!(
        d.log()
            .contains(&format!("live page: http://{addr}/?token={token}")),
        "{}",
        d.log()
    );

    // An agent container whose connect to the bridge gateway the default
    // pack's agent-egress rule denies; it stays up (known now).
    let gw = common::bridge_gateway();
    let name = format!("agtest-ui-{}", std::process::id());
    let _c = common::ContainerGuard(name.clone());
    common::docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "agentguard.io/agent=codex",
        common::TEST_IMAGE,
        "sh",
        "-c",
        &format!("sleep 1; nc -w 1 {gw} 9 </dev/null; sleep 600"),
    ]);
    d.wait_alert("agent-egress", |a| {
        a["result"]["outcome"] == "denied"
            && a["event"]["identity"]["container"]["info"]["name"] == name.as_str()
    });

    // Without the token (none, wrong, another case; the stream too): 401
    // and nothing of the host in the answer.
    let wrong = "0".repeat(64);
    let upper = token.to_uppercase();
    assert_ne!(upper, token, "the token has letters to change the case of");
    for (path, headers) in [
        ("/".to_owned(), String::new()),
        (format!("/?token={wrong}"), String::new()),
        (format!("/?token={upper}"), String::new()),
        ("/events".to_owned(), String::new()),
        (format!("/events?token={upper}"), String::new()),
        (
            "/events".to_owned(),
            format!("Cookie: agentguard_ui={wrong}\r\n"),
        ),
        (
            "/events".to_owned(),
            format!("Authorization: Bearer {upper}\r\n"),
        ),
        ("/api/state".to_owned(), String::new()),
        ("/index.html".to_owned(), String::new()),
    ] {
        let (code, body) = http(port, &path, &headers);
        assert_eq!(code, 401, "{path} {headers:?}: {body}");
        for secret in [
            name.as_str(),
            "codex",
            "agent-egress",
            "<script",
            gw.as_str(),
        ] {
            assert!(!body.contains(secret), "{path}: {secret:?} in {body}");
        }
    }
    // With it, the snapshot has the alert (a check of the same data the
    // page gets, without the browser).
    let (code, body) = http(port, &format!("/api/state?token={token}"), "");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(&name) && body.contains("agent-egress"),
        "{body}"
    );

    // The browser, first without the token: the 401 text, no page.
    let mut b = Browser::start();
    let base = format!("http://{addr}/");
    b.open(&base);
    let shown = b.eval("document.documentElement.outerHTML");
    let shown = shown.as_str().unwrap_or("");
    assert!(shown.contains("401"), "{shown}");
    for secret in [name.as_str(), "codex", "agent-egress", "id=\"agents\""] {
        assert!(
            !shown.contains(secret),
            "{secret:?} shown without the token: {shown}"
        );
    }
    b.open(&format!("{base}?token={upper}"));
    let shown = b.text("body");
    assert!(shown.contains("401") && !shown.contains(&name), "{shown}");

    // With the token: the agent, its container and the denied connect,
    // within a few seconds.
    let t0 = Instant::now();
    b.open(&format!("{base}?token={token}"));
    // The token left the address bar (303 to / with a cookie).
    assert_eq!(b.eval("location.search"), json!(""));
    let deadline = Instant::now() + Duration::from_secs(10);
    let (agents, alerts) = loop {
        let agents = b.text("#agents tbody");
        let alerts = b.text("#alerts tbody");
        let ok = agents.contains("codex")
            && agents.contains(&name)
            && alerts.contains("agent-egress")
            && alerts.contains("denied")
            && alerts.contains("connect")
            && alerts.contains(&format!("{gw}:9"));
        if ok {
            break (agents, alerts);
        }
        assert!(
            Instant::now() < deadline,
            "the page did not show the agent and its denied connect within 10s:\nagents: {agents}\nalerts: {alerts}\nhealth: {}",
            b.text("#health")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "page showed the agent and the deny {:?} after opening:\n{agents}\n{alerts}",
        t0.elapsed()
    );

    // Pushed live while the page is open: another denied connect (another
    // port: a new alert, not a repeat) reaches the alert feed and the
    // agent's timeline without a reload.
    common::docker(&[
        "exec",
        &name,
        "sh",
        "-c",
        &format!("nc -w 1 {gw} 10 </dev/null; true"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alerts = b.text("#alerts tbody");
        let timeline = b.text("#timeline tbody");
        if alerts.contains(&format!("{gw}:10")) && timeline.contains(&format!("{gw}:10")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second deny was not pushed within 10s:\nalerts: {alerts}\ntimeline: {timeline}\nhealth: {}",
            b.text("#health")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The process tree has the container's shell and the nc it ran.
    let tree = b.text("#tree");
    assert!(
        tree.contains("sh -c sleep 1; nc") && tree.contains(&format!("nc -w 1 {gw} 9")),
        "{tree}"
    );
    let health = b.text("#health");
    assert!(health.contains("stream live"), "{health}");
    assert!(health.contains("events/s"), "{health}");
    let png = artefacts().join("ui.png");
    b.screenshot(&png);
    eprintln!("screenshot: {}", png.display());
    drop(b);

    d.stop();
    // The token goes with the daemon.
    assert!(!token_file.exists(), "ui.token left after stop");
    cleanup();
}

#[test]
fn a_non_loopback_address_is_refused_unless_meant() {
    if !common::privileged() {
        return;
    }
    // Refused before anything is loaded (the config check); should it
    // ever start, it is stopped here, and its socket is its own.
    let dir = std::env::temp_dir().join(format!("agentguard-ui-remote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut child = Command::new(common::daemon::BIN)
        .args(["run", "--ui", "0.0.0.0:1", "--policies"])
        .arg(pack())
        .arg("--status-socket")
        .arg(dir.join("status.sock"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).expect("log"))
        .spawn()
        .expect("agentguard run");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            cleanup();
            panic!("run --ui 0.0.0.0:1 started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
    assert!(!status.success(), "{err}");
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(!dir.join("ui.token").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
