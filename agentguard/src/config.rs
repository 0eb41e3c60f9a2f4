//! The daemon's configuration: a YAML file (default
//! `/etc/agentguard/config.yaml`) and the `run` command's flags.
//!
//! Merge rule ([`Config::resolve`]): defaults, then the file, then flags.
//! - A scalar flag given on the command line replaces the file's value.
//! - Alert sinks: if any sink flag names a destination (`--alerts-stdout`,
//!   `--alerts-file`, `--syslog`, `--webhook`), those sinks replace the file's
//!   whole `alerts:` list, so a one-off run can redirect output without
//!   editing the file. `--alerts-max-bytes`/`--alerts-keep` without
//!   `--alerts-file` adjust the file's `file:` sinks.
//! - `--agent` and `--agent-image` add to the file's `agents` and
//!   `agent_images` (they are "extra" names by nature).
//!
//! Unknown keys are refused, and every error names `file:line:col`.
//!
//! Size: about 660 lines of code (every setting's default, file key, flag and
//! check); the rest is its tests.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::identity::resolver::ImageAgent;
use crate::outputs::jsonl::{FileConfig, DEFAULT_KEEP, DEFAULT_MAX_BYTES};
use crate::outputs::syslog::{Facility, SyslogConfig, Target};
use crate::outputs::webhook::{Url, WebhookConfig};
use crate::outputs::{Format, SinkConfig};

pub const DEFAULT_PATH: &str = "/etc/agentguard/config.yaml";
pub const DEFAULT_POLICIES: &str = "/etc/agentguard/policies";
pub const DEFAULT_STATUS_SOCKET: &str = "/run/agentguard/status.sock";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `agentguard=debug,warn` ...
    /// (`AGENTGUARD_LOG` in the environment still wins, as for every command).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Which processes the daemon watches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum WatchMode {
    /// From the loaded policy: when every rule selects agents, `agents`;
    /// else every process, for the kinds some rule is about.
    #[default]
    Auto,
    /// Every process on the host, every kind, every record (no kernel
    /// prefilter).
    All,
    /// Agents and their descendants; other processes stream exec/fork/exit
    /// only, which identity needs to find new agents.
    Agents,
}

/// Ring buffer size: a power of two of at least one page (the kernel's rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct RingBufferBytes(pub u32);

impl TryFrom<u64> for RingBufferBytes {
    type Error = String;
    fn try_from(n: u64) -> Result<Self, String> {
        if n < 4096 || !n.is_power_of_two() || n > 1 << 30 {
            return Err(format!(
                "ring_buffer_bytes {n}: must be a power of two between 4096 and 1073741824"
            ));
        }
        Ok(RingBufferBytes(n as u32))
    }
}

impl From<RingBufferBytes> for u64 {
    fn from(r: RingBufferBytes) -> u64 {
        u64::from(r.0)
    }
}

/// Entries of a per-task kernel map: between 1 and 4194304.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct MapSize(pub u32);

impl TryFrom<u64> for MapSize {
    type Error = String;
    fn try_from(n: u64) -> Result<Self, String> {
        if n == 0 || n > 1 << 22 {
            return Err(format!(
                "map size {n}: must be between 1 and 4194304 entries"
            ));
        }
        Ok(MapSize(n as u32))
    }
}

impl From<MapSize> for u64 {
    fn from(m: MapSize) -> u64 {
        u64::from(m.0)
    }
}

/// Sizes of the kernel's per-task maps, for a node busier than the
/// defaults (README: sizes). A full map is counted and alerted, never
/// silent; the pinned enforcement maps keep their sizes (they outlive
/// the daemon).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelMaps {
    /// Processes with their own filter entry (agents and their trees).
    pub task_filter: Option<MapSize>,
    /// Threads in a file syscall (open, unlink, ...) at once.
    pub pending_file: Option<MapSize>,
    /// Threads in connect/sendto/sendmsg/socket at once.
    pub pending_net: Option<MapSize>,
    /// Threads in execve at once.
    pub pending_exec: Option<MapSize>,
    /// Threads in rename at once.
    pub pending_rename: Option<MapSize>,
}

