//! HTTP webhook: alerts POSTed in batches as a JSON array.
//!
//! A batch closes at `batch_size` alerts or `batch_delay_ms` after its first
//! alert, whichever comes first. Failed POSTs (network errors, 408, 429,
//! 5xx) are retried with exponential backoff up to `max_retries`; then the
//! batch is dropped and counted. All of it happens on the sink's own thread
//! with a blocking client (ureq, rustls), so a slow or dead server only fills
//! the queue, and the caller's `send` keeps returning at once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::queue::{nap, Queue};
use super::{AlertSink, SinkStats};
use crate::alert::Alert;

/// An `http://` or `https://` URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Url(String);

impl Url {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Plain `http://` to a host other than this machine's loopback: what
    /// is sent crosses the network readable by anyone on the path.
    pub fn is_plain_http_off_host(&self) -> bool {
        let Some(rest) = self.0.strip_prefix("http://") else {
            return false;
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let hostport = authority.rsplit('@').next().unwrap_or("");
        let host = match hostport.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => hostport.split(':').next().unwrap_or(""),
        };
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        !loopback
    }
}

impl TryFrom<String> for Url {
    type Error = String;
    fn try_from(s: String) -> Result<Url, String> {
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .ok_or_else(|| format!("webhook url {s:?}: expected http:// or https://"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("webhook url {s:?}: no host"));
        }
        Ok(Url(s))
    }
}

impl From<Url> for String {
    fn from(u: Url) -> String {
        u.0
    }
}

/// `webhook:` entry of the `alerts:` list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: Url,
    /// File holding a bearer token (surrounding whitespace ignored), sent as
    /// `Authorization: Bearer ...`. Re-read for every batch, so a rotated
    /// secret is picked up without a restart.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default = "d_batch_size")]
    pub batch_size: usize,
    #[serde(default = "d_batch_delay_ms")]
    pub batch_delay_ms: u64,
    /// Whole-request timeout (connect, send, response).
    #[serde(default = "d_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "d_max_retries")]
    pub max_retries: u32,
    /// First retry delay; doubled per retry up to `max_backoff_ms`.
    #[serde(default = "d_backoff_ms")]
    pub backoff_ms: u64,
    #[serde(default = "d_max_backoff_ms")]
    pub max_backoff_ms: u64,
    #[serde(default)]
    pub queue: Option<usize>,
}

fn d_batch_size() -> usize {
    100
}
fn d_batch_delay_ms() -> u64 {
    1000
}
fn d_timeout_ms() -> u64 {
    10_000
}
fn d_max_retries() -> u32 {
    5
}
fn d_backoff_ms() -> u64 {
    500
}
fn d_max_backoff_ms() -> u64 {
    30_000
}

impl WebhookConfig {
    /// Defaults for everything but the URL.
    pub fn new(url: Url) -> WebhookConfig {
        WebhookConfig {
            url,
            token_file: None,
            batch_size: d_batch_size(),
            batch_delay_ms: d_batch_delay_ms(),
            timeout_ms: d_timeout_ms(),
            max_retries: d_max_retries(),
            backoff_ms: d_backoff_ms(),
            max_backoff_ms: d_max_backoff_ms(),
            queue: None,
        }
    }
}

/// A secret only root may have written (see `crate::trust`).
fn read_token(path: &PathBuf) -> std::io::Result<String> {
    crate::trust::check(path)
        .map_err(|why| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why))?;
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

pub struct WebhookSink {
    name: String,
    queue: Queue<Arc<[u8]>>,
}

impl WebhookSink {
    /// Starts the sender thread. An unreadable token file fails here, so a
    /// misconfiguration shows at start-up; a down server does not.
    pub fn spawn(name: String, cfg: &WebhookConfig) -> std::io::Result<WebhookSink> {
        if cfg.token_file.is_some() && cfg.url.is_plain_http_off_host() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "webhook {}: refusing to send the bearer token of token_file in clear text over \
                     http:// to another host; use https://, or a relay on this machine's loopback",
                    cfg.url.as_str()
                ),
            ));
        }
        let token = match &cfg.token_file {
            Some(p) => Some(read_token(p).map_err(|e| {
                std::io::Error::new(e.kind(), format!("reading {}: {e}", p.display()))
            })?),
            None => None,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(cfg.timeout_ms.max(1))))
            // Status codes are ours to judge (retry 5xx, give up on 4xx).
            .http_status_as_error(false)
            .user_agent(concat!("agentguard/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let cfg = cfg.clone();
        let queue = Queue::spawn(
            "agentguard-webhook",
            cfg.queue.unwrap_or(super::DEFAULT_QUEUE),
            move |rx, stats, closing| {
                Worker {
                    cfg,
                    agent,
                    token,
                    stats,
                    closing,
                }
                .run(rx)
            },
        )?;
        Ok(WebhookSink { name, queue })
    }
}

impl AlertSink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&self, _alert: &Alert, json: &Arc<[u8]>) -> bool {
        self.queue.send(Arc::clone(json))
    }

    fn stats(&self) -> Arc<SinkStats> {
        Arc::clone(self.queue.stats())
    }

    /// Sends what is queued with one attempt per batch (no retries: a dead
    /// server must not hold up shutdown), then stops.
    fn close(mut self: Box<Self>) {
        self.queue.shutdown();
    }
}

