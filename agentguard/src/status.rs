//! The status socket: the daemon publishes a snapshot of what it is doing
//! (probes, policies, containers, agents, counters, last reload error) and
//! `agentguard status` prints it.
//!
//! Protocol: connect, read one JSON object to EOF. The socket is mode 0600
//! and the server also checks the peer's uid (root or the daemon's own), so
//! only root reads what the daemon sees.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixListener;

pub use crate::config::DEFAULT_STATUS_SOCKET;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    pub name: String,
    pub rules: usize,
    /// `enforce`, `audit`, or both when its rules differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// What `agentguard status` shows. The daemon fills it and updates it in
/// place through a [`SharedStatus`]; fields are only ever added.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// When the daemon last refreshed this snapshot, RFC 3339 UTC.
    #[serde(default)]
    pub updated_at: String,
    /// Attached probe programs.
    #[serde(default)]
    pub probes: Vec<String>,
    #[serde(default)]
    pub policies: Vec<PolicyStatus>,
    #[serde(default)]
    pub containers: Vec<ContainerStatus>,
    #[serde(default)]
    pub agents: Vec<AgentStatus>,
    /// events, alerts, events_lost, sink drops ... by name.
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
    /// Subjects a taint rule took the network from, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tainted: Vec<crate::enforcement::TaintInfo>,
    /// What this host lets the daemon do, as probed and attached at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<serde_json::Value>,
    /// Rules whose action this host cannot carry out ("policy/rule: why").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degraded_rules: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload_error: Option<String>,
}