impl KernelMaps {
    /// (eBPF object map name, entries) of each size set.
    pub fn sizes(&self) -> Vec<(&'static str, u32)> {
        [
            ("TASK_FILTER", self.task_filter),
            ("PENDING_FILE", self.pending_file),
            ("PENDING_NET", self.pending_net),
            ("PENDING_EXEC", self.pending_exec),
            ("PENDING_RENAME", self.pending_rename),
        ]
        .into_iter()
        .filter_map(|(n, s)| s.map(|s| (n, s.0)))
        // A prefiltered open keeps only its arguments (`OPEN_ARGS`) and
        // falls back to `PENDING_FILE` when that is full: one budget.
        .flat_map(|(n, s)| {
            let args = (n == "PENDING_FILE").then_some(("OPEN_ARGS", s));
            std::iter::once((n, s)).chain(args)
        })
        .collect()
    }
}

/// `agent_images:` is a YAML mapping `glob: agent`, kept in file order
/// (the first matching glob wins).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentImages(pub Vec<ImageAgent>);

impl Serialize for AgentImages {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for ia in &self.0 {
            m.serialize_entry(&ia.pattern, &ia.agent)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for AgentImages {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AgentImages;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of image glob to agent name")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<AgentImages, A::Error> {
                let mut v = Vec::new();
                while let Some((pattern, agent)) = m.next_entry::<String, String>()? {
                    crate::policy::rules::text_glob(&pattern).map_err(serde::de::Error::custom)?;
                    v.push(ImageAgent { pattern, agent });
                }
                Ok(AgentImages(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// `ui`'s address: `8080` (loopback), `127.0.0.1:8080`, `[::1]:8080`;
/// in the file a bare port may be a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UiAddr(pub SocketAddr);

impl UiAddr {
    pub fn parse(s: &str) -> Result<UiAddr, String> {
        crate::outputs::ui::parse_addr(s).map(UiAddr)
    }
}

impl Serialize for UiAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UiAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = UiAddr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port, IP:PORT or [IPv6]:PORT")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<UiAddr, E> {
                UiAddr::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<UiAddr, E> {
                UiAddr::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UiAddr, E> {
                UiAddr::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Which kernel mechanism enforces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// BPF-LSM where the kernel runs it, else tracepoints.
    #[default]
    Auto,
    /// Tracepoints only (kills at syscall entry), even where BPF-LSM works.
    Tracepoint,
}

/// The whole configuration. Every field has a default, so an empty file (or
/// none at the default path) is a valid configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of policy files (YAML and Rego).
    pub policies: PathBuf,
    /// Alert sinks; default: JSON lines on stdout. Each entry is a one-key
    /// mapping naming the sink type (`- file: {path: ...}`).
    #[serde(with = "serde_norway::with::singleton_map_recursive")]
    pub alerts: Vec<SinkConfig>,
    /// Ship alerts as OCSF objects instead of the native schema.
    pub ocsf: bool,
    /// Serve Prometheus metrics here (`GET /metrics`); none when absent.
    pub metrics_addr: Option<SocketAddr>,
    /// The status socket `agentguard status` reads (root only, mode 0600).
    pub status_socket: PathBuf,
    /// Serve the live page here (docs/ui.md); none when absent. A bare
    /// port means loopback.
    pub ui: Option<UiAddr>,
    /// Let `ui` be a non-loopback address (the page shows every agent's
    /// actions to whoever has the token).
    pub ui_allow_remote: bool,
    pub log: LogConfig,
    /// Docker API socket (default /var/run/docker.sock).
    pub docker_socket: Option<String>,
    /// containerd socket (default /run/containerd/containerd.sock).
    pub containerd_socket: Option<String>,
    /// Agent executable names recognized besides the built-in ones.
    pub agents: Vec<String>,
    /// Image glob -> agent name, for containers that carry no label.
    pub agent_images: AgentImages,
    /// Kernel ring buffer size; the sensor's default when absent.
    pub ring_buffer_bytes: Option<RingBufferBytes>,
    pub watch: WatchMode,
    /// Enforcement backend.
    pub backend: BackendChoice,
    /// Kernel map sizes.
    pub kernel_maps: KernelMaps,
    /// Refuse to start (and refuse reloads) when a rule asks for an action
    /// this host cannot carry out (e.g. a file `deny` without BPF-LSM).
    pub strict: bool,
    /// Flood isolation: records per second one subject (a container, a
    /// host session) may send to userspace on each CPU before its own are
    /// dropped in the kernel (and alerted as `flood`); 0: no quota.
    pub flood_quota: u32,
    /// Alerts of one rule, subject and object within this many ms are one
    /// alert (`group`: count, time span, pids); 0: one alert per event.
    pub alert_window_ms: u64,
    /// After an alert is sent, the same alert (rule, subject, object)
    /// again within this many ms is held and its repeats sent as one
    /// summary when the hold ends; 0: every repeat once its window closes.
    pub alert_repeat_ms: u64,
}

/// `alert_window_ms` unless configured: one agent tool call's syscalls
/// (several threads and processes) fall well within it.
pub const DEFAULT_ALERT_WINDOW_MS: u64 = 1000;

/// `alert_repeat_ms` unless configured: the same alert again within a
/// minute of the last is folded into one summary (a retry storm).
pub const DEFAULT_ALERT_REPEAT_MS: u64 = 60_000;

/// `flood_quota` unless configured: well above what a busy agent's rule-
/// relevant records come to (the prefilter keeps the rest in the kernel),
/// well below what the daemon takes in a second.
pub const DEFAULT_FLOOD_QUOTA: u32 = 20_000;

impl Default for Config {
    fn default() -> Self {
        Config {
            policies: PathBuf::from(DEFAULT_POLICIES),
            alerts: vec![SinkConfig::Stdout { queue: None }],
            ocsf: false,
            metrics_addr: None,
            status_socket: PathBuf::from(DEFAULT_STATUS_SOCKET),
            ui: None,
            ui_allow_remote: false,
            log: LogConfig::default(),
            docker_socket: None,
            containerd_socket: None,
            agents: Vec::new(),
            agent_images: AgentImages::default(),
            ring_buffer_bytes: None,
            watch: WatchMode::Auto,
            backend: BackendChoice::Auto,
            kernel_maps: KernelMaps::default(),
            strict: false,
            flood_quota: DEFAULT_FLOOD_QUOTA,
            alert_window_ms: DEFAULT_ALERT_WINDOW_MS,
            alert_repeat_ms: DEFAULT_ALERT_REPEAT_MS,
        }
    }
}

/// A configuration refused: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error has no position (unreadable file, flags).
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.reason
            )
        } else {
            write!(f, "{}: {}", self.file.display(), self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and checks one file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            reason: e.to_string(),
        })?;
        Config::parse(path, &src)
    }

