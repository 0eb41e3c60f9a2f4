//! Outputs: where events and alerts leave the daemon. Every sink sits behind
//! a bounded queue drained by its own thread, so a slow reader can never
//! stall the event path: when the queue is full the record is dropped and
//! counted instead.
//!
//! The daemon builds one [`Outputs`] (usually with [`Outputs::from_config`])
//! and calls [`Outputs::send`] once per alert: the alert is serialized once
//! (native or OCSF JSON) and the bytes are shared by every sink.

pub mod jsonl;
pub mod metrics;
pub mod ocsf;
pub mod queue;
pub mod syslog;
pub mod ui;
pub mod webhook;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::alert::Alert;
pub use jsonl::SinkStats;

/// Records that may wait in a sink's queue unless its config says otherwise.
pub const DEFAULT_QUEUE: usize = 16384;

/// The JSON shape alerts are shipped in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The `Alert` struct as is (docs/alerts.md).
    #[default]
    Native,
    /// OCSF classes with the native alert under `unmapped` (docs/alerts.md).
    Ocsf,
}

/// Serializes an alert once, in `format`. None only if serialization fails
/// (it cannot for these types, but the caller must not panic over it).
pub fn encode(alert: &Alert, format: Format) -> Option<Arc<[u8]>> {
    let bytes = match format {
        Format::Native => serde_json::to_vec(alert).ok()?,
        Format::Ocsf => serde_json::to_vec(&ocsf::to_ocsf(alert, None)).ok()?,
    };
    Some(Arc::from(bytes))
}

/// One destination of the alert feed.
pub trait AlertSink: Send + Sync {
    /// The `sink` label of `agentguard_alert_sink_drops_total`.
    fn name(&self) -> &str;
    /// Queues one alert whose serialized form is `json`; never blocks.
    /// Returns false when it was dropped (and counted).
    fn send(&self, alert: &Alert, json: &Arc<[u8]>) -> bool;
    fn stats(&self) -> Arc<SinkStats>;
    /// Delivers what is queued (as far as the sink's own timeouts allow)
    /// and stops its thread.
    fn close(self: Box<Self>);
}

/// One entry of the `alerts:` list in the config file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// JSON lines on stdout.
    Stdout {
        #[serde(default)]
        queue: Option<usize>,
    },
    /// JSON lines in a file, rotated by size.
    File(jsonl::FileConfig),
    /// RFC 5424 syslog over UDP, TCP or a unix socket.
    Syslog(syslog::SyslogConfig),
    /// Batches POSTed as JSON arrays.
    Webhook(webhook::WebhookConfig),
}

impl SinkConfig {
    fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Stdout { .. } => "stdout",
            SinkConfig::File(_) => "file",
            SinkConfig::Syslog(_) => "syslog",
            SinkConfig::Webhook(_) => "webhook",
        }
    }
}

/// The fan-out the daemon calls once per alert.
pub struct Outputs {
    format: Format,
    sinks: Vec<Box<dyn AlertSink>>,
    sent: AtomicU64,
    encode_errors: AtomicU64,
    /// The live page (`--ui`), when served: it sees events too.
    ui: Option<Arc<ui::Hub>>,
}

impl Outputs {
    pub fn new(format: Format) -> Outputs {
        Outputs {
            format,
            sinks: Vec::new(),
            sent: AtomicU64::new(0),
            encode_errors: AtomicU64::new(0),
            ui: None,
        }
    }

    /// Starts one sink per entry. Sinks are named by their type, with `-2`,
    /// `-3` ... for repeats, in list order.
    pub fn from_config(sinks: &[SinkConfig], format: Format) -> anyhow::Result<Outputs> {
        use anyhow::Context as _;
        let mut out = Outputs::new(format);
        let mut seen: std::collections::BTreeMap<&str, usize> = Default::default();
        for cfg in sinks {
            let n = seen.entry(cfg.kind()).or_default();
            *n += 1;
            let name = if *n == 1 {
                cfg.kind().to_string()
            } else {
                format!("{}-{n}", cfg.kind())
            };
            let sink: Box<dyn AlertSink> = match cfg {
                SinkConfig::Stdout { queue } => Box::new(
                    jsonl::JsonlSink::stdout(name.clone(), queue.unwrap_or(DEFAULT_QUEUE))
                        .context("starting the stdout alert sink")?,
                ),
                SinkConfig::File(c) => Box::new(
                    jsonl::JsonlSink::file(name.clone(), c)
                        .with_context(|| format!("opening alert file {}", c.path.display()))?,
                ),
                SinkConfig::Syslog(c) => Box::new(
                    syslog::SyslogSink::spawn(name.clone(), c)
                        .context("starting the syslog alert sink")?,
                ),
                SinkConfig::Webhook(c) => Box::new(
                    webhook::WebhookSink::spawn(name.clone(), c)
                        .context("starting the webhook alert sink")?,
                ),
            };
            out.add(sink);
        }
        Ok(out)
    }

    pub fn add(&mut self, sink: Box<dyn AlertSink>) {
        self.sinks.push(sink);
    }

    /// Hooks the live page in: alerts reach it as one more sink, events
    /// through [`Outputs::observe`].
    pub fn set_ui(&mut self, hub: Arc<ui::Hub>) {
        self.add(Box::new(ui::UiAlerts::new(Arc::clone(&hub))));
        self.ui = Some(hub);
    }

    /// One event after identity, for the live page's timeline; never
    /// blocks, and costs one atomic load while no page is open.
    pub fn observe(&self, ev: &crate::event::Event) {
        if let Some(ui) = &self.ui {
            ui.event(ev);
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Ships one alert to every sink; never blocks. Returns how many sinks
    /// accepted it.
    pub fn send(&self, alert: &Alert) -> usize {
        if self.sinks.is_empty() {
            return 0;
        }
        let Some(json) = encode(alert, self.format) else {
            self.encode_errors.fetch_add(1, Ordering::Relaxed);
            return 0;
        };
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.sinks.iter().filter(|s| s.send(alert, &json)).count()
    }

    /// Alerts handed to [`Outputs::send`] and serialized.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// (sink name, its counters), for metrics and status.
    pub fn sink_stats(&self) -> Vec<(String, Arc<SinkStats>)> {
        self.sinks
            .iter()
            .map(|s| (s.name().to_string(), s.stats()))
            .collect()
    }

    /// Drains and stops every sink.
    pub fn close(self) {
        for s in self.sinks {
            s.close();
        }
    }
}
