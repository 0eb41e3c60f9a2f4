//! `soak`: `agentguard run` with the default policy pack under a mixed load
//! for minutes, watching its memory, event rate, losses and alerts.
//!
//! The load, all at once until the end:
//! - host: every second a loadgen (openat + close, refused connects to a
//!   closed loopback port), a few `/bin/true` execs and one connect of its
//!   own to a closed port of the Docker bridge's gateway, which must be
//!   refused, not denied (it is no agent);
//! - an agent container (label `agentguard.io/agent=soak`) doing the same
//!   (this binary's loadgen, run by busybox chrooted into the host's root,
//!   as `bench overhead` runs it, but from /run/host so the kernel
//!   prefilter lets its opens through to the daemon), replaced every
//!   [`AGENT_LOAD_SECS`];
//! - short-lived agent containers started one after the other; every
//!   [`ALERT_EVERY_NTH`]th writes and reads `/root/.ssh/id_rsa` and `/.env`,
//!   which the pack's `credential-read` and `dotenv-read` rules alert on;
//! - policy reloads: the daemon reads a copy of the pack (root-owned, 0755 /
//!   0644, as it requires) and one of its files changes now and then;
//! - one Docker engine restart half-way through.
//!
//! Every [`SAMPLE_EVERY`] it samples the daemon's RSS, its metrics endpoint
//! and its status socket, and prints a line; at the end a summary and a
//! `SOAK_JSON {...}` line for tracking (the whole report goes to
//! target/soak.json, the daemon's log and alerts to
//! target/soak-agentguard.log and target/soak-alerts.jsonl). It
//! fails if the daemon died, if no alert came from a container started
//! after the Docker restart (it did not re-attach), if a host process's
//! connect was denied or an alert named no agent (the pack's rules all
//! select agents), or, in runs of at least
//! [`JUDGE_MINS`] minutes, if its RSS grew by more than [`GROWTH_PCT`] % and
//! [`GROWTH_MB`] MB from the end of the first minute to the end.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde::Serialize;

use crate::bench::{
    check_flags, check_interrupted, install_sigint_handler, kernel_release, mb, start_daemon,
    unix_time, write_results, Loadgen, Monitor, WorkDir, AGENT_IMAGE,
};
use crate::setup::{output, Setup};
use crate::{agentguard_bin, target_dir};

/// The agent containers' label, and the agent name the alerts must carry.
const AGENT_LABEL: &str = "agentguard.io/agent=soak";
const AGENT_NAME: &str = "soak";
/// One sample (RSS, metrics, status) and one printed line this often.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The RSS growth is measured from the first sample at or after this.
const FIRST_MINUTE: Duration = Duration::from_secs(60);
/// Each load cycle (host and agent): this many opens, refused connects and
/// execs of /bin/true, then a pause of [`LOAD_PAUSE`].
const LOAD_OPENS: u64 = 2000;
const LOAD_CONNECTS: u64 = 200;
const LOAD_EXECS: u64 = 20;
const LOAD_PAUSE: Duration = Duration::from_secs(1);
/// Where the agent load container has the host's root (see `Ctx::agent_load`).
const AGENT_ROOT: &str = "/run/host";
/// How long one agent load container runs before the next replaces it.
const AGENT_LOAD_SECS: u64 = 30;
/// Pause between two short-lived agent containers.
const CHURN_PAUSE: Duration = Duration::from_secs(2);
/// Every Nth short-lived container reads credentials (alerts).
const ALERT_EVERY_NTH: u64 = 2;
/// The script of an alerting container: a key and a .env written, then
/// read (each open alerts). The sleep lets the daemon learn the container
/// from Docker first (its events are held only 250 ms for that).
const ALERT_SCRIPT: &str = "sleep 1; busybox mkdir -p /root/.ssh; \
    echo key > /root/.ssh/id_rsa; busybox cat /root/.ssh/id_rsa > /dev/null; \
    echo A=1 > /.env; busybox cat /.env > /dev/null";
/// The script of a quiet one: started, an exec, stopped.
const QUIET_SCRIPT: &str = "sleep 1; busybox true";
/// Policy reloads this often (shorter in short runs, see [`reload_every`]).
const RELOAD_EVERY: Duration = Duration::from_secs(30);
/// How long to wait for dockerd to stop after SIGTERM.
const DOCKERD_STOP_WAIT: Duration = Duration::from_secs(60);
/// RSS growth from minute 1 to the end that fails the run, judged only in
/// runs of at least JUDGE_MINS minutes: both limits must be passed.
const GROWTH_PCT: f64 = 20.0;
const GROWTH_MB: f64 = 5.0;
const JUDGE_MINS: u64 = 10;
/// The daemon's housekeeping runs every second (status, metrics of the
/// kernel's counters, policy reloads): waited before the first and the last
/// sample.
const SETTLE: Duration = Duration::from_secs(2);
/// Timeouts of one metrics scrape and one `agentguard status`.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Args)]
pub struct SoakArgs {
    /// How long to run, in minutes. RSS growth is judged from 10 minutes on.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    mins: u64,
    /// How long to run, in seconds, instead of --mins (short runs, the smoke test).
    #[arg(long, conflicts_with = "mins", value_parser = clap::value_parser!(u64).range(20..))]
    secs: Option<u64>,
    /// The agentguard binary to run. Default: target/release/agentguard,
    /// built first (`cargo build --release -p agentguard`); with this option
    /// nothing is built.
    #[arg(long, value_name = "PATH")]
    agentguard: Option<PathBuf>,
}

impl SoakArgs {
    fn duration(&self) -> Duration {
        match self.secs {
            Some(s) => Duration::from_secs(s),
            None => Duration::from_secs(self.mins * 60),
        }
    }
}

/// Reloads about six times in a short run, every [`RELOAD_EVERY`] in a long one.
fn reload_every(duration: Duration) -> Duration {
    (duration / 6).clamp(Duration::from_secs(5), RELOAD_EVERY)
}

/// What the load workers did, shared with the sampler.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    host_cycles: AtomicU64,
    host_errors: AtomicU64,
    /// Connects of this (host) process to the Docker bridge's gateway, and
    /// how many of them were denied (see [`host_connect_denied`]).
    host_probes: AtomicU64,
    host_denied: AtomicU64,
    agent_load_started: AtomicU64,
    agent_load_failed: AtomicU64,
    churn_started: AtomicU64,
    churn_failed: AtomicU64,
    alert_containers: AtomicU64,
    /// Sequence number of the next short-lived container (in its name).
    churn_seq: AtomicU64,
    /// Failures of container runs while dockerd was being restarted
    /// (expected: the restart stops them); counted in the *_failed too.
    failed_in_restart: AtomicU64,
    reloads_requested: AtomicU64,
    docker_down: AtomicBool,
    restart: Mutex<Option<Restart>>,
    /// The first error of each worker, for the summary.
    errors: Mutex<BTreeMap<&'static str, String>>,
    /// Lines for the sampler to print with its next line.
    notes: Mutex<Vec<String>>,
    /// Other `agentguard run` daemons seen during the soak (a test run in
    /// parallel): their load and their enforcement mix with ours.
    others: Mutex<std::collections::BTreeSet<u32>>,
}