    /// Parses `src` as if read from `path` (named in errors).
    pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigError> {
        // An empty (or comment-only) file is a valid, all-defaults config.
        if src.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#') || t == "---"
        }) {
            return Ok(Config::default());
        }
        let cfg: Config = serde_norway::from_str(src).map_err(|e| {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            ConfigError {
                file: path.to_path_buf(),
                line,
                column,
                reason: strip_location(&e.to_string()),
            }
        })?;
        cfg.check().map_err(|reason| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            reason,
        })?;
        Ok(cfg)
    }

    /// The file named by `--config`, or the default path when it exists,
    /// or the defaults; then the flags on top (see the module docs).
    pub fn resolve(flags: &RunFlags) -> Result<Config, ConfigError> {
        // The daemon's own config: only a file no one else can write.
        let trusted = |p: &Path| {
            crate::trust::check(p).map_err(|reason| ConfigError {
                file: p.to_path_buf(),
                line: 0,
                column: 0,
                reason,
            })?;
            Config::load(p)
        };
        let mut cfg = match &flags.config {
            Some(p) => trusted(p)?,
            None if Path::new(DEFAULT_PATH).exists() => trusted(Path::new(DEFAULT_PATH))?,
            None => Config::default(),
        };
        cfg.apply(flags).map_err(|reason| ConfigError {
            file: PathBuf::from("command line"),
            line: 0,
            column: 0,
            reason,
        })?;
        Ok(cfg)
    }

    /// Applies command-line overrides (see the module docs for the rule).
    pub fn apply(&mut self, f: &RunFlags) -> Result<(), String> {
        if let Some(p) = &f.policies {
            self.policies = p.clone();
        }
        let mut sinks = Vec::new();
        let dash = f.alerts.as_deref().is_some_and(|p| p == Path::new("-"));
        if f.alerts_stdout || dash {
            sinks.push(SinkConfig::Stdout { queue: None });
        }
        let shorthand = f.alerts.as_ref().filter(|_| !dash);
        for path in f.alerts_file.iter().chain(shorthand) {
            sinks.push(SinkConfig::File(FileConfig {
                path: path.clone(),
                max_bytes: f.alerts_max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
                keep: f.alerts_keep.unwrap_or(DEFAULT_KEEP),
                queue: None,
            }));
        }
        if let Some(addr) = &f.syslog {
            sinks.push(SinkConfig::Syslog(SyslogConfig {
                address: Target::try_from(addr.clone())?,
                facility: match &f.syslog_facility {
                    Some(s) => Facility::try_from(s.clone())?,
                    None => Facility::default(),
                },
                message: Default::default(),
                queue: None,
            }));
        }
        if let Some(url) = &f.webhook {
            let mut w = WebhookConfig::new(Url::try_from(url.clone())?);
            w.token_file = f.webhook_token_file.clone();
            if let Some(n) = f.webhook_batch_size {
                w.batch_size = n;
            }
            if let Some(ms) = f.webhook_batch_delay_ms {
                w.batch_delay_ms = ms;
            }
            sinks.push(SinkConfig::Webhook(w));
        }
        if !sinks.is_empty() {
            self.alerts = sinks;
        } else {
            for s in &mut self.alerts {
                if let SinkConfig::File(fc) = s {
                    if let Some(n) = f.alerts_max_bytes {
                        fc.max_bytes = n;
                    }
                    if let Some(k) = f.alerts_keep {
                        fc.keep = k;
                    }
                }
            }
        }
        if let Some(o) = f.ocsf {
            self.ocsf = o;
        }
        if let Some(a) = f.metrics_addr {
            self.metrics_addr = Some(a);
        }
        if let Some(p) = &f.status_socket {
            self.status_socket = p.clone();
        }
        if let Some(a) = f.ui {
            self.ui = Some(a);
        }
        if f.ui_allow_remote {
            self.ui_allow_remote = true;
        }
        if let Some(a) = self.ui {
            crate::outputs::ui::check_addr(a.0, self.ui_allow_remote)?;
        }
        if let Some(l) = &f.log_level {
            self.log.level = l.clone();
        }
        if let Some(s) = &f.docker_socket {
            self.docker_socket = Some(s.clone());
        }
        if let Some(s) = &f.containerd_socket {
            self.containerd_socket = Some(s.clone());
        }
        for a in &f.agent {
            if !self.agents.contains(a) {
                self.agents.push(a.clone());
            }
        }
        for spec in &f.agent_image {
            let (pattern, agent) = spec
                .split_once('=')
                .filter(|(p, a)| !p.is_empty() && !a.is_empty())
                .ok_or_else(|| format!("--agent-image {spec:?}: expected GLOB=AGENT"))?;
            crate::policy::rules::text_glob(pattern)
                .map_err(|e| format!("--agent-image {spec:?}: {e}"))?;
            self.agent_images.0.push(ImageAgent {
                pattern: pattern.into(),
                agent: agent.into(),
            });
        }
        if let Some(n) = f.ring_buffer_bytes {
            self.ring_buffer_bytes = Some(RingBufferBytes::try_from(n)?);
        }
        if let Some(w) = f.watch {
            self.watch = w;
        }
        if f.strict {
            self.strict = true;
        }
        if let Some(q) = f.flood_quota {
            self.flood_quota = q;
        }
        if let Some(w) = f.alert_repeat_ms {
            self.alert_repeat_ms = w;
        }
        if let Some(w) = f.alert_window_ms {
            self.alert_window_ms = w;
        }
        if let Some(b) = f.backend {
            self.backend = b;
        }
        self.check()
    }

    /// Checks that span fields (the per-field ones run while parsing).
    fn check(&self) -> Result<(), String> {
        let mut files = BTreeSet::new();
        for s in &self.alerts {
            match s {
                SinkConfig::File(f) if !files.insert(f.path.clone()) => {
                    return Err(format!("alerts: two file sinks write {}", f.path.display()));
                }
                SinkConfig::Webhook(w) if w.batch_size == 0 => {
                    return Err("alerts: webhook batch_size must be at least 1".into());
                }
                _ => {}
            }
        }
        if self.log.level.trim().is_empty() {
            return Err("log.level is empty".into());
        }
        if let Some(a) = self.ui {
            crate::outputs::ui::check_addr(a.0, self.ui_allow_remote)?;
        }
        Ok(())
    }

    pub fn format(&self) -> Format {
        if self.ocsf {
            Format::Ocsf
        } else {
            Format::Native
        }
    }

    /// The built-in agent names plus `agents`, without repeats.
    pub fn agent_names(&self) -> Vec<String> {
        let mut v: Vec<String> = crate::identity::resolver::DEFAULT_AGENTS
            .iter()
            .map(|s| s.to_string())
            .collect();
        for a in &self.agents {
            if !v.contains(a) {
                v.push(a.clone());
            }
        }
        v
    }
}

