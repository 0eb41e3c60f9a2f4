//! RFC 5424 syslog over UDP (RFC 5426), TCP with octet-counting framing
//! (RFC 6587) or a unix socket (datagram, like /dev/log, or stream with
//! octet counting). One message per alert:
//!
//! `<PRI>1 TIMESTAMP HOSTNAME agentguard PROCID KIND [agentguard@32473 ...] MSG`
//!
//! PRI is facility * 8 + the alert's severity mapped to a syslog severity;
//! the structured data carries the decision's key fields and MSG the alert
//! JSON (native or OCSF) or only its message text. The header is built on
//! the caller's thread (a few hundred bytes), the socket work on the sink's
//! own thread, which reconnects with backoff while the queue absorbs or drops.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::queue::{nap, Queue};
use super::{AlertSink, SinkStats};
use crate::alert::{Alert, Severity};

/// Private enterprise number of the structured-data id. 32473 is the one
/// RFC 5612 reserves for documentation; agentguard has none of its own.
pub const SD_ID: &str = "agentguard@32473";
pub const APP_NAME: &str = "agentguard";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where messages go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Target {
    /// `udp://HOST:PORT`
    Udp(String),
    /// `tcp://HOST:PORT`
    Tcp(String),
    /// `unix:///dev/log` (datagram)
    UnixDatagram(PathBuf),
    /// `unix-stream:///path` (octet-counted stream)
    UnixStream(PathBuf),
}

impl TryFrom<String> for Target {
    type Error = String;
    fn try_from(s: String) -> Result<Target, String> {
        let host_port = |rest: &str| -> Result<String, String> {
            match rest.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(rest.to_string()),
                _ => Err(format!(
                    "syslog address {s:?}: expected HOST:PORT after the scheme"
                )),
            }
        };
        let path = |rest: &str| -> Result<PathBuf, String> {
            if rest.starts_with('/') {
                Ok(PathBuf::from(rest))
            } else {
                Err(format!(
                    "syslog address {s:?}: expected an absolute socket path"
                ))
            }
        };
        if let Some(r) = s.strip_prefix("udp://") {
            Ok(Target::Udp(host_port(r)?))
        } else if let Some(r) = s.strip_prefix("tcp://") {
            Ok(Target::Tcp(host_port(r)?))
        } else if let Some(r) = s.strip_prefix("unix-stream://") {
            Ok(Target::UnixStream(path(r)?))
        } else if let Some(r) = s.strip_prefix("unix://") {
            Ok(Target::UnixDatagram(path(r)?))
        } else {
            Err(format!(
                "syslog address {s:?}: expected udp://HOST:PORT, tcp://HOST:PORT, unix:///PATH or unix-stream:///PATH"
            ))
        }
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        match t {
            Target::Udp(a) => format!("udp://{a}"),
            Target::Tcp(a) => format!("tcp://{a}"),
            Target::UnixDatagram(p) => format!("unix://{}", p.display()),
            Target::UnixStream(p) => format!("unix-stream://{}", p.display()),
        }
    }
}

/// A syslog facility, by name (`local0`, `auth`, ...) or number 0-23.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facility(pub u8);

const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

impl Default for Facility {
    fn default() -> Self {
        Facility(16) // local0
    }
}

impl TryFrom<String> for Facility {
    type Error = String;
    fn try_from(s: String) -> Result<Facility, String> {
        if let Some(i) = FACILITIES.iter().position(|f| *f == s) {
            return Ok(Facility(i as u8));
        }
        match s.parse::<u8>() {
            Ok(n) if n < 24 => Ok(Facility(n)),
            _ => Err(format!(
                "unknown syslog facility {s:?}; known: {} or 0-23",
                FACILITIES.join(", ")
            )),
        }
    }
}

impl From<Facility> for String {
    fn from(f: Facility) -> String {
        FACILITIES
            .get(usize::from(f.0))
            .map_or_else(|| f.0.to_string(), |s| s.to_string())
    }
}

/// What MSG holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// The alert's JSON (native or OCSF, as configured).
    #[default]
    Json,
    /// Only the decision's message text (the structured data has the rest).
    Text,
}

/// `syslog:` entry of the `alerts:` list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `udp://HOST:PORT`, `tcp://HOST:PORT`, `unix:///dev/log` (datagram)
    /// or `unix-stream:///PATH`.
    pub address: Target,
    #[serde(default)]
    pub facility: Facility,
    #[serde(default)]
    pub message: Message,
    #[serde(default)]
    pub queue: Option<usize>,
}