impl Load {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps `d` in small steps; false if told to stop meanwhile.
    fn nap(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if self.stopped() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100).min(end - Instant::now()));
        }
        !self.stopped()
    }

    fn error(&self, worker: &'static str, e: &anyhow::Error) {
        if let Ok(mut errors) = self.errors.lock() {
            errors.entry(worker).or_insert_with(|| format!("{e:#}"));
        }
    }

    fn note(&self, text: String) {
        eprintln!("xtask: soak: {text}");
        if let Ok(mut notes) = self.notes.lock() {
            notes.push(text);
        }
    }

    fn take_notes(&self) -> Vec<String> {
        self.notes
            .lock()
            .map(|mut n| std::mem::take(&mut *n))
            .unwrap_or_default()
    }

    /// A container run failed: counted, and kept as the worker's error
    /// unless dockerd was being restarted.
    fn container_failed(&self, worker: &'static str, counter: &AtomicU64, e: &anyhow::Error) {
        counter.fetch_add(1, Ordering::Relaxed);
        if self.docker_down.load(Ordering::SeqCst) {
            self.failed_in_restart.fetch_add(1, Ordering::Relaxed);
        } else {
            self.error(worker, e);
        }
    }
}

/// The Docker engine restart.
#[derive(Clone, Debug, Serialize)]
struct Restart {
    /// Seconds into the soak when dockerd was sent SIGTERM.
    at_s: f64,
    /// Seconds until the new engine answered; None if it failed.
    took_s: Option<f64>,
    /// Short-lived containers with this sequence number or higher were
    /// started by the new engine.
    first_seq_after: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// One sample.
#[derive(Clone, Debug, Default, Serialize)]
struct Sample {
    /// Seconds since the daemon was ready.
    t_s: f64,
    rss_kb: u64,
    /// From the metrics endpoint; None when the scrape failed.
    events: Option<u64>,
    events_per_s: Option<f64>,
    /// Events by kind (`agentguard_events_total{kind}`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    by_kind: BTreeMap<String, u64>,
    /// Records of guarded processes the kernel kept (no rule could match).
    prefiltered: Option<u64>,
    lost: Option<u64>,
    alerts_raised: Option<u64>,
    sink_drops: Option<u64>,
    reloads: Option<u64>,
    reload_failures: Option<u64>,
    map_full: Option<u64>,
    containers_watched: Option<u64>,
    /// Lines in the alert file.
    alert_lines: u64,
    /// From `agentguard status --json`; None when it did not answer.
    docker_connected: Option<bool>,
    tainted: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

/// RSS from the end of the first minute to the end.
#[derive(Clone, Debug, Serialize, PartialEq)]
struct Growth {
    from_t_s: f64,
    from_kb: u64,
    to_kb: u64,
    mb: f64,
    pct: f64,
    /// Whether the run was long enough to judge it.
    judged: bool,
    too_much: bool,
}

/// RSS growth between the first sample at or after [`FIRST_MINUTE`] and
/// the last; judged when the run lasted at least [`JUDGE_MINS`] minutes.
fn growth(samples: &[Sample], duration: Duration) -> Option<Growth> {
    let from = samples
        .iter()
        .find(|s| s.t_s >= FIRST_MINUTE.as_secs_f64())?;
    let to = samples.last()?;
    let mb_grown = mb(to.rss_kb) - mb(from.rss_kb);
    let pct = if from.rss_kb == 0 {
        0.0
    } else {
        100.0 * (to.rss_kb as f64 - from.rss_kb as f64) / from.rss_kb as f64
    };
    let judged = duration >= Duration::from_secs(JUDGE_MINS * 60);
    Some(Growth {
        from_t_s: from.t_s,
        from_kb: from.rss_kb,
        to_kb: to.rss_kb,
        mb: mb_grown,
        pct,
        judged,
        too_much: judged && pct > GROWTH_PCT && mb_grown > GROWTH_MB,
    })
}

/// The alerts in the file, by rule, and those from short-lived containers
/// the new engine started (named `{prefix}{seq}`, seq >= `first_seq`),
/// tagged with the soak agent.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
struct AlertCounts {
    total: u64,
    by_rule: BTreeMap<String, u64>,
    after_restart: u64,
    /// Alerts about a process that is no agent: every rule of the pack
    /// selects agents, so these are the daemon's mistakes (the daemon's
    /// own `policy-reload*` alerts excluded).
    not_agent: u64,
    /// Alerts about agents other than the soak's.
    other_agents: u64,
    /// Lines that were not alert JSON.
    unreadable: u64,
}

fn count_alerts(text: &str, prefix: &str, first_seq: Option<u64>) -> AlertCounts {
    let mut c = AlertCounts::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        c.total += 1;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            c.unreadable += 1;
            continue;
        };
        let rule = v["decision"]["rule"].as_str().unwrap_or("?").to_owned();
        let id = &v["event"]["identity"];
        let agent = &id["agent"]["name"];
        // The daemon's own `policy-reload*` alerts are about no process.
        if !rule.starts_with("policy-reload") {
            if agent.is_null() {
                c.not_agent += 1;
            } else if agent != AGENT_NAME {
                c.other_agents += 1;
            }
        }
        *c.by_rule.entry(rule).or_default() += 1;
        let seq = id["container"]["info"]["name"]
            .as_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.parse::<u64>().ok());
        if let (Some(seq), Some(first)) = (seq, first_seq) {
            if seq >= first && id["agent"]["name"] == AGENT_NAME {
                c.after_restart += 1;
            }
        }
    }
    c
}

/// The sum of every series of metric `name` in a Prometheus text scrape;
/// None if there is none.
fn metric_sum(text: &str, name: &str) -> Option<u64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        let value = rest.rsplit(' ').next().unwrap_or_default();
        if let Ok(v) = value.parse::<f64>() {
            // Counters and gauges here are whole, non-negative numbers.
            *found.get_or_insert(0) += v.max(0.0) as u64;
        }
    }
    found
}

/// The series of metric `name` by the value of its label `label`.
fn metric_by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, u64> {
    let key = format!("{label}=\"");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Some(v) = labels
            .split(',')
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|v| v.strip_suffix('"'))
        else {
            continue;
        };
        if let Ok(n) = value.trim().parse::<f64>() {
            *out.entry(v.to_owned()).or_default() += n.max(0.0) as u64;
        }
    }
    out
}