/// serde_norway appends " at line L column C"; the location is printed in
/// front instead.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i)
            if msg[i + 9..]
                .chars()
                .all(|c| c.is_ascii_digit() || c == ' ' || "column".contains(c)) =>
        {
            msg[..i].to_string()
        }
        _ => msg.to_string(),
    }
}

/// The `run` command's flags, one per config option; the daemon flattens
/// them (`#[command(flatten)] flags: RunFlags`) and calls
/// [`Config::resolve`]. Absent flags leave the file's values alone.
/// (The log format is the global `--log-format` flag.)
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RunFlags {
    /// Config file [default: /etc/agentguard/config.yaml, if present].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Policy directory [default: /etc/agentguard/policies].
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Alerts as JSON lines on stdout (replaces the file's alert sinks, as
    /// do --alerts-file, --syslog and --webhook).
    #[arg(long)]
    pub alerts_stdout: bool,
    /// Alerts as JSON lines in FILE, rotated by size.
    #[arg(long, value_name = "FILE")]
    pub alerts_file: Option<PathBuf>,
    /// Shorthand: `--alerts -` is --alerts-stdout, `--alerts FILE` is
    /// --alerts-file FILE.
    #[arg(long, value_name = "FILE|-")]
    pub alerts: Option<PathBuf>,
    /// Rotate the alert file before it passes N bytes (0: never) [default: 100 MiB].
    #[arg(long, value_name = "N")]
    pub alerts_max_bytes: Option<u64>,
    /// Rotated alert files kept (FILE.1 .. FILE.N) [default: 5].
    #[arg(long, value_name = "N")]
    pub alerts_keep: Option<u32>,
    /// Alerts to syslog (RFC 5424): udp://HOST:PORT, tcp://HOST:PORT, unix:///dev/log, unix-stream:///PATH.
    #[arg(long, value_name = "ADDR")]
    pub syslog: Option<String>,
    /// Syslog facility name or number [default: local0].
    #[arg(long, value_name = "FACILITY")]
    pub syslog_facility: Option<String>,
    /// POST alert batches (JSON arrays) to this http(s) URL.
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// File holding the webhook's bearer token.
    #[arg(long, value_name = "FILE")]
    pub webhook_token_file: Option<PathBuf>,
    /// Alerts per webhook POST at most [default: 100].
    #[arg(long, value_name = "N")]
    pub webhook_batch_size: Option<usize>,
    /// Longest an alert waits for its webhook batch to fill, ms [default: 1000].
    #[arg(long, value_name = "MS")]
    pub webhook_batch_delay_ms: Option<u64>,
    /// Ship alerts as OCSF objects (--ocsf=false to turn off what the file turned on).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub ocsf: Option<bool>,
    /// Serve Prometheus metrics on ADDR (e.g. 0.0.0.0:9477).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Status socket [default: /run/agentguard/status.sock].
    #[arg(long, value_name = "PATH")]
    pub status_socket: Option<PathBuf>,
    /// Serve the live page on ADDR: PORT (loopback), IP:PORT or
    /// [IPv6]:PORT; its token is logged at start and written to ui.token
    /// next to the status socket (docs/ui.md).
    #[arg(long, value_name = "ADDR", value_parser = UiAddr::parse)]
    pub ui: Option<UiAddr>,
    /// Allow --ui on a non-loopback address.
    #[arg(long)]
    pub ui_allow_remote: bool,
    /// Log filter (info, debug, agentguard=debug ...).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Docker API socket.
    #[arg(long, value_name = "PATH")]
    pub docker_socket: Option<String>,
    /// containerd socket.
    #[arg(long, value_name = "PATH")]
    pub containerd_socket: Option<String>,
    /// Extra agent executable name (repeatable; adds to the file's).
    #[arg(long, value_name = "NAME")]
    pub agent: Vec<String>,
    /// Image glob that names an agent, GLOB=AGENT (repeatable; adds to the file's).
    #[arg(long, value_name = "GLOB=AGENT")]
    pub agent_image: Vec<String>,
    /// Kernel ring buffer size in bytes (power of two).
    #[arg(long, value_name = "BYTES")]
    pub ring_buffer_bytes: Option<u64>,
    /// Which processes to watch.
    #[arg(long, value_enum)]
    pub watch: Option<WatchMode>,
    /// Enforcement backend (auto: BPF-LSM where the kernel runs it).
    #[arg(long, value_enum)]
    pub backend: Option<BackendChoice>,
    /// Refuse to start, and refuse reloads, while a rule asks for an action
    /// this host cannot carry out (`agentguard status` lists them).
    #[arg(long)]
    pub strict: bool,
    /// Records per second one subject may send on each CPU before its own
    /// are dropped in the kernel and a `flood` alert names it (0: off).
    #[arg(long, value_name = "N")]
    pub flood_quota: Option<u32>,
    /// Fold alerts of one rule, subject and object within this many ms
    /// into one (0: one alert per event).
    #[arg(long, value_name = "MS")]
    pub alert_window_ms: Option<u64>,
    /// Hold the same alert again for this many ms after it was sent, and
    /// send its repeats as one summary then (0: every repeat at once).
    #[arg(long, value_name = "MS")]
    pub alert_repeat_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/agentguard/config.yaml"), src)
    }

    #[test]
    fn full_file_parses() {
        let cfg = parse(
            r#"
policies: /srv/policies
alerts:
  - stdout: {}
  - file:
      path: /var/log/agentguard/alerts.jsonl
      max_bytes: 1048576
      keep: 3
  - syslog:
      address: udp://127.0.0.1:514
      facility: auth
  - webhook:
      url: https://siem.example/hook
      token_file: /run/secrets/token
      batch_size: 50
ocsf: true
metrics_addr: 0.0.0.0:9477
status_socket: /run/ag.sock
log: { format: json, level: debug }
docker_socket: /var/run/docker.sock
containerd_socket: /run/containerd/containerd.sock
agents: [mybot]
agent_images:
  "ghcr.io/acme/claude-*": claude
  "*/aider:*": aider
ring_buffer_bytes: 33554432
watch: agents
kernel_maps: { task_filter: 131072, pending_file: 32768 }
"#,
        )
        .expect("parses");
        assert_eq!(cfg.policies, PathBuf::from("/srv/policies"));
        assert_eq!(cfg.alerts.len(), 4);
        assert!(cfg.ocsf);
        assert_eq!(cfg.format(), Format::Ocsf);
        assert_eq!(
            cfg.metrics_addr,
            Some("0.0.0.0:9477".parse().expect("addr"))
        );
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert_eq!(cfg.agent_images.0[0].agent, "claude");
        assert_eq!(cfg.agent_images.0[1].pattern, "*/aider:*");
        assert_eq!(cfg.ring_buffer_bytes, Some(RingBufferBytes(1 << 25)));
        assert_eq!(cfg.watch, WatchMode::Agents);
        assert_eq!(
            cfg.kernel_maps.sizes(),
            vec![
                ("TASK_FILTER", 131072),
                ("PENDING_FILE", 32768),
                ("OPEN_ARGS", 32768)
            ]
        );
        assert!(cfg.agent_names().contains(&"mybot".to_string()));
        match &cfg.alerts[2] {
            SinkConfig::Syslog(s) => assert_eq!(s.facility, Facility(4)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(parse("# nothing\n").expect("ok"), Config::default());
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let e = parse("policies: /p\nmetrics_adr: 1.2.3.4:5\n").expect_err("refused");
        assert_eq!(e.line, 2, "{e}");
        assert!(
            e.to_string().starts_with("/etc/agentguard/config.yaml:2:"),
            "{e}"
        );
        assert!(e.reason.contains("metrics_adr"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_with_their_line() {
        let e = parse("alerts:\n  - syslog:\n      address: http://x:1\n").expect_err("refused");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.reason.contains("udp://"), "{e}");
        let e = parse("kernel_maps: { pending_exec: 0 }\n").expect_err("refused");
        assert!(e.reason.contains("between 1 and 4194304"), "{e}");
        let e = parse("kernel_maps: { pending_sockets: 10 }\n").expect_err("refused");
        assert!(e.reason.contains("pending_sockets"), "{e}");
        let e = parse("ring_buffer_bytes: 1000\n").expect_err("refused");
        assert_eq!(e.line, 1, "{e}");
        let e =
            parse("alerts:\n  - file:\n      path: /a\n      max_byte: 3\n").expect_err("refused");
        assert_eq!(e.line, 4, "{e}");
        let e = parse("watch: some\n").expect_err("refused");
        assert!(e.reason.contains("all"), "{e}");
        // Agent image patterns are the policy's text globs: one dialect.
        let e = parse("agent_images:\n  \"acme/[agent\": acme\n").expect_err("refused");
        assert!(e.reason.contains("bad glob"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let mut cfg = parse(
            "alerts:\n  - file: {path: /a.jsonl}\nmetrics_addr: 127.0.0.1:1\nagents: [x]\nocsf: true\n",
        )
        .expect("ok");
        let flags = RunFlags {
            alerts_max_bytes: Some(10),
            metrics_addr: Some("127.0.0.1:2".parse().expect("addr")),
            agent: vec!["y".into()],
            ocsf: Some(false),
            ..Default::default()
        };
        cfg.apply(&flags).expect("applies");
        assert_eq!(cfg.metrics_addr, Some("127.0.0.1:2".parse().expect("addr")));
        assert_eq!(cfg.agents, vec!["x".to_string(), "y".to_string()]);
        assert!(!cfg.ocsf);
        match &cfg.alerts[..] {
            [SinkConfig::File(f)] => assert_eq!(f.max_bytes, 10),
            other => panic!("{other:?}"),
        }
        // A sink named on the command line replaces the file's list.
        let flags = RunFlags {
            syslog: Some("unix:///dev/log".into()),
            ..Default::default()
        };
        cfg.apply(&flags).expect("applies");
        assert!(matches!(&cfg.alerts[..], [SinkConfig::Syslog(_)]));
        // --alerts: `-` is stdout, anything else a file.
        let flags = RunFlags {
            alerts: Some("-".into()),
            ..Default::default()
        };
        cfg.apply(&flags).expect("applies");
        assert!(matches!(&cfg.alerts[..], [SinkConfig::Stdout { .. }]));
        let flags = RunFlags {
            alerts: Some("/var/log/a.jsonl".into()),
            ..Default::default()
        };
        cfg.apply(&flags).expect("applies");
        match &cfg.alerts[..] {
            [SinkConfig::File(f)] => assert_eq!(f.path, Path::new("/var/log/a.jsonl")),
            other => panic!("{other:?}"),
        }
        let bad = RunFlags {
            agent_image: vec!["noequals".into()],
            ..Default::default()
        };
        assert!(cfg.apply(&bad).is_err());
    }

    #[test]
    fn run_flags_parse_with_clap() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            f: RunFlags,
        }
        let t = T::try_parse_from([
            "t",
            "--policies",
            "/p",
            "--ocsf",
            "--watch",
            "agents",
            "--agent-image",
            "img*=claude",
            "--metrics-addr",
            "127.0.0.1:9477",
        ])
        .expect("parses");
        assert_eq!(t.f.ocsf, Some(true));
        assert_eq!(t.f.watch, Some(WatchMode::Agents));
        let cfg = Config::resolve(&RunFlags {
            config: Some(PathBuf::from("/nonexistent/agentguard.yaml")),
            ..t.f
        });
        assert!(cfg.is_err());
    }

    #[test]
    fn ui_is_loopback_unless_a_remote_address_is_meant() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        assert_eq!(parse("ui: 8080\n").expect("port").ui, Some(UiAddr(lo)));
        assert_eq!(
            parse("ui: \"127.0.0.1:8080\"\n").expect("addr").ui,
            Some(UiAddr(lo))
        );
        let e = parse("ui: 0.0.0.0:8080\n").expect_err("remote refused");
        assert!(e.reason.contains("ui_allow_remote"), "{e}");
        let cfg = parse("ui: 0.0.0.0:8080\nui_allow_remote: true\n").expect("meant");
        assert_eq!(cfg.ui, Some(UiAddr("0.0.0.0:8080".parse().expect("addr"))));
        assert!(parse("ui: nowhere\n").is_err());
        // Flags: the same rule.
        let mut cfg = Config::default();
        let flags = RunFlags {
            ui: Some(UiAddr::parse("10.1.2.3:80").expect("addr")),
            ..Default::default()
        };
        assert!(cfg.apply(&flags).is_err());
        let flags = RunFlags {
            ui_allow_remote: true,
            ..flags
        };
        cfg.apply(&flags).expect("allowed");
        assert_eq!(cfg.ui.map(|a| a.0.port()), Some(80));
        let mut cfg = Config::default();
        cfg.apply(&RunFlags {
            ui: Some(UiAddr::parse("9000").expect("port")),
            ..Default::default()
        })
        .expect("loopback");
        assert_eq!(
            cfg.ui,
            Some(UiAddr("127.0.0.1:9000".parse().expect("addr")))
        );
    }
}