/// The daemon's handle on the published snapshot.
pub type SharedStatus = Arc<RwLock<Status>>;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Status {
    /// Version, pid and start time filled in.
    pub fn new() -> Status {
        let t = now();
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            started_at: t.clone(),
            updated_at: t,
            ..Default::default()
        }
    }

    pub fn shared(self) -> SharedStatus {
        Arc::new(RwLock::new(self))
    }

    /// Stamps `updated_at`; call after changing fields.
    pub fn touch(&mut self) {
        self.updated_at = now();
    }

    /// Human-readable form for `agentguard status`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "agentguard {} (pid {}), running since {}, updated {}",
            self.version, self.pid, self.started_at, self.updated_at
        );
        let _ = writeln!(
            s,
            "probes ({}): {}",
            self.probes.len(),
            self.probes.join(", ")
        );
        let _ = writeln!(s, "policies ({}):", self.policies.len());
        for p in &self.policies {
            let _ = write!(s, "  {} ({} rules)", p.name, p.rules);
            if let Some(f) = &p.file {
                let _ = write!(s, "  {f}");
            }
            s.push('\n');
        }
        if !self.degraded_rules.is_empty() {
            let _ = writeln!(
                s,
                "rules this host cannot carry out ({}):",
                self.degraded_rules.len()
            );
            for d in &self.degraded_rules {
                let _ = writeln!(s, "  {d}");
            }
        }
        match (&self.last_reload_error, &self.last_reload) {
            (Some(e), _) => {
                let _ = writeln!(s, "last reload FAILED: {e}");
            }
            (None, Some(t)) => {
                let _ = writeln!(s, "last reload: {t}");
            }
            (None, None) => {}
        }
        let _ = writeln!(s, "containers ({}):", self.containers.len());
        for c in &self.containers {
            let id: String = c.id.chars().take(12).collect();
            let _ = writeln!(
                s,
                "  {id}  {}  {}{}",
                c.name.as_deref().unwrap_or("-"),
                c.image.as_deref().unwrap_or("-"),
                c.agent
                    .as_deref()
                    .map(|a| format!("  agent={a}"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(s, "agents ({}):", self.agents.len());
        for a in &self.agents {
            let _ = writeln!(
                s,
                "  {}  pid {}  {}",
                a.name,
                a.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                a.container
                    .as_deref()
                    .map(|c| format!("container {}", c.chars().take(12).collect::<String>()))
                    .unwrap_or_else(|| "host".into())
            );
        }
        if !self.tainted.is_empty() {
            let _ = writeln!(s, "tainted (no network):");
            for t in &self.tainted {
                let _ = writeln!(
                    s,
                    "  {}: by {}/{} at {}{}{}",
                    t.subject,
                    t.policy,
                    t.rule,
                    t.since,
                    t.what
                        .as_ref()
                        .map_or_else(String::new, |w| format!(" ({w})")),
                    if t.enforced {
                        ""
                    } else {
                        " [not enforced on this host]"
                    }
                );
            }
        }
        if !self.counters.is_empty() {
            let _ = writeln!(s, "counters:");
            let w = self.counters.keys().map(|k| k.len()).max().unwrap_or(0);
            for (k, v) in &self.counters {
                let _ = writeln!(s, "  {k:<w$}  {v}");
            }
        }
        s
    }
}

/// The serving socket; removed from the file system when dropped.
pub struct StatusServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl StatusServer {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The daemon's effective uid (root in production; the test user in tests).
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Binds `path` (mode 0600) and serves snapshots of `status` on the current
/// tokio runtime. A stale socket file is replaced; a live one (another
/// daemon answering) is an error.
pub async fn serve(path: &Path, status: SharedStatus) -> std::io::Result<StatusServer> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            // Only root can reach the socket while it is being set up.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{}: another agentguard is serving status", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let me = euid();
    let task = tokio::spawn(async move {
        loop {
            let conn = match listener.accept().await {
                Ok((c, _)) => c,
                Err(e) => {
                    tracing::warn!("status: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let allowed = conn
                .peer_cred()
                .map(|c| c.uid() == 0 || c.uid() == me)
                .unwrap_or(false);
            if !allowed {
                continue; // dropping closes it
            }
            // Serialized under the read lock, written after it is released.
            let body = match status.read() {
                Ok(s) => serde_json::to_vec(&*s),
                Err(poisoned) => serde_json::to_vec(&*poisoned.into_inner()),
            };
            let Ok(mut body) = body else { continue };
            body.push(b'\n');
            tokio::spawn(async move {
                let mut conn = conn;
                let write = async {
                    conn.write_all(&body).await?;
                    conn.shutdown().await
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
            });
        }
    });
    Ok(StatusServer {
        path: path.to_path_buf(),
        task,
    })
}

/// Reads one snapshot from the daemon at `path`.
pub fn fetch(path: &Path) -> Result<Status> {
    let conn = std::os::unix::net::UnixStream::connect(path).with_context(|| {
        format!(
            "connecting to {} (is `agentguard run` running, and are you root?)",
            path.display()
        )
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    conn.take(64 << 20)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&buf)
        .with_context(|| format!("decoding the status from {}", path.display()))
}

/// `agentguard status` arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct StatusArgs {
    /// Machine-readable output (the snapshot as JSON).
    #[arg(long)]
    pub json: bool,
    /// The daemon's status socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATUS_SOCKET)]
    pub socket: PathBuf,
}

/// `agentguard status`: prints the running daemon's snapshot.
pub fn run_cli(args: StatusArgs) -> Result<()> {
    let status = fetch(&args.socket)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_everything() {
        let mut s = Status::new();
        s.probes = vec!["sys_enter_openat".into()];
        s.policies.push(PolicyStatus {
            name: "files".into(),
            rules: 4,
            mode: None,
            file: None,
        });
        s.agents.push(AgentStatus {
            name: "claude".into(),
            pid: Some(42),
            container: None,
        });
        s.counters.insert("alerts".into(), 3);
        s.last_reload_error = Some("files.yaml:3:1: bad".into());
        let text = s.render();
        for want in [
            "probes (1): sys_enter_openat",
            "files (4 rules)",
            "claude  pid 42  host",
            "alerts  3",
            "last reload FAILED: files.yaml:3:1: bad",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
    }
}