impl Serialize for Facility {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from(*self))
    }
}

impl<'de> Deserialize<'de> for Facility {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Facility, D::Error> {
        // YAML gives `facility: 4` as a number and `local0` as a string.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u8),
            S(String),
        }
        let s = match Raw::deserialize(d)? {
            Raw::N(n) => n.to_string(),
            Raw::S(s) => s,
        };
        Facility::try_from(s).map_err(serde::de::Error::custom)
    }
}

/// Syslog severity (RFC 5424 table 2) for an alert severity.
pub fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2, // crit
        Severity::High => 3,     // err
        Severity::Medium => 4,   // warning
        Severity::Low => 5,      // notice
        Severity::Info => 6,     // informational
    }
}

/// PRINTUSASCII without spaces, at most `max` bytes; "-" when empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// PARAM-VALUE escaping (RFC 5424 6.3.3).
fn sd_escape(out: &mut String, v: &str) {
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// RFC 3339 UTC with at most 6 fractional digits, as RFC 5424 requires.
fn timestamp(rfc3339: &str) -> String {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now());
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Everything before MSG, ending with the space that precedes it.
pub fn header(alert: &Alert, facility: Facility, pid: u32) -> String {
    let pri = u32::from(facility.0) * 8 + u32::from(syslog_severity(alert.decision.severity));
    let ev = &alert.event;
    let mut h = format!(
        "<{pri}>1 {} {} {APP_NAME} {pid} {} [{SD_ID}",
        timestamp(&alert.time),
        header_field(&alert.host, 255),
        header_field(ev.kind.as_str(), 32),
    );
    let mut param = |name: &str, value: &str| {
        h.push(' ');
        h.push_str(name);
        h.push_str("=\"");
        sd_escape(&mut h, value);
        h.push('"');
    };
    let d = &alert.decision;
    param("policy", &d.policy);
    param("rule", &d.rule);
    param("action", d.action.as_str());
    param("severity", d.severity.as_str());
    param(
        "outcome",
        serde_json::to_value(alert.result.outcome)
            .ok()
            .as_ref()
            .and_then(|v| v.as_str())
            .unwrap_or("-"),
    );
    param("pid", &ev.pid.to_string());
    param("comm", &ev.comm);
    if let Some(id) = &ev.identity {
        if let Some(c) = &id.container {
            param("container", &c.id);
        }
        if let Some(a) = &id.agent {
            param("agent", &a.name);
        }
    }
    h.push_str("] ");
    h
}

/// One queued message: header + shared body.
struct Msg {
    head: String,
    body: Arc<[u8]>,
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    UnixDatagram(UnixDatagram),
    UnixStream(UnixStream),
}

fn connect(target: &Target) -> io::Result<Conn> {
    match target {
        Target::Udp(a) => {
            let addr = a
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| io::Error::other(format!("{a}: no address")))?;
            let bind = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let s = UdpSocket::bind(bind)?;
            s.connect(addr)?;
            Ok(Conn::Udp(s))
        }
        Target::Tcp(a) => {
            let mut last = io::Error::other(format!("{a}: no address"));
            for addr in a.to_socket_addrs()? {
                match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                    Ok(s) => {
                        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                        let _ = s.set_nodelay(true);
                        return Ok(Conn::Tcp(s));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
        Target::UnixDatagram(p) => {
            let s = UnixDatagram::unbound()?;
            s.connect(p)?;
            s.set_write_timeout(Some(WRITE_TIMEOUT))?;
            Ok(Conn::UnixDatagram(s))
        }
        Target::UnixStream(p) => {
            let s = UnixStream::connect(p)?;
            s.set_write_timeout(Some(WRITE_TIMEOUT))?;
            Ok(Conn::UnixStream(s))
        }
    }
}

impl Conn {
    fn send(&mut self, m: &Msg, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        let len = m.head.len() + m.body.len();
        if matches!(self, Conn::Tcp(_) | Conn::UnixStream(_)) {
            // Octet counting (RFC 6587 3.4.1): MSG-LEN SP SYSLOG-MSG.
            buf.extend_from_slice(len.to_string().as_bytes());
            buf.push(b' ');
        }
        buf.extend_from_slice(m.head.as_bytes());
        buf.extend_from_slice(&m.body);
        match self {
            Conn::Udp(s) => s.send(buf).map(drop),
            Conn::UnixDatagram(s) => s.send(buf).map(drop),
            Conn::Tcp(s) => s.write_all(buf),
            Conn::UnixStream(s) => s.write_all(buf),
        }
    }

    /// Datagrams carry no state worth keeping: one failed send loses that
    /// message only. Streams must be reopened.
    fn is_stream(&self) -> bool {
        matches!(self, Conn::Tcp(_) | Conn::UnixStream(_))
    }
}

pub struct SyslogSink {
    name: String,
    facility: Facility,
    message: Message,
    pid: u32,
    queue: Queue<Msg>,
}

impl SyslogSink {
    /// Starts the sender thread. Connecting happens there, so a down server
    /// does not fail start-up; it shows as drops and write errors.
    pub fn spawn(name: String, cfg: &SyslogConfig) -> io::Result<SyslogSink> {
        let target = cfg.address.clone();
        let queue = Queue::spawn(
            "agentguard-syslog",
            cfg.queue.unwrap_or(super::DEFAULT_QUEUE),
            move |rx, st, cl| run(rx, target, &st, &cl),
        )?;
        Ok(SyslogSink {
            name,
            facility: cfg.facility,
            message: cfg.message,
            pid: std::process::id(),
            queue,
        })
    }
}

impl AlertSink for SyslogSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&self, alert: &Alert, json: &Arc<[u8]>) -> bool {
        let body = match self.message {
            Message::Json => Arc::clone(json),
            Message::Text => Arc::from(alert.decision.message.as_bytes()),
        };
        let msg = Msg {
            head: header(alert, self.facility, self.pid),
            body,
        };
        self.queue.send(msg)
    }

    fn stats(&self) -> Arc<SinkStats> {
        Arc::clone(self.queue.stats())
    }

    fn close(mut self: Box<Self>) {
        self.queue.shutdown();
    }
}

fn run(rx: Receiver<Msg>, target: Target, st: &SinkStats, closing: &AtomicBool) {
    let mut conn: Option<Conn> = None;
    let mut backoff = BACKOFF_MIN;
    let mut buf = Vec::with_capacity(4096);
    // Set once the sink is closing and the destination has failed: the rest
    // of the queue is counted as dropped rather than retried one by one.
    let mut give_up = false;
    loop {
        let msg = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        loop {
            if give_up {
                st.dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if conn.is_none() {
                match connect(&target) {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::debug!("syslog: connecting to {target:?}: {e}");
                        st.write_errors.fetch_add(1, Ordering::Relaxed);
                        if closing.load(Ordering::Relaxed) {
                            give_up = true;
                            continue;
                        }
                        nap(backoff, closing);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            match c.send(&msg, &mut buf) {
                Ok(()) => {
                    st.written.fetch_add(1, Ordering::Relaxed);
                    backoff = BACKOFF_MIN;
                    break;
                }
                Err(e) => {
                    tracing::debug!("syslog: sending to {target:?}: {e}");
                    st.write_errors.fetch_add(1, Ordering::Relaxed);
                    let stream = c.is_stream();
                    conn = None;
                    if !stream {
                        // A datagram is not retried (the receiver may be
                        // gone for good); the next one reconnects.
                        st.dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    // A stream retries the same message on a new connection.
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;
    use crate::outputs::ocsf::tests::sample_alert;

    #[test]
    fn header_has_the_rfc5424_fields() {
        let a = sample_alert(Kind::Open);
        let h = header(&a, Facility(16), 77);
        // local0 (16) * 8 + err (3) for High.
        assert!(
            h.starts_with("<131>1 2025-01-02T03:04:05.678000Z node-1 agentguard 77 open [agentguard@32473 policy=\"files\" rule=\"shadow-read\""),
            "{h}"
        );
        assert!(h.ends_with("] "), "{h}");
    }

    #[test]
    fn sd_values_are_escaped() {
        let mut s = String::new();
        sd_escape(&mut s, r#"a"b\c]d"#);
        assert_eq!(s, r#"a\"b\\c\]d"#);
    }

    #[test]
    fn targets_and_facilities_parse() {
        assert_eq!(
            Target::try_from("udp://127.0.0.1:514".to_string()),
            Ok(Target::Udp("127.0.0.1:514".into()))
        );
        assert_eq!(
            Target::try_from("unix:///dev/log".to_string()),
            Ok(Target::UnixDatagram("/dev/log".into()))
        );
        assert!(Target::try_from("tcp://host".to_string()).is_err());
        assert!(Target::try_from("http://x:1".to_string()).is_err());
        assert_eq!(Facility::try_from("auth".to_string()), Ok(Facility(4)));
        assert_eq!(Facility::try_from("23".to_string()), Ok(Facility(23)));
        assert!(Facility::try_from("local9".to_string()).is_err());
    }
}
