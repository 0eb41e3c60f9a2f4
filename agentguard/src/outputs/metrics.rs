//! Prometheus metrics and the `GET /metrics` endpoint.
//!
//! Labels are bounded sets only (event kinds, rule names from the loaded
//! policies, actions, outcomes, sink names): no pid, path or container id,
//! whose unbounded values would grow the scrape forever.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::SinkStats;
use crate::alert::Alert;
use crate::event::Kind;

/// (sink name, its counters), shared with the collector.
type SinkList = Arc<Mutex<Vec<(String, Arc<SinkStats>)>>>;

/// Counters that live elsewhere (the sensor's kernel-loss count, the sinks'
/// drop counters) read at scrape time instead of being mirrored.
struct Observed {
    lost: Arc<AtomicU64>,
    sinks: SinkList,
    lost_tmpl: IntCounter,
    drops_tmpl: IntCounterVec,
}

const LOST: (&str, &str) = (
    "agentguard_events_lost_total",
    "Events lost in the kernel because the ring buffer was full.",
);
const DROPS: (&str, &str) = (
    "agentguard_alert_sink_drops_total",
    "Alerts a sink dropped (queue full or delivery given up).",
);

impl Collector for Observed {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.lost_tmpl.desc();
        d.extend(self.drops_tmpl.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        if let Ok(c) = IntCounter::new(LOST.0, LOST.1) {
            c.inc_by(self.lost.load(Ordering::Relaxed));
            out.extend(c.collect());
        }
        if let Ok(v) = IntCounterVec::new(Opts::new(DROPS.0, DROPS.1), &["sink"]) {
            if let Ok(sinks) = self.sinks.lock() {
                for (name, st) in sinks.iter() {
                    v.with_label_values(&[name.as_str()]).inc_by(st.dropped());
                }
            }
            out.extend(v.collect());
        }
        out
    }
}

