//! Outputs, metrics, config and status against real sockets, servers and
//! files (no root needed). Timeouts here only guard against deadlocks; no
//! assertion depends on how fast anything is.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentguard::alert::{Action, ActionResult, Alert, Decision, Mode, Severity};
use agentguard::config::Config;
use agentguard::event::Kind;
use agentguard::outputs::jsonl::FileConfig;
use agentguard::outputs::metrics::{self, Metrics};
use agentguard::outputs::syslog::{Facility, SyslogConfig, Target};
use agentguard::outputs::webhook::{Url, WebhookConfig};
use agentguard::outputs::{Format, Outputs, SinkConfig};
use agentguard::status::{self, AgentStatus, Status};

const GUARD: Duration = Duration::from_secs(60);

fn alert(rule: &str, severity: Severity) -> Alert {
    Alert {
        time: "2025-06-01T12:00:00.123456789Z".into(),
        host: "test-node".into(),
        decision: Decision {
            policy: "files".into(),
            rule: rule.into(),
            action: Action::Alert,
            kill_scope: Default::default(),
            taint: false,
            severity,
            message: format!("{rule}: cat opened /etc/shadow"),
            mode: Mode::Enforce,
        },
        result: ActionResult::alerted(),
        // From JSON, so fields added to Event later need no change here.
        event: serde_json::from_value(serde_json::json!({
            "ts_ns": 123, "kind": "open", "syscall": "openat",
            "pid": 4242, "tid": 4242, "ppid": 1, "uid": 0, "gid": 0,
            "comm": "cat", "cgroup_id": 1, "ret": 3,
            "file": {"path": "/etc/shadow", "resolution": "absolute", "flags": 0, "access": "read"}
        }))
        .expect("event JSON"),
        actor: None,
        group: None,
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("agentguard-outputs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

// ---------------------------------------------------------------- metrics

/// A metrics endpoint on a free loopback port, served on `rt`.
fn serve_metrics(rt: &tokio::runtime::Runtime) -> (Arc<Metrics>, metrics::MetricsServer) {
    let m = Arc::new(Metrics::new().expect("metrics"));
    let server = rt
        .block_on(metrics::serve(
            Arc::clone(&m),
            "127.0.0.1:0".parse().expect("addr"),
        ))
        .expect("serve");
    (m, server)
}

/// GET /metrics over a plain TCP connection; returns the body.
fn scrape(addr: std::net::SocketAddr) -> String {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(GUARD)).expect("timeout");
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut resp = String::new();
    c.read_to_string(&mut resp).expect("response");
    let (head, body) = resp.split_once("\r\n\r\n").expect("head/body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// The text format's samples: "name{labels}" -> value.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect("sample line");
        m.insert(key.to_string(), value.parse::<f64>().expect("number"));
    }
    m
}

#[test]
fn metrics_endpoint_serves_moving_counters() {
    let rt = runtime();
    let (m, server) = serve_metrics(&rt);
    let addr = server.local_addr();

    let before = parse_exposition(&scrape(addr));
    assert_eq!(before.get("agentguard_events_lost_total"), Some(&0.0));
    assert_eq!(
        before.get("agentguard_policy_evaluations_total"),
        Some(&0.0)
    );
    assert_eq!(
        before.get(&format!(
            "agentguard_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        Some(&1.0)
    );

    // A real sink whose drops the endpoint must show.
    let mut outputs = Outputs::new(Format::Native);
    let dir = temp_dir("metrics");
    outputs.add(Box::new(
        agentguard::outputs::jsonl::JsonlSink::file(
            "file".into(),
            &FileConfig {
                path: dir.join("a.jsonl"),
                max_bytes: 0,
                keep: 0,
                queue: Some(1),
            },
        )
        .expect("file sink"),
    ));
    m.watch_sinks(outputs.sink_stats());

    for _ in 0..3 {
        m.event(Kind::Exec);
    }
    m.event(Kind::Connect);
    m.evaluation(Duration::from_micros(30));
    let a = alert("shadow-read", Severity::High);
    m.alert(&a);
    m.set_events_lost(11);
    m.containers_watched.set(2);
    m.policy_reloads.inc();
    m.policy_reload_failures.inc();
    for _ in 0..200 {
        outputs.send(&a);
    }
    let drops = outputs.sink_stats()[0].1.dropped();

    let after = parse_exposition(&scrape(addr));
    let get = |k: &str| *after.get(k).unwrap_or_else(|| panic!("{k} missing"));
    assert_eq!(get("agentguard_events_total{kind=\"exec\"}"), 3.0);
    assert_eq!(get("agentguard_events_total{kind=\"connect\"}"), 1.0);
    assert_eq!(get("agentguard_policy_evaluations_total"), 1.0);
    assert_eq!(get("agentguard_policy_evaluation_seconds_count"), 1.0);
    assert_eq!(
        get("agentguard_alerts_total{action=\"alert\",rule=\"shadow-read\",severity=\"high\"}"),
        1.0
    );
    assert_eq!(
        get("agentguard_enforcement_actions_total{action=\"alert\",result=\"alerted\"}"),
        1.0
    );
    assert_eq!(get("agentguard_events_lost_total"), 11.0);
    assert_eq!(get("agentguard_containers_watched"), 2.0);
    assert_eq!(get("agentguard_agents_watched"), 0.0);
    assert_eq!(get("agentguard_policy_reloads_total"), 1.0);
    assert_eq!(get("agentguard_policy_reload_failures_total"), 1.0);
    // Counted drops can only have grown since read; the scrape saw at least those.
    assert!(get("agentguard_alert_sink_drops_total{sink=\"file\"}") >= drops as f64);
    // No unbounded labels.
    assert!(!after
        .keys()
        .any(|k| k.contains("pid=") || k.contains("path=")));

    // Other paths are not metrics.
    let mut c = TcpStream::connect(addr).expect("connect");
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
    let mut resp = String::new();
    c.read_to_string(&mut resp).expect("read");
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");

    outputs.close();
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- webhook

struct Request {
    head: String,
    body: Vec<u8>,
}

/// A tiny HTTP server: answers each request with the next status of
/// `statuses` (then 200) and hands the request to the test.
fn http_server(statuses: Vec<u16>) -> (std::net::SocketAddr, mpsc::Receiver<Request>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            conn.set_read_timeout(Some(GUARD)).expect("timeout");
            let mut r = BufReader::new(conn);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            let status = statuses.next().unwrap_or(200);
            let mut conn = r.into_inner();
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if tx.send(Request { head, body }).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

#[test]
fn webhook_posts_batches_with_the_bearer_token_and_retries() {
    let dir = temp_dir("webhook");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-token\n").expect("token");
    // The first POST gets a 503: the same batch must come again.
    let (addr, rx) = http_server(vec![503]);
    let mut cfg = WebhookConfig::new(Url::try_from(format!("http://{addr}/hook")).expect("url"));
    cfg.token_file = Some(token);
    cfg.batch_size = 3;
    // Batches close by size only: the test does not depend on timing.
    cfg.batch_delay_ms = 3_600_000;
    cfg.backoff_ms = 10;
    let outputs =
        Outputs::from_config(&[SinkConfig::Webhook(cfg)], Format::Native).expect("outputs");
    for i in 0..3 {
        assert_eq!(outputs.send(&alert(&format!("r{i}"), Severity::Medium)), 1);
    }
    for attempt in 0..2 {
        let req = rx.recv_timeout(GUARD).expect("a POST");
        assert!(req.head.starts_with("POST /hook HTTP/1.1"), "{}", req.head);
        let lower = req.head.to_ascii_lowercase();
        assert!(
            lower.contains("authorization: bearer s3cret-token"),
            "{}",
            req.head
        );
        assert!(
            lower.contains("content-type: application/json"),
            "{}",
            req.head
        );
        let v: serde_json::Value = serde_json::from_slice(&req.body).expect("json body");
        let rules: Vec<&str> = v
            .as_array()
            .expect("array")
            .iter()
            .map(|a| a["decision"]["rule"].as_str().expect("rule"))
            .collect();
        assert_eq!(rules, ["r0", "r1", "r2"], "attempt {attempt}");
    }
    let stats = outputs.sink_stats()[0].1.clone();
    outputs.close();
    assert_eq!(stats.written(), 3);
    assert_eq!(stats.write_errors(), 1);
    assert_eq!(stats.dropped(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn webhook_to_a_down_server_never_stalls_the_caller() {
    // A port that was just free: nothing listens there.
    let addr = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mut cfg = WebhookConfig::new(Url::try_from(format!("http://{addr}/")).expect("url"));
    cfg.batch_size = 10;
    cfg.batch_delay_ms = 10;
    cfg.backoff_ms = 1000;
    cfg.max_backoff_ms = 1000;
    // The first batch is retried far longer than the test runs, so every
    // drop before close is the queue refusing at once.
    cfg.max_retries = 1000;
    cfg.queue = Some(64);
    let outputs =
        Outputs::from_config(&[SinkConfig::Webhook(cfg)], Format::Native).expect("outputs");
    let stats = outputs.sink_stats()[0].1.clone();
    let a = alert("r", Severity::Low);
    // The sends run on another thread so a stall would show as a guard
    // timeout instead of a hung test.
    let (done_tx, done_rx) = mpsc::channel();
    let sender = std::thread::spawn(move || {
        let accepted: usize = (0..5000).map(|_| outputs.send(&a)).sum();
        done_tx.send(()).expect("done");
        (outputs, accepted)
    });
    done_rx.recv_timeout(GUARD).expect("5000 sends returned");
    let (outputs, accepted) = sender.join().expect("sender");
    assert!(accepted < 5000, "a dead server cannot take 5000 alerts");
    assert_eq!(stats.dropped() as usize, 5000 - accepted);
    // Closing gives up on the dead server at once; everything ends up
    // counted as dropped, nothing as written.
    let (closed_tx, closed_rx) = mpsc::channel();
    std::thread::spawn(move || {
        outputs.close();
        let _ = closed_tx.send(());
    });
    closed_rx.recv_timeout(GUARD).expect("close returned");
    assert_eq!(stats.written(), 0);
    assert_eq!(stats.dropped(), 5000);
    assert!(stats.write_errors() >= 1);
}

// ---------------------------------------------------------------- syslog

/// The RFC 5424 fields of one message.
struct Syslog {
    pri: u32,
    version: String,
    timestamp: String,
    hostname: String,
    app: String,
    procid: String,
    msgid: String,
    sd: String,
    msg: String,
}

fn parse_5424(s: &str) -> Syslog {
    let rest = s.strip_prefix('<').expect("<PRI>");
    let (pri, rest) = rest.split_once('>').expect("PRI>");
    let mut it = rest.splitn(7, ' ');
    let mut next = || it.next().expect("field").to_string();
    let (version, timestamp, hostname, app, procid, msgid, rest) =
        (next(), next(), next(), next(), next(), next(), next());
    // SD: one element, up to the first unescaped ']'.
    let bytes = rest.as_bytes();
    assert_eq!(bytes[0], b'[', "{rest}");
    let mut i = 1;
    while bytes[i] != b']' {
        i += if bytes[i] == b'\\' { 2 } else { 1 };
    }
    Syslog {
        pri: pri.parse().expect("pri"),
        version,
        timestamp,
        hostname,
        app,
        procid,
        msgid,
        sd: rest[..=i].to_string(),
        msg: rest[i + 2..].to_string(),
    }
}

fn check_syslog(m: &Syslog, facility: u32, rule: &str) {
    // High -> err (3).
    assert_eq!(m.pri, facility * 8 + 3);
    assert_eq!(m.version, "1");
    assert_eq!(m.timestamp, "2025-06-01T12:00:00.123456Z");
    assert_eq!(m.hostname, "test-node");
    assert_eq!(m.app, "agentguard");
    assert_eq!(m.procid, std::process::id().to_string());
    assert_eq!(m.msgid, "open");
    assert!(m.sd.starts_with("[agentguard@32473 "), "{}", m.sd);
    assert!(m.sd.contains(&format!("rule=\"{rule}\"")), "{}", m.sd);
    assert!(m.sd.contains("severity=\"high\""), "{}", m.sd);
    let v: serde_json::Value = serde_json::from_str(&m.msg).expect("MSG is the alert JSON");
    assert_eq!(v["decision"]["rule"], rule);
}

fn syslog_outputs(address: Target, facility: u8) -> Outputs {
    Outputs::from_config(
        &[SinkConfig::Syslog(SyslogConfig {
            address,
            facility: Facility(facility),
            message: Default::default(),
            queue: None,
        })],
        Format::Native,
    )
    .expect("outputs")
}

#[test]
fn syslog_over_udp_has_rfc5424_headers() {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(GUARD)).expect("timeout");
    let addr = sock.local_addr().expect("addr");
    let outputs = syslog_outputs(Target::Udp(addr.to_string()), 4);
    outputs.send(&alert("udp-rule", Severity::High));
    let mut buf = vec![0u8; 65536];
    let n = sock.recv(&mut buf).expect("a datagram");
    let text = std::str::from_utf8(&buf[..n]).expect("utf8");
    check_syslog(&parse_5424(text), 4, "udp-rule");
    outputs.close();
}

#[test]
fn syslog_over_a_unix_datagram_socket() {
    let dir = temp_dir("syslog-unix");
    let path = dir.join("log.sock");
    let sock = UnixDatagram::bind(&path).expect("bind");
    sock.set_read_timeout(Some(GUARD)).expect("timeout");
    let outputs = syslog_outputs(Target::UnixDatagram(path.clone()), 16);
    outputs.send(&alert("unix-rule", Severity::High));
    let mut buf = vec![0u8; 65536];
    let n = sock.recv(&mut buf).expect("a datagram");
    let text = std::str::from_utf8(&buf[..n]).expect("utf8");
    check_syslog(&parse_5424(text), 16, "unix-rule");
    outputs.close();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads one octet-counted frame (RFC 6587).
fn read_frame(r: &mut impl BufRead) -> Option<String> {
    let mut len = Vec::new();
    if r.read_until(b' ', &mut len).ok()? == 0 {
        return None;
    }
    let n: usize = std::str::from_utf8(&len[..len.len() - 1])
        .ok()?
        .parse()
        .ok()?;
    let mut msg = vec![0; n];
    r.read_exact(&mut msg).ok()?;
    String::from_utf8(msg).ok()
}

#[test]
fn syslog_over_tcp_octet_counts_and_reconnects() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let outputs = Arc::new(syslog_outputs(Target::Tcp(addr.to_string()), 1));

    // The sink connects when it has something to say.
    outputs.send(&alert("first", Severity::High));
    let (c1, _) = l.accept_with_guard();
    let mut r = BufReader::new(c1);
    let m = read_frame(&mut r).expect("first frame");
    check_syslog(&parse_5424(&m), 1, "first");
    // The server goes away; the sink must reconnect by itself while the
    // caller keeps sending (a few messages may be lost in the dead socket).
    drop(r);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (outputs, stop) = (Arc::clone(&outputs), Arc::clone(&stop));
        std::thread::spawn(move || {
            let end = Instant::now() + GUARD;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                outputs.send(&alert("again", Severity::High));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let (c2, _) = l.accept_with_guard();
    let mut r = BufReader::new(c2);
    let m = read_frame(&mut r).expect("frame after reconnecting");
    check_syslog(&parse_5424(&m), 1, "again");
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("sender");
    drop(r);
    if let Ok(o) = Arc::try_unwrap(outputs) {
        o.close();
    }
}

trait AcceptWithGuard {
    fn accept_with_guard(&self) -> (TcpStream, std::net::SocketAddr);
}

impl AcceptWithGuard for TcpListener {
    fn accept_with_guard(&self) -> (TcpStream, std::net::SocketAddr) {
        self.set_nonblocking(true).expect("nonblocking");
        let end = Instant::now() + GUARD;
        loop {
            match self.accept() {
                Ok((c, a)) => {
                    c.set_nonblocking(false).expect("blocking");
                    c.set_read_timeout(Some(GUARD)).expect("timeout");
                    return (c, a);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < end, "no connection within the guard");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }
}

// ---------------------------------------------------------------- files

#[test]
fn alert_file_rotates_at_the_size_limit() {
    let dir = temp_dir("rotate");
    let path = dir.join("alerts.jsonl");
    let one_line = serde_json::to_vec(&alert("rot-00", Severity::Low))
        .expect("json")
        .len() as u64
        + 1;
    // Room for three lines per file; keep two rotated files.
    let max = one_line * 3 + 10;
    let outputs = Outputs::from_config(
        &[SinkConfig::File(FileConfig {
            path: path.clone(),
            max_bytes: max,
            keep: 2,
            queue: Some(1024),
        })],
        Format::Native,
    )
    .expect("outputs");
    for i in 0..10 {
        assert_eq!(
            outputs.send(&alert(&format!("rot-{i:02}"), Severity::Low)),
            1
        );
    }
    outputs.close();
    let rules = |p: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(p).expect("read");
        assert!(
            text.len() as u64 <= max,
            "{} is {} bytes",
            p.display(),
            text.len()
        );
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("whole JSON line");
                v["decision"]["rule"].as_str().expect("rule").to_string()
            })
            .collect()
    };
    let dot = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    // 10 lines at 3 per file: 3, 3, 3, 1 -> the oldest file is gone.
    assert_eq!(rules(&path), ["rot-09"]);
    assert_eq!(rules(&dot(1)), ["rot-06", "rot-07", "rot-08"]);
    assert_eq!(rules(&dot(2)), ["rot-03", "rot-04", "rot-05"]);
    assert!(!dot(3).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ocsf_format_goes_to_every_sink() {
    let dir = temp_dir("ocsf");
    let sock_path = dir.join("log.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind");
    sock.set_read_timeout(Some(GUARD)).expect("timeout");
    let outputs = Outputs::from_config(
        &[
            SinkConfig::File(FileConfig {
                path: dir.join("a.jsonl"),
                max_bytes: 0,
                keep: 0,
                queue: None,
            }),
            SinkConfig::Syslog(SyslogConfig {
                address: Target::UnixDatagram(sock_path.clone()),
                facility: Facility::default(),
                message: Default::default(),
                queue: None,
            }),
        ],
        Format::Ocsf,
    )
    .expect("outputs");
    let names: Vec<String> = outputs.sink_stats().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["file", "syslog"]);
    assert_eq!(outputs.send(&alert("o", Severity::Critical)), 2);
    let mut buf = vec![0u8; 65536];
    let n = sock.recv(&mut buf).expect("datagram");
    let m = parse_5424(std::str::from_utf8(&buf[..n]).expect("utf8"));
    assert_eq!(m.pri, 16 * 8 + 2); // local0, crit
    let from_syslog: serde_json::Value = serde_json::from_str(&m.msg).expect("json");
    outputs.close();
    let line = std::fs::read_to_string(dir.join("a.jsonl")).expect("read");
    let from_file: serde_json::Value = serde_json::from_str(line.trim()).expect("json");
    assert_eq!(from_file, from_syslog);
    assert_eq!(from_file["class_uid"], 1001);
    assert_eq!(from_file["severity_id"], 5);
    assert_eq!(from_file["unmapped"]["agentguard"]["decision"]["rule"], "o");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- config

#[test]
fn config_errors_name_file_and_line() {
    let dir = temp_dir("config");
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        "policies: /p\nalerts:\n  - webhook:\n      url: gopher://x\n",
    )
    .expect("write");
    let e = Config::load(&path).expect_err("refused");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("{}:4:", path.display())),
        "{text}"
    );
    assert!(text.contains("http://"), "{text}");
    std::fs::write(&path, "policies: /p\nwatch: agents\n").expect("write");
    let cfg = Config::load(&path).expect("valid");
    assert_eq!(cfg.policies, PathBuf::from("/p"));
    let e = Config::load(&dir.join("missing.yaml")).expect_err("missing");
    assert!(e.to_string().contains("missing.yaml"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- status

#[test]
fn status_is_served_on_a_private_unix_socket() {
    let rt = runtime();
    let dir = temp_dir("status");
    let path = dir.join("run/status.sock");
    let shared = Status::new().shared();
    {
        let mut s = shared.write().expect("lock");
        s.probes = vec!["sys_enter_openat".into(), "sys_exit_openat".into()];
        s.counters.insert("alerts".into(), 5);
    }
    let server = rt
        .block_on(status::serve(&path, Arc::clone(&shared)))
        .expect("serve");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let got = status::fetch(&path).expect("fetch");
    assert_eq!(got, *shared.read().expect("lock"));
    assert_eq!(got.counters["alerts"], 5);

    // Updates show on the next read.
    {
        let mut s = shared.write().expect("lock");
        s.agents.push(AgentStatus {
            name: "claude".into(),
            pid: Some(99),
            container: None,
        });
        s.last_reload_error = Some("policies/x.yaml:3:1: bad".into());
        s.touch();
    }
    let got = status::fetch(&path).expect("fetch");
    assert_eq!(got.agents[0].name, "claude");

    // The CLI reads the same socket.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentguard"))
        .args(["status", "--json", "--socket"])
        .arg(&path)
        .output()
        .expect("run agentguard status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Status = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(
        v.last_reload_error.as_deref(),
        Some("policies/x.yaml:3:1: bad")
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agentguard"))
        .args(["status", "--socket"])
        .arg(&path)
        .output()
        .expect("run agentguard status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("claude  pid 99"), "{text}");

    // A second daemon may not take over a live socket.
    let e = rt
        .block_on(status::serve(&path, Arc::clone(&shared)))
        .err()
        .expect("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);

    drop(server);
    assert!(!path.exists(), "socket removed on shutdown");
    assert!(status::fetch(&path).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Idle connections (opened, nothing sent) never keep a scrape waiting:
/// with 200 of them open, and their read timeout far off, a scrape is
/// answered (each new connection closes the oldest idle one past a cap).
#[test]
fn idle_connections_do_not_block_a_scrape() {
    let rt = runtime();
    let (_m, server) = serve_metrics(&rt);
    let addr = server.local_addr();
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).expect("idle connect"))
        .collect();
    // Through the connect backlog: every idle one was accepted.
    std::thread::sleep(Duration::from_millis(300));
    // Answered well within one head timeout of the server (5 s): no idle
    // connection ahead of it is waited for.
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    let mut resp = String::new();
    c.read_to_string(&mut resp)
        .expect("a scrape answered despite 200 idle connections");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("agentguard_build_info"), "{resp}");
    drop(idle);
    drop(server);
}