/// `GET /metrics` from `addr`; the body.
fn scrape(addr: &str) -> Result<String> {
    let mut conn = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    conn.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    conn.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp)
        .with_context(|| format!("reading the scrape of {addr}"))?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP head in the scrape of {addr}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "{addr}/metrics answered {:?}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_owned())
}

/// `agentguard status --json` of the daemon at `socket`, killed after
/// [`SCRAPE_TIMEOUT`].
fn status(bin: &Path, socket: &Path) -> Result<serde_json::Value> {
    let mut child = Command::new(bin)
        .args(["status", "--json", "--socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting agentguard status")?;
    let deadline = Instant::now() + SCRAPE_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("agentguard status did not answer in {SCRAPE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    if !status.success() {
        bail!("agentguard status failed ({status})");
    }
    serde_json::from_str(&out).context("agentguard status --json printed no JSON")
}

/// The default Docker bridge's gateway: an address of this machine that
/// is not loopback.
fn bridge_gateway() -> Option<Ipv4Addr> {
    let out = Command::new("docker")
        .args(["network", "inspect", "bridge", "--format"])
        .arg("{{range .IPAM.Config}}{{.Gateway}} {{end}}")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|a| a.parse().ok())
}

/// Whether a connect of this host process (no agent) to a closed port of
/// `gw` was denied (EPERM) instead of refused: every rule of the pack
/// selects agents, so a denial means the daemon applied an agent's network
/// rules to a host process.
fn host_connect_denied(gw: Ipv4Addr) -> Result<bool> {
    let port = TcpListener::bind((gw, 0))
        .and_then(|l| l.local_addr())
        .with_context(|| format!("binding {gw}:0"))?
        .port();
    match TcpStream::connect_timeout(&(gw, port).into(), Duration::from_secs(2)) {
        Ok(_) => bail!("{gw}:{port} accepted a connection: something listens there now"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(true),
        Err(e) => Err(e).with_context(|| format!("connecting to {gw}:{port}")),
    }
}

/// A loopback address nothing listens on now, for the metrics endpoint.
fn free_loopback_addr() -> Result<String> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// A copy of the pack's policy files in `dir`, as the daemon requires a
/// policy directory to be: root-owned (we are root), 0755 and 0644.
fn copy_policies(dir: &Path) -> Result<Vec<PathBuf>> {
    let pack = crate::root().join("policies");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let mut yaml = Vec::new();
    for entry in std::fs::read_dir(&pack).with_context(|| format!("reading {}", pack.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().filter(|_| path.is_file()) else {
            continue;
        };
        let to = dir.join(name);
        std::fs::copy(&path, &to).with_context(|| format!("copying {}", path.display()))?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644))?;
        if to.extension().is_some_and(|e| e == "yaml") {
            yaml.push(to);
        }
    }
    yaml.sort();
    if yaml.is_empty() {
        bail!("no policy files in {}", pack.display());
    }
    Ok(yaml)
}

/// Changes `file`'s content (a trailing comment, so the rules stay the
/// same) by writing a new file and renaming it over the old: the daemon
/// never reads half a file.
fn touch_policy(file: &Path, n: u64) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut kept: String = text
        .lines()
        .filter(|l| !l.starts_with("# soak reload "))
        .map(|l| format!("{l}\n"))
        .collect();
    kept.push_str(&format!("# soak reload {n}\n"));
    // Not *.yaml: the daemon must not load it as a policy of its own.
    let tmp = file.with_extension("soak-tmp");
    std::fs::write(&tmp, kept).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, file).with_context(|| format!("replacing {}", file.display()))
}

/// Single-quoted for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `docker run --rm` of an agent container named `name`, waited for.
fn docker_run(name: &str, extra: &[OsString], cmd: &[&str]) -> Result<()> {
    let mut c = Command::new("docker");
    c.args(["run", "--rm", "--name", name, "--label", AGENT_LABEL])
        // dockerd's shutdown waits this long for each container to stop.
        .args(["--stop-timeout", "1"])
        .args(extra)
        .arg(AGENT_IMAGE)
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    output(&mut c).map(drop)
}

/// Pids of the running dockerd (zombies excluded).
fn dockerd_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            (comm == "dockerd" && !rest.starts_with('Z') && !rest.starts_with('X')).then_some(pid)
        })
        .collect()
}