struct Worker {
    cfg: WebhookConfig,
    agent: ureq::Agent,
    token: Option<String>,
    stats: Arc<SinkStats>,
    closing: Arc<AtomicBool>,
}

enum Attempt {
    Done,
    Retry(String),
    GiveUp(String),
}

impl Worker {
    fn run(mut self, rx: Receiver<Arc<[u8]>>) {
        let max = self.cfg.batch_size.max(1);
        let delay = Duration::from_millis(self.cfg.batch_delay_ms);
        let mut batch: Vec<Arc<[u8]>> = Vec::with_capacity(max);
        let mut open = true;
        while open {
            let Ok(first) = rx.recv() else { break };
            batch.push(first);
            let deadline = Instant::now() + delay;
            while batch.len() < max {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(m) => batch.push(m),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            self.deliver(&batch);
            batch.clear();
        }
    }

    fn body(batch: &[Arc<[u8]>]) -> Vec<u8> {
        let len = batch.iter().map(|b| b.len() + 1).sum::<usize>() + 2;
        let mut body = Vec::with_capacity(len);
        body.push(b'[');
        for (i, b) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b);
        }
        body.push(b']');
        body
    }

    fn attempt(&self, body: &[u8]) -> Attempt {
        let mut req = self
            .agent
            .post(self.cfg.url.as_str())
            .header("Content-Type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        match req.send(body) {
            Ok(resp) => {
                let code = resp.status().as_u16();
                match code {
                    200..=299 => Attempt::Done,
                    408 | 429 | 500..=599 => Attempt::Retry(format!("HTTP {code}")),
                    _ => Attempt::GiveUp(format!("HTTP {code}")),
                }
            }
            Err(e) => Attempt::Retry(e.to_string()),
        }
    }

    fn deliver(&mut self, batch: &[Arc<[u8]>]) {
        if let Some(p) = &self.cfg.token_file {
            match read_token(p) {
                Ok(t) => self.token = Some(t),
                Err(e) => tracing::warn!(
                    "webhook: re-reading {}: {e}; keeping the last token",
                    p.display()
                ),
            }
        }
        let body = Self::body(batch);
        let n = batch.len() as u64;
        let mut backoff = Duration::from_millis(self.cfg.backoff_ms);
        let max_backoff = Duration::from_millis(self.cfg.max_backoff_ms);
        let mut tries = 0u32;
        loop {
            let why = match self.attempt(&body) {
                Attempt::Done => {
                    self.stats.written.fetch_add(n, Ordering::Relaxed);
                    return;
                }
                Attempt::Retry(why) => why,
                Attempt::GiveUp(why) => {
                    self.fail(n, &why);
                    return;
                }
            };
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            if tries >= self.cfg.max_retries || self.closing.load(Ordering::Relaxed) {
                self.fail(n, &why);
                return;
            }
            tries += 1;
            nap(backoff, &self.closing);
            backoff = (backoff * 2).min(max_backoff);
        }
    }

    fn fail(&self, n: u64, why: &str) {
        self.stats.dropped.fetch_add(n, Ordering::Relaxed);
        tracing::warn!(
            "webhook {}: dropped a batch of {n} alerts: {why}",
            self.cfg.url.as_str()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(Url::try_from("http://127.0.0.1:9/x".to_string()).is_ok());
        assert!(Url::try_from("https://siem.example/hook".to_string()).is_ok());
        assert!(Url::try_from("ftp://x".to_string()).is_err());
        assert!(Url::try_from("http:///x".to_string()).is_err());
        let off = |u: &str| Url::try_from(u.to_string()).map(|u| u.is_plain_http_off_host());
        assert_eq!(off("http://127.0.0.1:9/x"), Ok(false));
        assert_eq!(off("http://[::1]:9/x"), Ok(false));
        assert_eq!(off("http://localhost/x"), Ok(false));
        assert_eq!(off("http://user@127.0.0.2:80"), Ok(false));
        assert_eq!(off("http://siem.example/hook"), Ok(true));
        assert_eq!(off("http://10.1.2.3:8080/hook"), Ok(true));
        assert_eq!(off("http://127.0.0.1.evil.example/x"), Ok(true));
        assert_eq!(off("https://siem.example/hook"), Ok(false));
        // A token is never sent over plain http to another host.
        let mut cfg = WebhookConfig::new(Url("http://siem.example/hook".into()));
        cfg.token_file = Some("/nonexistent/token".into());
        let e = WebhookSink::spawn("w".into(), &cfg)
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("clear text")),
            "{e:?}"
        );
    }

    #[test]
    fn body_is_a_json_array() {
        let a: Arc<[u8]> = Arc::from(&br#"{"a":1}"#[..]);
        let b: Arc<[u8]> = Arc::from(&br#"{"b":2}"#[..]);
        let body = Worker::body(&[a, b]);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v, serde_json::json!([{"a":1},{"b":2}]));
    }
}