/// Every agentguard metric, in its own registry.
pub struct Metrics {
    registry: Registry,
    /// agentguard_events_total{kind}
    pub events: IntCounterVec,
    pub policy_evaluations: IntCounter,
    pub policy_evaluation_seconds: Histogram,
    /// agentguard_alerts_total{rule,action,severity}
    pub alerts: IntCounterVec,
    /// agentguard_enforcement_actions_total{action,result}
    pub enforcement_actions: IntCounterVec,
    pub containers_watched: IntGauge,
    pub rules_degraded: IntGauge,
    pub agents_watched: IntGauge,
    pub policy_reload_failures: IntCounter,
    pub policy_reloads: IntCounter,
    /// agentguard_kernel_map_full_total{map}: kernel map inserts refused
    /// because the map was full (a new child left uncovered).
    pub map_full: IntGaugeVec,
    /// agentguard_events_prefiltered_total: records of guarded processes
    /// the kernel prefilter kept (no rule could match them).
    pub prefiltered: IntGauge,
    /// agentguard_dns_queries_dropped_total: DNS queries of subjects under
    /// a domain rule the kernel dropped (name outside the list).
    pub dns_dropped: IntGauge,
    /// agentguard_events_flooded_total{kind}: records flood isolation
    /// dropped in the kernel (a subject past its quota; alerts name it).
    pub flooded: IntCounterVec,
    lost: Arc<AtomicU64>,
    sinks: SinkList,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let events = IntCounterVec::new(
            Opts::new(
                "agentguard_events_total",
                "Events received from the sensor.",
            ),
            &["kind"],
        )?;
        let policy_evaluations = IntCounter::new(
            "agentguard_policy_evaluations_total",
            "Events evaluated against the policies.",
        )?;
        let policy_evaluation_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "agentguard_policy_evaluation_seconds",
                "Time to evaluate one event against the policies.",
            )
            // 1 us .. ~65 ms: YAML rules take microseconds, Rego more.
            .buckets(prometheus::exponential_buckets(1e-6, 4.0, 9)?),
        )?;
        let alerts = IntCounterVec::new(
            Opts::new("agentguard_alerts_total", "Alerts raised."),
            &["rule", "action", "severity"],
        )?;
        let enforcement_actions = IntCounterVec::new(
            Opts::new(
                "agentguard_enforcement_actions_total",
                "Enforcement actions by what was asked and what happened.",
            ),
            &["action", "result"],
        )?;
        let rules_degraded = IntGauge::new(
            "agentguard_rules_degraded",
            "Rules whose action this host cannot carry out (they alert instead; see agentguard status).",
        )?;
        let containers_watched = IntGauge::new(
            "agentguard_containers_watched",
            "Containers currently known.",
        )?;
        let agents_watched = IntGauge::new(
            "agentguard_agents_watched",
            "Agent processes currently known.",
        )?;
        let policy_reload_failures = IntCounter::new(
            "agentguard_policy_reload_failures_total",
            "Policy reloads refused (the previous policies stay in force).",
        )?;
        let policy_reloads =
            IntCounter::new("agentguard_policy_reloads_total", "Policy reloads applied.")?;
        // A gauge holding the kernel's running total (it can't be counted
        // twice by re-reading it).
        let map_full = IntGaugeVec::new(
            Opts::new(
                "agentguard_kernel_map_full_total",
                "Kernel map inserts refused because the map was full (a task left out of the filter or the enforcement maps).",
            ),
            &["map"],
        )?;
        registry.register(Box::new(map_full.clone()))?;
        let prefiltered = IntGauge::new(
            "agentguard_events_prefiltered_total",
            "Records of guarded processes the kernel kept because no rule could match them.",
        )?;
        registry.register(Box::new(prefiltered.clone()))?;
        let dns_dropped = IntGauge::new(
            "agentguard_dns_queries_dropped_total",
            "DNS queries of subjects under a domain rule the kernel dropped (name outside the list).",
        )?;
        registry.register(Box::new(dns_dropped.clone()))?;
        let flooded = IntCounterVec::new(
            Opts::new(
                "agentguard_events_flooded_total",
                "Records dropped in the kernel because their subject went past its flood quota, by kind.",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(flooded.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new("agentguard_build_info", "Always 1; the version as a label."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let lost = Arc::new(AtomicU64::new(0));
        let sinks = Arc::new(Mutex::new(Vec::new()));
        let observed = Observed {
            lost: Arc::clone(&lost),
            sinks: Arc::clone(&sinks),
            lost_tmpl: IntCounter::new(LOST.0, LOST.1)?,
            drops_tmpl: IntCounterVec::new(Opts::new(DROPS.0, DROPS.1), &["sink"])?,
        };
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(policy_evaluations.clone()))?;
        registry.register(Box::new(policy_evaluation_seconds.clone()))?;
        registry.register(Box::new(alerts.clone()))?;
        registry.register(Box::new(enforcement_actions.clone()))?;
        registry.register(Box::new(containers_watched.clone()))?;
        registry.register(Box::new(rules_degraded.clone()))?;
        registry.register(Box::new(agents_watched.clone()))?;
        registry.register(Box::new(policy_reload_failures.clone()))?;
        registry.register(Box::new(policy_reloads.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(observed))?;
        Ok(Metrics {
            registry,
            events,
            policy_evaluations,
            policy_evaluation_seconds,
            alerts,
            enforcement_actions,
            containers_watched,
            rules_degraded,
            agents_watched,
            policy_reload_failures,
            policy_reloads,
            map_full,
            prefiltered,
            dns_dropped,
            flooded,
            lost,
            sinks,
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// One event from the sensor.
    pub fn event(&self, kind: Kind) {
        self.events.with_label_values(&[kind.as_str()]).inc();
    }

    /// One policy evaluation and how long it took.
    pub fn evaluation(&self, took: Duration) {
        self.policy_evaluations.inc();
        self.policy_evaluation_seconds.observe(took.as_secs_f64());
    }

    /// One alert: counts it and the enforcement action behind it.
    pub fn alert(&self, alert: &Alert) {
        let d = &alert.decision;
        self.alerts
            .with_label_values(&[&*d.rule, d.action.as_str(), d.severity.as_str()])
            .inc();
        let outcome = serde_json::to_value(alert.result.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        self.enforcement_actions
            .with_label_values(&[d.action.as_str(), outcome.as_str()])
            .inc();
    }

    /// The sensor's running total of events lost in the kernel
    /// (`Sensor::lost_events()`); call it now and then, e.g. once a second.
    pub fn set_events_lost(&self, total: u64) {
        self.lost.fetch_max(total, Ordering::Relaxed);
    }

    /// Exports these sinks' drop counters (replaces any earlier set).
    pub fn watch_sinks(&self, sinks: Vec<(String, Arc<SinkStats>)>) {
        if let Ok(mut s) = self.sinks.lock() {
            *s = sinks;
        }
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// The running `/metrics` endpoint; stops when dropped or shut down.
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown(self) {
        self.task.abort();
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connections still sending their request head, at most: a new one
/// closes the oldest of them, so idle connections (a scanner, a slow
/// client, a flood) can never keep a scrape waiting.
const MAX_READING: usize = 32;
/// A client gets this long to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 8192;

/// Connections reading their head, oldest first: (id, the task to abort).
type Reading = Arc<std::sync::Mutex<std::collections::VecDeque<(u64, tokio::task::AbortHandle)>>>;

/// Binds `addr` and serves `GET /metrics` (HTTP/1.1, one request per
/// connection) on the current tokio runtime.
pub async fn serve(metrics: Arc<Metrics>, addr: SocketAddr) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let reading: Reading = Arc::default();
    let task = tokio::spawn(async move {
        let mut next_id: u64 = 0;
        loop {
            let (conn, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let id = next_id;
            next_id = next_id.wrapping_add(1);
            let m = Arc::clone(&metrics);
            let r = Arc::clone(&reading);
            // Registered under the lock before the task can finish reading
            // and remove itself.
            let mut q = reading.lock().unwrap_or_else(|e| e.into_inner());
            while q.len() >= MAX_READING {
                if let Some((_, oldest)) = q.pop_front() {
                    oldest.abort();
                }
            }
            let handle = tokio::spawn(async move {
                if let Err(e) = handle(conn, &m, || {
                    let mut q = r.lock().unwrap_or_else(|e| e.into_inner());
                    q.retain(|(i, _)| *i != id);
                })
                .await
                {
                    tracing::debug!("metrics: {e}");
                }
            });
            q.push_back((id, handle.abort_handle()));
        }
    });
    Ok(MetricsServer { addr, task })
}

/// Serves one request; `head_read` is called once its head is in (the
/// connection no longer counts as idle).
/// Reads an HTTP request head (up to its blank line, at most
/// [`MAX_HEAD`] bytes) within [`READ_TIMEOUT`]; `None` if the client was
/// too slow. Shared by the metrics server and the live page.
pub(crate) async fn read_head(conn: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(r) => r.map(|()| Some(head)),
        Err(_) => Ok(None),
    }
}

async fn handle(
    mut conn: TcpStream,
    metrics: &Metrics,
    head_read: impl FnOnce(),
) -> std::io::Result<()> {
    let read = read_head(&mut conn).await;
    head_read();
    let Some(head) = read? else {
        return Ok(());
    };
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    // Query strings are ignored, as Prometheus sends none we need.
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") | ("HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET", _) | ("HEAD", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".into(),
        ),
    };
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        resp.extend_from_slice(body.as_bytes());
    }
    conn.write_all(&resp).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::ocsf::tests::sample_alert;

    #[test]
    fn metrics_render_with_the_expected_names() {
        let m = Metrics::new().expect("metrics");
        m.event(Kind::Exec);
        m.alert(&sample_alert(Kind::Open));
        m.set_events_lost(7);
        m.set_events_lost(3); // never goes backwards
        let st = Arc::new(SinkStats::default());
        st.dropped.fetch_add(5, Ordering::Relaxed);
        m.watch_sinks(vec![("webhook".into(), st)]);
        let text = m.render();
        for want in [
            "agentguard_events_total{kind=\"exec\"} 1",
            "agentguard_events_lost_total 7",
            "agentguard_alerts_total{action=\"alert\",rule=\"shadow-read\",severity=\"high\"} 1",
            "agentguard_enforcement_actions_total{action=\"alert\",result=\"alerted\"} 1",
            "agentguard_alert_sink_drops_total{sink=\"webhook\"} 5",
            "agentguard_build_info{version=\"",
            "agentguard_policy_reloads_total 0",
            "agentguard_containers_watched 0",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