/// SIGTERM to dockerd (as an operator's restart), wait until it is gone,
/// then start it again the way `cargo xtask setup --docker` does.
fn restart_dockerd() -> Result<()> {
    let pids = dockerd_pids();
    if pids.is_empty() {
        bail!("no dockerd runs");
    }
    for &pid in &pids {
        // SAFETY: kill(2) with a pid just read; no memory involved.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + DOCKERD_STOP_WAIT;
    while dockerd_pids().iter().any(|p| pids.contains(p)) {
        if Instant::now() > deadline {
            bail!(
                "dockerd (pid {pids:?}) did not stop within {} s of SIGTERM",
                DOCKERD_STOP_WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Setup::default().docker()
}

/// Everything the workers need.
struct Ctx<'a> {
    load: &'a Load,
    start: Instant,
    duration: Duration,
    exe: &'a Path,
    work: &'a Path,
    /// The Docker bridge's gateway address, for [`host_connect_denied`].
    gateway: Option<Ipv4Addr>,
    policy_files: &'a [PathBuf],
    /// Short-lived containers are named `{churn_prefix}{seq}`.
    churn_prefix: String,
    load_prefix: String,
}

impl Ctx<'_> {
    fn t(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Host load: loadgen (opens, refused connects) and /bin/true execs.
    fn host_load(&self) {
        let load = self.load;
        let gen = Loadgen {
            exe: self.exe.to_owned(),
            work: self.work.join("host"),
            opens: LOAD_OPENS,
            connects: LOAD_CONNECTS,
            agent: false,
        };
        loop {
            let cycle = || -> Result<()> {
                output(gen.host_command().stdin(Stdio::null()))?;
                if let Some(gw) = self.gateway {
                    load.host_probes.fetch_add(1, Ordering::Relaxed);
                    if host_connect_denied(gw)? {
                        load.host_denied.fetch_add(1, Ordering::Relaxed);
                    }
                }
                for _ in 0..LOAD_EXECS {
                    let st = Command::new("/bin/true")
                        .status()
                        .context("running /bin/true")?;
                    if !st.success() {
                        bail!("/bin/true failed ({st})");
                    }
                }
                Ok(())
            };
            match cycle() {
                Ok(()) => load.host_cycles.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    load.error("host load", &e);
                    load.host_errors.fetch_add(1, Ordering::Relaxed)
                }
            };
            if !load.nap(LOAD_PAUSE) {
                return;
            }
        }
    }

    /// The same load in an agent container, one after the other.
    fn agent_load(&self) {
        let load = self.load;
        let dir = self.work.join("agent-load");
        let exe = self.exe.to_string_lossy();
        // The host's sh, in the chroot: the same cycle for AGENT_LOAD_SECS.
        let script = format!(
            "end=$(($(date +%s) + {AGENT_LOAD_SECS})); \
             while [ \"$(date +%s)\" -lt \"$end\" ]; do \
               {} loadgen --opens {LOAD_OPENS} --connects {LOAD_CONNECTS} --dir {} >/dev/null || exit 3; \
               i=0; while [ $i -lt {LOAD_EXECS} ]; do /bin/true; i=$((i+1)); done; \
               sleep {}; \
             done",
            sh_quote(&exe),
            sh_quote(&dir.to_string_lossy()),
            LOAD_PAUSE.as_secs()
        );
        // The host's root at /run/host, not /host: the kernel prefilter
        // judges a container's open by the first component of its path
        // below the container's root (not the chroot's), and `run` starts
        // rule paths (`/run/secrets/**`), so these opens reach the daemon,
        // which then matches no rule on them; below `/host` they would be
        // dropped in the kernel. The work dir is mounted writable over it.
        let mut work_mount = self.work.as_os_str().to_owned();
        work_mount.push(":");
        work_mount
            .push(Path::new(AGENT_ROOT).join(self.work.strip_prefix("/").unwrap_or(self.work)));
        let extra: Vec<OsString> = vec![
            "-v".into(),
            format!("/:{AGENT_ROOT}:ro").into(),
            "-v".into(),
            work_mount,
        ];
        let mut n = 0u64;
        while !load.stopped() {
            n += 1;
            load.agent_load_started.fetch_add(1, Ordering::Relaxed);
            let name = format!("{}{n}", self.load_prefix);
            let cmd = [
                "/bin/busybox",
                "chroot",
                AGENT_ROOT,
                "/bin/sh",
                "-c",
                &script,
            ];
            if let Err(e) = docker_run(&name, &extra, &cmd) {
                // Stopped by us at the end (docker rm -f) is no failure.
                if load.stopped() {
                    return;
                }
                load.container_failed("agent load", &load.agent_load_failed, &e);
                if !load.nap(Duration::from_secs(2)) {
                    return;
                }
            }
        }
    }

    /// Short-lived agent containers; every ALERT_EVERY_NTH reads credentials.
    fn churn(&self) {
        let load = self.load;
        loop {
            let seq = load.churn_seq.fetch_add(1, Ordering::SeqCst);
            let alerting = seq % ALERT_EVERY_NTH == ALERT_EVERY_NTH - 1;
            let script = if alerting { ALERT_SCRIPT } else { QUIET_SCRIPT };
            let name = format!("{}{seq}", self.churn_prefix);
            load.churn_started.fetch_add(1, Ordering::Relaxed);
            match docker_run(&name, &[], &["/bin/busybox", "sh", "-c", script]) {
                Ok(()) if alerting => {
                    load.alert_containers.fetch_add(1, Ordering::Relaxed);
                }
                Ok(()) => {}
                Err(_) if load.stopped() => return,
                Err(e) => load.container_failed("containers", &load.churn_failed, &e),
            }
            if !load.nap(CHURN_PAUSE) {
                return;
            }
        }
    }

    /// A policy file changed every [`reload_every`].
    fn reloads(&self) {
        let load = self.load;
        let every = reload_every(self.duration);
        let mut n = 0u64;
        while load.nap(every) {
            let file = &self.policy_files[(n as usize) % self.policy_files.len()];
            n += 1;
            match touch_policy(file, n) {
                Ok(()) => {
                    load.reloads_requested.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => load.error("reloads", &e),
            }
        }
    }

    /// The Docker engine restarted once, half-way.
    fn docker_restart(&self) {
        let load = self.load;
        if !load.nap(self.duration / 2) {
            return;
        }
        let at_s = self.t();
        load.note(format!("restarting the Docker engine at {at_s:.0} s"));
        load.docker_down.store(true, Ordering::SeqCst);
        let began = Instant::now();
        let result = restart_dockerd();
        let took_s = began.elapsed().as_secs_f64();
        let first_seq_after = load.churn_seq.load(Ordering::SeqCst);
        load.docker_down.store(false, Ordering::SeqCst);
        let restart = match result {
            Ok(()) => {
                load.note(format!(
                    "the Docker engine answers again after {took_s:.1} s"
                ));
                Restart {
                    at_s,
                    took_s: Some(took_s),
                    first_seq_after,
                    error: None,
                }
            }
            Err(e) => {
                load.note(format!("the Docker engine restart failed: {e:#}"));
                Restart {
                    at_s,
                    took_s: None,
                    first_seq_after,
                    error: Some(format!("{e:#}")),
                }
            }
        };
        if let Ok(mut r) = load.restart.lock() {
            *r = Some(restart);
        }
    }
}

/// The whole report, in target/soak.json.
#[derive(Serialize)]
struct Report {
    kernel: String,
    unix_time: u64,
    duration_s: u64,
    summary: Summary,
    samples: Vec<Sample>,
}

#[derive(Clone, Debug, Serialize)]
struct Summary {
    daemon_survived: bool,
    /// Why the daemon counts as dead (it exited, or did not stop cleanly).
    #[serde(skip_serializing_if = "Option::is_none")]
    daemon_error: Option<String>,
    rss_start_kb: u64,
    rss_end_kb: u64,
    rss_max_kb: u64,
    /// VmHWM at the last sample.
    rss_peak_kb: Option<u64>,
    growth: Option<Growth>,
    events: u64,
    events_per_s: f64,
    events_per_s_min: Option<f64>,
    events_per_s_max: Option<f64>,
    lost: u64,
    alerts: AlertCounts,
    alerts_raised: u64,
    sink_drops: u64,
    reloads_requested: u64,
    reloads_applied: u64,
    reload_failures: u64,
    map_full: u64,
    host_cycles: u64,
    host_errors: u64,
    host_probes: u64,
    /// Host connects to the bridge gateway denied (see
    /// [`host_connect_denied`]).
    host_connects_denied: u64,
    agent_load_containers: u64,
    agent_load_failed: u64,
    containers: u64,
    containers_failed: u64,
    alert_containers: u64,
    failed_in_restart: u64,
    restart: Option<Restart>,
    /// Re-attached to the new engine: an alert from a container it started.
    docker_reattached: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    load_errors: BTreeMap<&'static str, String>,
    /// Other `agentguard run` daemons seen running meanwhile.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    other_daemons: Vec<u32>,
    failures: Vec<String>,
}

impl Summary {
    /// The one-line summary printed as `SOAK_JSON ...` for tracking.
    fn tracking(&self, duration: Duration) -> serde_json::Value {
        serde_json::json!({
            "kernel": kernel_release(),
            "unix_time": unix_time(),
            "duration_s": duration.as_secs(),
            "daemon_survived": self.daemon_survived,
            "rss_start_kb": self.rss_start_kb,
            "rss_end_kb": self.rss_end_kb,
            "rss_max_kb": self.rss_max_kb,
            "rss_growth_mb": self.growth.as_ref().map(|g| g.mb),
            "rss_growth_pct": self.growth.as_ref().map(|g| g.pct),
            "events": self.events,
            "events_per_s": self.events_per_s,
            "lost": self.lost,
            "alerts": self.alerts.total,
            "alerts_after_restart": self.alerts.after_restart,
            "alerts_not_agent": self.alerts.not_agent,
            "alerts_other_agents": self.alerts.other_agents,
            "host_connects_denied": self.host_connects_denied,
            "other_daemons": self.other_daemons.len(),
            "reloads_applied": self.reloads_applied,
            "reload_failures": self.reload_failures,
            "docker_restart_s": self.restart.as_ref().and_then(|r| r.took_s),
            "docker_reattached": self.docker_reattached,
            "passed": self.failures.is_empty(),
        })
    }

    fn text(&self) -> String {
        let mut s = String::from("\nsoak summary\n");
        let daemon = if self.daemon_survived {
            "stayed up".to_owned()
        } else {
            format!(
                "DIED: {}",
                self.daemon_error
                    .as_deref()
                    .unwrap_or("?")
                    .lines()
                    .next()
                    .unwrap_or("?")
            )
        };
        s += &format!("  daemon              {daemon}\n");
        s += &format!(
            "  RSS                 start {:.1} MB, end {:.1} MB, max {:.1} MB{}\n",
            mb(self.rss_start_kb),
            mb(self.rss_end_kb),
            mb(self.rss_max_kb),
            self.rss_peak_kb
                .map(|k| format!(" (VmHWM {:.1} MB)", mb(k)))
                .unwrap_or_default()
        );
        s += &match &self.growth {
            Some(g) => format!(
                "  RSS growth          {:+.1} MB ({:+.1} %) from {:.0} s to the end{}\n",
                g.mb,
                g.pct,
                g.from_t_s,
                if g.judged {
                    format!(" (limit: {GROWTH_PCT} % and {GROWTH_MB} MB)")
                } else {
                    format!(" (not judged: runs under {JUDGE_MINS} min)")
                }
            ),
            None => "  RSS growth          - (no sample after the first minute)\n".to_owned(),
        };
        let rate = |r: Option<f64>| r.map(|r| format!("{r:.0}")).unwrap_or("-".into());
        s += &format!(
            "  events              {} ({:.0}/s on average, {}..{} per sample), {} lost in the kernel\n",
            self.events,
            self.events_per_s,
            rate(self.events_per_s_min),
            rate(self.events_per_s_max),
            self.lost
        );
        let rules: Vec<String> = self
            .alerts
            .by_rule
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        s += &format!(
            "  alerts              {} in the file ({}); agentguard_alerts_total {} (repeats \
             folded into one alert count there each); {} dropped by sinks\n",
            self.alerts.total,
            if rules.is_empty() {
                "none".to_owned()
            } else {
                rules.join(", ")
            },
            self.alerts_raised,
            self.sink_drops
        );
        s += &format!(
            "  reloads             {} applied of {} policy changes, {} refused\n",
            self.reloads_applied, self.reloads_requested, self.reload_failures
        );
        s += &match &self.restart {
            Some(Restart {
                at_s,
                took_s: Some(took),
                ..
            }) => format!(
                "  Docker restart      at {at_s:.0} s, answering again after {took:.1} s; \
                 {} alert(s) from containers the new engine started: {}\n",
                self.alerts.after_restart,
                if self.docker_reattached {
                    "re-attached"
                } else {
                    "NOT re-attached"
                }
            ),
            Some(r) => format!(
                "  Docker restart      at {:.0} s FAILED: {}\n",
                r.at_s,
                r.error.as_deref().unwrap_or("?")
            ),
            None => "  Docker restart      not done (the run ended first)\n".to_owned(),
        };
        s += &format!(
            "  load                {} host cycles ({} failed); {} agent load containers ({} failed); \
             {} short-lived agent containers ({} failed, {} read credentials); {} container runs \
             failed during the Docker restart (expected)\n",
            self.host_cycles,
            self.host_errors,
            self.agent_load_containers,
            self.agent_load_failed,
            self.containers,
            self.containers_failed,
            self.alert_containers,
            self.failed_in_restart
        );
        if !self.other_daemons.is_empty() {
            s += &format!(
                "  warning: other agentguard daemons ran meanwhile (pid {:?}): their load is in \
                 these figures, and each daemon acted on the other's agents\n",
                self.other_daemons
            );
        }
        if self.alerts.other_agents > 0 {
            s += &format!(
                "  warning: {} alert(s) about agents that are not the soak's (something else \
                 ran agents meanwhile)\n",
                self.alerts.other_agents
            );
        }
        if self.host_connects_denied > 0 {
            s += &format!(
                "  warning: {} of {} connects of this host process (no agent) to the Docker \
                 bridge's gateway were denied (EPERM): the daemon applied an agent's network \
                 rules to a host process\n",
                self.host_connects_denied, self.host_probes
            );
        }
        if self.alerts.not_agent > 0 {
            s += &format!(
                "  warning: {} alert(s) about processes that are no agent (every rule of the \
                 pack selects agents; see target/soak-alerts.jsonl)\n",
                self.alerts.not_agent
            );
        }
        if self.map_full > 0 {
            s += &format!(
                "  warning: {} kernel map insert(s) refused (map full)\n",
                self.map_full
            );
        }
        for (worker, e) in &self.load_errors {
            s += &format!("  warning: {worker}: first error: {e}\n");
        }
        if self.failures.is_empty() {
            s += "  result              PASSED\n";
        } else {
            for f in &self.failures {
                s += &format!("  FAILED: {f}\n");
            }
        }
        s
    }
}

fn line_header() -> String {
    format!(
        "{:>6} {:>8} {:>9} {:>10} {:>6} {:>7} {:>7} {:>5} {:>6} {:>7}  {}",
        "t s",
        "RSS MB",
        "events/s",
        "events",
        "lost",
        "alerts",
        "reloads",
        "ctrs",
        "docker",
        "tainted",
        "notes"
    )
}

fn line(s: &Sample) -> String {
    let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or("-".into());
    format!(
        "{:>6.0} {:>8.1} {:>9} {:>10} {:>6} {:>7} {:>7} {:>5} {:>6} {:>7}  {}",
        s.t_s,
        mb(s.rss_kb),
        s.events_per_s
            .map(|r| format!("{r:.0}"))
            .unwrap_or("-".into()),
        n(s.events),
        n(s.lost),
        s.alert_lines,
        n(s.reloads),
        n(s.containers_watched),
        match s.docker_connected {
            Some(true) => "up",
            Some(false) => "down",
            None => "-",
        },
        n(s.tainted),
        s.notes.join("; ")
    )
}

pub fn soak(args: &SoakArgs) -> Result<()> {
    let duration = args.duration();
    let bin = match &args.agentguard {
        Some(path) => {
            if !path.is_file() {
                bail!("--agentguard {}: not a file", path.display());
            }
            path.clone()
        }
        None => {
            Setup::default().all(false)?;
            crate::build()?;
            agentguard_bin()
        }
    };
    let mut setup = Setup::default();
    setup.docker()?;
    setup.busybox_image(AGENT_IMAGE)?;
    let others = running_daemons(None);
    if !others.is_empty() {
        bail!(
            "another `agentguard run` runs (pid {others:?}): two daemons would share pinned \
             state and spoil the figures; stop it first"
        );
    }
    install_sigint_handler();
    let work = WorkDir::new()?;
    let policies = work.0.join("policies");
    let policy_files = copy_policies(&policies)?;
    let alerts = work.0.join("alerts.jsonl");
    let socket = work.0.join("status.sock");
    let metrics_addr = free_loopback_addr()?;
    let daemon_args: Vec<OsString> = vec![
        "run".into(),
        "--policies".into(),
        policies.clone().into(),
        "--alerts-file".into(),
        alerts.clone().into(),
        "--metrics-addr".into(),
        metrics_addr.clone().into(),
        "--status-socket".into(),
        socket.clone().into(),
    ];
    check_flags(&bin, &[("soak", daemon_args.clone())], "")?;
    let exe = std::env::current_exe().context("locating the xtask binary (loadgen)")?;
    let pid = std::process::id();

    // Pins a daemon killed earlier left behind.
    cleanup(&bin);
    eprintln!(
        "xtask: soak: {} s of `agentguard run` (default pack, copied to {}; alerts in {}; \
         metrics on {metrics_addr})",
        duration.as_secs(),
        policies.display(),
        alerts.display()
    );
    let mut daemon = start_daemon(&bin, &daemon_args, &work.0)?;
    let load = Load::default();
    let ctx = Ctx {
        load: &load,
        start: Instant::now(),
        duration,
        exe: &exe,
        work: &work.0,
        gateway: bridge_gateway(),
        policy_files: &policy_files,
        churn_prefix: format!("soak-{pid}-c"),
        load_prefix: format!("soak-{pid}-l"),
    };

    println!(
        "soak: {} s; load: host and agent-container cycles of {LOAD_OPENS} opens, \
         {LOAD_CONNECTS} refused connects and {LOAD_EXECS} execs every ~{} s; short-lived agent \
         containers every ~{} s (one in {ALERT_EVERY_NTH} reads credentials); a policy change \
         every {} s; a Docker engine restart at {} s",
        duration.as_secs(),
        LOAD_PAUSE.as_secs(),
        CHURN_PAUSE.as_secs(),
        reload_every(duration).as_secs(),
        (duration / 2).as_secs()
    );
    println!("{}", line_header());

    let mut samples: Vec<Sample> = Vec::new();
    let mut died: Option<String> = None;
    let mut interrupted = false;
    let sample = |daemon: &mut Monitor, samples: &mut Vec<Sample>| -> Result<()> {
        let s = take_sample(
            daemon,
            &bin,
            &socket,
            &metrics_addr,
            &alerts,
            &ctx,
            samples.last(),
        )?;
        println!("{}", line(&s));
        samples.push(s);
        Ok(())
    };
    // The daemon's housekeeping (every second) fills its status first.
    std::thread::sleep(SETTLE);
    if let Err(e) = sample(&mut daemon, &mut samples) {
        died = Some(format!("{e:#}"));
    }
    if died.is_none() {
        std::thread::scope(|scope| {
            let workers = [
                scope.spawn(|| ctx.host_load()),
                scope.spawn(|| ctx.agent_load()),
                scope.spawn(|| ctx.churn()),
                scope.spawn(|| ctx.reloads()),
                scope.spawn(|| ctx.docker_restart()),
            ];
            let mut next = SAMPLE_EVERY;
            while next < duration {
                while ctx.start.elapsed() < next {
                    if check_interrupted().is_err() {
                        interrupted = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                if interrupted {
                    break;
                }
                if let Err(e) = sample(&mut daemon, &mut samples) {
                    died = Some(format!("{e:#}"));
                    break;
                }
                next += SAMPLE_EVERY;
            }
            while !interrupted && died.is_none() && ctx.start.elapsed() < duration {
                interrupted = check_interrupted().is_err();
                std::thread::sleep(Duration::from_millis(100));
            }
            // The load stops: workers finish their step; containers still
            // running are removed (their workers then see the stop).
            load.stop.store(true, Ordering::SeqCst);
            while !workers.iter().all(|w| w.is_finished()) {
                remove_containers(pid);
                std::thread::sleep(Duration::from_millis(500));
            }
        });
    }
    // The last sample, once the load has stopped and the daemon's
    // housekeeping has applied a last policy change.
    let mut peak_kb = None;
    if died.is_none() && !interrupted {
        std::thread::sleep(SETTLE);
        match sample(&mut daemon, &mut samples) {
            Ok(()) => peak_kb = daemon.status_kb("VmHWM").ok(),
            Err(e) => died = Some(format!("{e:#}")),
        }
    }

    // The daemon stops (SIGINT) and must exit cleanly.
    let stopped = if died.is_none() {
        daemon.stop().map(drop)
    } else {
        drop(daemon);
        Ok(())
    };
    if let Err(e) = stopped {
        died = Some(format!("{e:#}"));
    }
    let kept_log = target_dir().join("soak-agentguard.log");
    let kept_alerts = target_dir().join("soak-alerts.jsonl");
    if std::fs::copy(work.0.join("agentguard.stderr"), &kept_log).is_ok()
        && std::fs::copy(&alerts, &kept_alerts).is_ok()
    {
        eprintln!(
            "xtask: soak: the daemon's log and alerts are in {} and {}",
            kept_log.display(),
            kept_alerts.display()
        );
    }
    remove_containers(pid);
    cleanup(&bin);
    if interrupted {
        bail!("interrupted");
    }

    let restart = load.restart.lock().ok().and_then(|r| r.clone());
    let alert_text = std::fs::read_to_string(&alerts).unwrap_or_default();
    let alert_counts = count_alerts(
        &alert_text,
        &ctx.churn_prefix,
        restart
            .as_ref()
            .filter(|r| r.took_s.is_some())
            .map(|r| r.first_seq_after),
    );
    let summary = summarize(
        &samples,
        duration,
        &load,
        died,
        peak_kb,
        alert_counts,
        restart,
    );
    print!("{}", summary.text());
    println!(
        "SOAK_JSON {}",
        serde_json::to_string(&summary.tracking(duration))?
    );
    let failures = summary.failures.clone();
    write_results(
        "soak.json",
        &Report {
            kernel: kernel_release(),
            unix_time: unix_time(),
            duration_s: duration.as_secs(),
            summary,
            samples,
        },
    )?;
    if !failures.is_empty() {
        bail!("soak failed: {}", failures.join("; "));
    }
    Ok(())
}

/// One sample: RSS (an error if the daemon has exited), the metrics, the
/// status, the alert file.
fn take_sample(
    daemon: &mut Monitor,
    bin: &Path,
    socket: &Path,
    metrics_addr: &str,
    alerts: &Path,
    ctx: &Ctx,
    last: Option<&Sample>,
) -> Result<Sample> {
    let t_s = ctx.t();
    let rss_kb = daemon.status_kb("VmRSS")?;
    let mut s = Sample {
        t_s,
        rss_kb,
        ..Sample::default()
    };
    match scrape(metrics_addr) {
        Ok(m) => {
            // Series with no sample yet are not rendered at all.
            s.events = metric_sum(&m, "agentguard_events_total").or(Some(0));
            s.by_kind = metric_by_label(&m, "agentguard_events_total", "kind");
            s.prefiltered = metric_sum(&m, "agentguard_events_prefiltered_total");
            s.lost = metric_sum(&m, "agentguard_events_lost_total");
            s.alerts_raised = metric_sum(&m, "agentguard_alerts_total").or(Some(0));
            s.sink_drops = metric_sum(&m, "agentguard_alert_sink_drops_total").or(Some(0));
            s.reloads = metric_sum(&m, "agentguard_policy_reloads_total");
            s.reload_failures = metric_sum(&m, "agentguard_policy_reload_failures_total");
            s.map_full = metric_sum(&m, "agentguard_kernel_map_full_total").or(Some(0));
            s.containers_watched = metric_sum(&m, "agentguard_containers_watched");
        }
        Err(e) => s.notes.push(format!("metrics: {e:#}")),
    }
    if let (Some(last), Some(now)) = (last, s.events) {
        if let Some(before) = last.events {
            let dt = t_s - last.t_s;
            if dt > 0.0 {
                s.events_per_s = Some(now.saturating_sub(before) as f64 / dt);
            }
        }
    }
    match status(bin, socket) {
        Ok(v) => {
            s.docker_connected = v["counters"]["docker_connected"].as_u64().map(|c| c != 0);
            s.tainted = v["tainted"].as_array().map(|a| a.len() as u64);
        }
        Err(e) => s.notes.push(format!("status: {e:#}")),
    }
    s.alert_lines = std::fs::read(alerts)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
        .unwrap_or(0);
    let others = running_daemons(Some(ctx.work));
    if let Ok(mut seen) = ctx.load.others.lock() {
        let new: Vec<u32> = others.into_iter().filter(|p| seen.insert(*p)).collect();
        if !new.is_empty() {
            s.notes.push(format!(
                "warning: another agentguard run is running (pid {new:?})"
            ));
        }
    }
    s.notes.extend(ctx.load.take_notes());
    Ok(s)
}

fn summarize(
    samples: &[Sample],
    duration: Duration,
    load: &Load,
    died: Option<String>,
    peak_kb: Option<u64>,
    alerts: AlertCounts,
    restart: Option<Restart>,
) -> Summary {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let last_of = |f: fn(&Sample) -> Option<u64>| samples.iter().rev().find_map(f).unwrap_or(0);
    let rates: Vec<f64> = samples.iter().filter_map(|s| s.events_per_s).collect();
    let events = last_of(|s| s.events);
    let elapsed = samples.last().map_or(0.0, |s| s.t_s);
    let growth = growth(samples, duration);
    let restarted = restart.as_ref().is_some_and(|r| r.took_s.is_some());
    let docker_reattached = restarted && alerts.after_restart > 0;
    let mut failures = Vec::new();
    if let Some(why) = &died {
        failures.push(format!(
            "the daemon died: {}",
            why.lines().next().unwrap_or_default()
        ));
    }
    if let Some(g) = growth.as_ref().filter(|g| g.too_much) {
        failures.push(format!(
            "RSS grew {:.1} MB ({:.1} %) from {:.0} s to the end: more than {GROWTH_PCT} % and \
             {GROWTH_MB} MB",
            g.mb, g.pct, g.from_t_s
        ));
    }
    // An agent's rules applied to the host, or an alert about no agent
    // (every rule of the pack selects agents): the daemon's mistakes.
    let host_denied = get(&load.host_denied);
    if host_denied > 0 {
        failures.push(format!(
            "{host_denied} connect(s) of a host process (no agent) were denied: an agent's \
             network rules reached the host"
        ));
    }
    if alerts.not_agent > 0 {
        failures.push(format!(
            "{} alert(s) about processes that are no agent (see target/soak-alerts.jsonl)",
            alerts.not_agent
        ));
    }
    match &restart {
        Some(r) if r.took_s.is_none() => failures.push(format!(
            "the Docker engine did not come back: {}",
            r.error.as_deref().unwrap_or("?")
        )),
        Some(_) if died.is_none() && !docker_reattached => failures.push(
            "no alert from a container started after the Docker restart: the daemon did not \
             re-attach to Docker"
                .to_owned(),
        ),
        _ => {}
    }
    Summary {
        daemon_survived: died.is_none(),
        daemon_error: died,
        rss_start_kb: samples.first().map_or(0, |s| s.rss_kb),
        rss_end_kb: samples.last().map_or(0, |s| s.rss_kb),
        rss_max_kb: samples.iter().map(|s| s.rss_kb).max().unwrap_or(0),
        rss_peak_kb: peak_kb,
        growth,
        events,
        events_per_s: if elapsed > 0.0 {
            events as f64 / elapsed
        } else {
            0.0
        },
        events_per_s_min: rates.iter().copied().reduce(f64::min),
        events_per_s_max: rates.iter().copied().reduce(f64::max),
        lost: last_of(|s| s.lost),
        alerts,
        alerts_raised: last_of(|s| s.alerts_raised),
        sink_drops: last_of(|s| s.sink_drops),
        reloads_requested: get(&load.reloads_requested),
        reloads_applied: last_of(|s| s.reloads),
        reload_failures: last_of(|s| s.reload_failures),
        map_full: last_of(|s| s.map_full),
        host_cycles: get(&load.host_cycles),
        host_errors: get(&load.host_errors),
        host_probes: get(&load.host_probes),
        host_connects_denied: get(&load.host_denied),
        agent_load_containers: get(&load.agent_load_started),
        agent_load_failed: get(&load.agent_load_failed),
        containers: get(&load.churn_started),
        containers_failed: get(&load.churn_failed),
        alert_containers: get(&load.alert_containers),
        failed_in_restart: get(&load.failed_in_restart),
        restart,
        docker_reattached,
        load_errors: load.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        other_daemons: load
            .others
            .lock()
            .map(|o| o.iter().copied().collect())
            .unwrap_or_default(),
        failures,
    }
}

/// Pids of running `agentguard run` daemons (`--cleanup` excluded), but
/// those whose arguments mention `mine` (our work dir).
fn running_daemons(mine: Option<&Path>) -> Vec<u32> {
    let mine = mine.map(|p| p.as_os_str().as_encoded_bytes());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let is_daemon = args.first().is_some_and(|a0| a0.ends_with(b"agentguard"))
                && args.get(1) == Some(&&b"run"[..])
                && !args.contains(&&b"--cleanup"[..])
                && !mine.is_some_and(|m| args.iter().any(|a| a.starts_with(m)));
            is_daemon.then_some(pid)
        })
        .collect()
}

/// `docker rm -f` of this soak's containers (best effort).
fn remove_containers(pid: u32) {
    let list = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("name=soak-{pid}-"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let Ok(list) = list else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return;
    }
    let _ = Command::new("docker")
        .args(["rm", "-f"])
        .args(&ids)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `agentguard run --cleanup`: pins left by the daemon (best effort).
fn cleanup(bin: &Path) {
    let _ = Command::new(bin)
        .args(["run", "--cleanup"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, rss_kb: u64) -> Sample {
        Sample {
            t_s,
            rss_kb,
            ..Sample::default()
        }
    }

    #[test]
    fn metrics_are_summed_over_labels() {
        let text = "# HELP agentguard_events_total Events.\n\
                    # TYPE agentguard_events_total counter\n\
                    agentguard_events_total{kind=\"exec\"} 10\n\
                    agentguard_events_total{kind=\"open\"} 32\n\
                    agentguard_events_total_other 5\n\
                    agentguard_events_lost_total 0\n\
                    agentguard_policy_reloads_total 3\n";
        assert_eq!(metric_sum(text, "agentguard_events_total"), Some(42));
        assert_eq!(metric_sum(text, "agentguard_events_lost_total"), Some(0));
        assert_eq!(metric_sum(text, "agentguard_policy_reloads_total"), Some(3));
        assert_eq!(metric_sum(text, "agentguard_alerts_total"), None);
        let by_kind = metric_by_label(text, "agentguard_events_total", "kind");
        assert_eq!(by_kind.len(), 2);
        assert_eq!(by_kind.get("open"), Some(&32));
    }

    #[test]
    fn growth_is_judged_from_minute_one_in_long_runs() {
        let long = Duration::from_secs(600);
        let samples = vec![
            sample(0.0, 10_000),
            sample(60.0, 20_480),
            sample(300.0, 24_000),
            sample(600.0, 30_720),
        ];
        let g = growth(&samples, long).expect("growth");
        assert_eq!(g.from_t_s, 60.0);
        assert_eq!(g.mb, 10.0);
        assert_eq!(g.pct, 50.0);
        assert!(g.judged && g.too_much);
        // Over 20 % but under 5 MB: fine.
        let small = vec![sample(60.0, 4096), sample(600.0, 8192)];
        let g = growth(&small, long).expect("growth");
        assert!(g.judged && !g.too_much, "{g:?}");
        // Over 5 MB but under 20 %: fine.
        let big = vec![sample(60.0, 102_400), sample(600.0, 112_640)];
        assert!(!growth(&big, long).expect("growth").too_much);
        // Short runs are reported, not judged.
        let g = growth(&samples, Duration::from_secs(120)).expect("growth");
        assert!(!g.judged && !g.too_much);
        // No sample after the first minute.
        assert_eq!(growth(&[sample(0.0, 1), sample(50.0, 2)], long), None);
    }

    #[test]
    fn alerts_after_the_restart_are_the_new_engines_containers() {
        let alert = |rule: &str, name: &str, agent: &str| {
            serde_json::json!({
                "decision": {"rule": rule},
                "event": {"identity": {
                    "container": {"id": "x", "info": {"name": name}},
                    "agent": {"name": agent}
                }}
            })
            .to_string()
        };
        let text = [
            alert("credential-read", "soak-7-c1", "soak"),
            alert("credential-read", "soak-7-c5", "soak"),
            alert("dotenv-read", "soak-7-c5", "soak"),
            alert("dotenv-read", "soak-7-c9", "other"),
            alert("dotenv-read", "soak-8-c9", "soak"),
            serde_json::json!({
                "decision": {"rule": "compat-syscall"},
                "event": {"identity": {"scope": "host"}}
            })
            .to_string(),
            serde_json::json!({"decision": {"rule": "policy-reload"}, "event": {}}).to_string(),
            "not json".to_owned(),
        ]
        .join("\n");
        let c = count_alerts(&text, "soak-7-c", Some(4));
        assert_eq!(c.total, 8);
        assert_eq!(c.after_restart, 2);
        assert_eq!(c.not_agent, 1);
        assert_eq!(c.other_agents, 1);
        assert_eq!(c.unreadable, 1);
        assert_eq!(c.by_rule.get("credential-read"), Some(&2));
        assert_eq!(c.by_rule.get("dotenv-read"), Some(&3));
        assert_eq!(count_alerts(&text, "soak-7-c", None).after_restart, 0);
    }

    #[test]
    fn reload_interval() {
        assert_eq!(
            reload_every(Duration::from_secs(60)),
            Duration::from_secs(10)
        );
        assert_eq!(
            reload_every(Duration::from_secs(20)),
            Duration::from_secs(5)
        );
        assert_eq!(reload_every(Duration::from_secs(1800)), RELOAD_EVERY);
    }

    #[test]
    fn policy_touch_keeps_one_marker() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("xtask-soak-touch-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("p.yaml");
        std::fs::write(&file, "name: p\nrules: []\n")?;
        let r = touch_policy(&file, 1).and_then(|()| touch_policy(&file, 2));
        let text = std::fs::read_to_string(&file);
        let mode = std::fs::metadata(&file).map(|m| m.permissions().mode() & 0o777);
        let _ = std::fs::remove_dir_all(&dir);
        r?;
        assert_eq!(text?, "name: p\nrules: []\n# soak reload 2\n");
        assert_eq!(mode?, 0o644);
        Ok(())
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/a b/x"), "'/a b/x'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
