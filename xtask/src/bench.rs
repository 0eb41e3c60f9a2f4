//! `bench overhead`: what the sensor costs a busy process, next to running
//! nothing and next to auditd. Configurations run in interleaved rounds
//! (rotating order) so drift on the machine hits all of them alike; the
//! bench reports medians and ratios and never asserts anything.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::loadgen::Timings;
use crate::setup::{output, spawn_detached, which, Setup};
use crate::{agentguard_bin, describe, run_cmd, target_dir};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const AUDITD_LOG: &str = "/var/log/agentguard-auditd.log";
/// The rule under test; `-a` adds it, `-d` with the same spec removes it.
const AUDIT_RULE: &[&str] = &[
    "always,exit",
    "-F",
    "arch=b64",
    "-S",
    "openat",
    "-S",
    "connect",
    "-k",
    "agbench",
];
/// Debian's stock audit.rules sets this backlog; auditd alone leaves the
/// kernel default (64), which would make the peer look worse than it is.
const AUDIT_BACKLOG: u64 = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Config {
    /// Nothing monitoring.
    Baseline,
    /// `agentguard events`: every event serialized to JSON (to /dev/null).
    Streamed,
    /// `agentguard events --watch none`: probes attached, every process filtered out in the kernel.
    Unwatched,
    /// auditd with a rule on openat and connect.
    Auditd,
}

impl Config {
    const ALL: [Config; 4] = [
        Config::Baseline,
        Config::Streamed,
        Config::Unwatched,
        Config::Auditd,
    ];

    fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Streamed => "streamed",
            Config::Unwatched => "unwatched",
            Config::Auditd => "auditd",
        }
    }

    /// agentguard's arguments for the configurations that run it.
    fn daemon_args(self) -> Option<&'static [&'static str]> {
        match self {
            Config::Streamed => Some(&["events"]),
            Config::Unwatched => Some(&["events", "--watch", "none"]),
            Config::Baseline | Config::Auditd => None,
        }
    }
}

#[derive(Args)]
pub struct OverheadArgs {
    /// openat + close iterations per run.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    opens: u64,
    /// socket + refused connect + close iterations per run.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    connects: u64,
    /// Rounds; each runs every configuration once.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Configurations to measure, comma separated [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    configs: Vec<Config>,
}

/// One run of the load generator under one configuration.
#[derive(Clone, Debug, Serialize)]
struct Sample {
    round: u64,
    open_ns: u64,
    connect_ns: u64,
    /// What the monitor said about the run (agentguard's summary, audit backlog waits or losses).
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

pub fn overhead(args: &OverheadArgs) -> Result<()> {
    let configs: Vec<Config> = Config::ALL
        .into_iter()
        .filter(|c| args.configs.is_empty() || args.configs.contains(c))
        .collect();
    let mut setup = Setup::default();
    setup.all(false)?;
    crate::build()?;
    let bin = agentguard_bin();
    if configs.iter().any(|c| c.daemon_args().is_some()) {
        check_daemon_flags(&bin)?;
    }
    if configs.contains(&Config::Auditd) {
        setup.auditd()?;
    }
    install_sigint_handler();
    // From here on, guards undo what they changed even when a step fails.
    let mut audit = which("auditctl").map(Audit::new);
    if let Some(audit) = audit.as_mut() {
        if configs.contains(&Config::Auditd) {
            audit.prepare_daemon()?;
        }
        audit.hide_new_tasks()?;
    } else if configs.contains(&Config::Auditd) {
        bail!("auditctl not found after installing auditd");
    }
    let audit_never_task = audit.as_ref().is_some_and(|a| a.task_rule);
    let work = WorkDir::new()?;
    let load = Loadgen {
        exe: std::env::current_exe().context("locating the xtask binary (loadgen)")?,
        dir: work.0.join("loadgen"),
        opens: args.opens,
        connects: args.connects,
    };

    eprintln!(
        "xtask: bench overhead: {} round(s) of {} ({} opens, {} connects per run)",
        args.rounds,
        configs
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", "),
        args.opens,
        args.connects
    );
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); configs.len()];
    for round in 0..args.rounds {
        for k in 0..configs.len() {
            // Rotate the order so no configuration always runs first.
            let i = (k + round as usize) % configs.len();
            let config = configs[i];
            check_interrupted()?;
            let sample = match measure(config, round + 1, &load, &bin, &work.0, audit.as_mut()) {
                Ok(s) => s,
                Err(e) => {
                    check_interrupted()?;
                    return Err(e.context(format!("{} run of round {}", config.name(), round + 1)));
                }
            };
            eprintln!(
                "xtask: round {}/{} {:<9} open {:>9.1} ms  connect {:>9.1} ms{}",
                round + 1,
                args.rounds,
                config.name(),
                ms(sample.open_ns),
                ms(sample.connect_ns),
                sample
                    .note
                    .as_deref()
                    .map(|n| format!("  ({n})"))
                    .unwrap_or_default()
            );
            samples[i].push(sample);
        }
    }
    if let Some(mut audit) = audit.take() {
        audit.restore()?;
    }

    let report = Report::new(args, &configs, samples, audit_never_task);
    print!("{}", report.table());
    let path = target_dir().join("bench-overhead.json");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("xtask: results written to {}", path.display());
    Ok(())
}

/// The daemon is written alongside this bench: say plainly when the binary
/// lacks what the streamed/unwatched configurations need.
fn check_daemon_flags(bin: &Path) -> Result<()> {
    let out = Command::new(bin)
        .args(["events", "--help"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run {}", bin.display()))?;
    let help = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = ["--watch", "--ready-file"]
        .into_iter()
        .filter(|flag| !out.status.success() || !help.contains(flag))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} does not support `events {}` yet, which the streamed and unwatched \
             configurations need; measure the others with --configs baseline,auditd",
            bin.display(),
            missing.join(" / ")
        );
    }
    Ok(())
}

/// The load generator: this binary's hidden `loadgen` command.
struct Loadgen {
    exe: PathBuf,
    dir: PathBuf,
    opens: u64,
    connects: u64,
}

impl Loadgen {
    fn run(&self) -> Result<Timings> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("loadgen")
            .arg("--opens")
            .arg(self.opens.to_string())
            .arg("--connects")
            .arg(self.connects.to_string())
            .arg("--dir")
            .arg(&self.dir);
        let stdout = output(&mut cmd)?;
        serde_json::from_str(stdout.trim())
            .with_context(|| format!("unexpected loadgen output: {stdout:?}"))
    }
}

/// One run of the load generator under `config`.
fn measure(
    config: Config,
    round: u64,
    load: &Loadgen,
    agentguard: &Path,
    work: &Path,
    audit: Option<&mut Audit>,
) -> Result<Sample> {
    let (timings, note) = match config {
        Config::Baseline => (load.run()?, None),
        Config::Streamed | Config::Unwatched => {
            let args = config.daemon_args().unwrap_or_default();
            let daemon = Daemon::start(agentguard, args, work)?;
            let timings = load.run()?;
            let summary = daemon.stop()?;
            (timings, summary)
        }
        Config::Auditd => {
            let audit = audit.context("auditd was not prepared")?;
            let before = audit.status()?;
            let rules = audit.add_rules()?;
            let timings = load.run();
            rules.remove()?;
            let after = audit.status()?;
            // Say when the loop was throttled by a full backlog or lost records.
            let mut notes = Vec::new();
            if let (Some(a), Some(b)) = (after.backlog_wait, before.backlog_wait) {
                if a > b {
                    notes.push(format!("{} ticks waiting on the audit backlog", a - b));
                }
            }
            if after.lost > before.lost {
                notes.push(format!("{} audit records lost", after.lost - before.lost));
            }
            let note = (!notes.is_empty()).then(|| notes.join(", "));
            (timings?, note)
        }
    };
    Ok(Sample {
        round,
        open_ns: timings.open_ns,
        connect_ns: timings.connect_ns,
        note,
    })
}

/// A running `agentguard events`; killed if dropped before [`Daemon::stop`].
struct Daemon {
    child: Child,
    what: String,
    stderr: PathBuf,
    exited: bool,
}

impl Daemon {
    fn start(bin: &Path, args: &[&str], work: &Path) -> Result<Daemon> {
        let ready = work.join("agentguard.ready");
        // A file left from an earlier run would make us start too early.
        let _ = std::fs::remove_file(&ready);
        let stderr = work.join("agentguard.stderr");
        let stderr_file =
            File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file);
        let what = describe(&cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start `{what}`"))?;
        let mut daemon = Daemon {
            child,
            what,
            stderr,
            exited: false,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !ready.exists() {
            if let Some(status) = daemon.child.try_wait()? {
                daemon.exited = true;
                bail!(
                    "`{}` exited ({status}) before it was ready:\n{}",
                    daemon.what,
                    daemon.stderr_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "`{}` not ready after {} s:\n{}",
                    daemon.what,
                    READY_TIMEOUT.as_secs(),
                    daemon.stderr_text()
                );
            }
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(daemon)
    }

    /// SIGINT, wait; returns agentguard's last stderr line (its summary).
    fn stop(mut self) -> Result<Option<String>> {
        let status = match self.child.try_wait()? {
            Some(status) => status,
            None => {
                signal(&self.child, libc::SIGINT);
                wait_timeout(&mut self.child, STOP_TIMEOUT)?.with_context(|| {
                    format!(
                        "`{}` did not stop within {} s of SIGINT",
                        self.what,
                        STOP_TIMEOUT.as_secs()
                    )
                })?
            }
        };
        self.exited = true;
        let text = self.stderr_text();
        if !status.success() {
            bail!("`{}` failed ({status}):\n{text}", self.what);
        }
        Ok(text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned()))
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The kernel's audit status, from `auditctl -s`.
#[derive(Debug, PartialEq)]
struct AuditStatus {
    enabled: u64,
    pid: u64,
    backlog_limit: u64,
    lost: u64,
    /// Time tasks spent waiting for room in the backlog (kernel ticks,
    /// cumulative; absent before Linux 5.10).
    backlog_wait: Option<u64>,
}

impl AuditStatus {
    fn parse(text: &str) -> Result<AuditStatus> {
        let field = |name: &str| -> Result<u64> {
            text.lines()
                .find_map(|l| {
                    let mut words = l.split_whitespace();
                    (words.next() == Some(name)).then(|| words.next()).flatten()
                })
                .with_context(|| format!("no `{name}` in auditctl -s output:\n{text}"))?
                .parse()
                .with_context(|| format!("bad `{name}` in auditctl -s output:\n{text}"))
        };
        Ok(AuditStatus {
            enabled: field("enabled")?,
            pid: field("pid")?,
            backlog_limit: field("backlog_limit")?,
            lost: field("lost")?,
            backlog_wait: field("backlog_wait_time_actual").ok(),
        })
    }
}

/// The audit subsystem during the bench. Undoes on restore (or drop) what
/// it changed: rules, backlog, enabled flag, an auditd it started.
///
/// Once audit has been enabled since boot, every new process gets an audit
/// context and its syscalls take audit's slow path even with no rules
/// (measured here: open loop +20%). Outside the auditd configuration the
/// bench loads `-a never,task` so new processes (the load generator) run
/// as on a machine where audit was never enabled.
struct Audit {
    auditctl: PathBuf,
    /// The task list is ours to change (it was empty or just `never,task`).
    manage_task_rule: bool,
    /// `-a never,task` was loaded when we started.
    task_rule_at_start: bool,
    /// `-a never,task` is loaded now.
    task_rule: bool,
    started: Option<Child>,
    restore_backlog: Option<u64>,
    restore_enabled: Option<u64>,
}

impl Audit {
    fn new(auditctl: PathBuf) -> Audit {
        Audit {
            auditctl,
            manage_task_rule: false,
            task_rule_at_start: false,
            task_rule: false,
            started: None,
            restore_backlog: None,
            restore_enabled: None,
        }
    }

    /// Loads `-a never,task` unless someone else's rules are in place.
    fn hide_new_tasks(&mut self) -> Result<()> {
        // A run killed hard may have left the bench's rule behind.
        let _ = self.auditctl_quiet("-d", AUDIT_RULE);
        let list = output(self.auditctl().arg("-l"))?;
        let rules: Vec<&str> = list
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        match rules.as_slice() {
            ["No rules"] => {
                self.manage_task_rule = true;
                self.set_task_rule(true)
            }
            ["-a never,task"] => {
                self.manage_task_rule = true;
                self.task_rule_at_start = true;
                self.task_rule = true;
                Ok(())
            }
            _ => {
                eprintln!(
                    "xtask: warning: audit rules are loaded (auditctl -l); leaving them alone, \
                     so every configuration also pays audit's per-syscall cost"
                );
                Ok(())
            }
        }
    }

    fn set_task_rule(&mut self, on: bool) -> Result<()> {
        if !self.manage_task_rule || self.task_rule == on {
            return Ok(());
        }
        let op = if on { "-a" } else { "-d" };
        run_cmd(self.auditctl().args([op, "never,task"]))?;
        self.task_rule = on;
        Ok(())
    }

    /// auditd running and registered, auditing enabled, Debian's backlog.
    fn prepare_daemon(&mut self) -> Result<()> {
        let status = self.status()?;
        if status.enabled == 2 {
            bail!("the audit configuration is locked (auditctl -s: enabled 2); cannot add rules");
        }
        if status.pid == 0 {
            let auditd = which("auditd").context("auditd not found (package auditd)")?;
            eprintln!("xtask: starting auditd -n (log: {AUDITD_LOG}) ...");
            let mut cmd = Command::new(auditd);
            cmd.arg("-n");
            self.started = Some(spawn_detached(cmd, Path::new(AUDITD_LOG))?);
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                let exited = match self.started.as_mut() {
                    Some(child) => child.try_wait()?,
                    None => None,
                };
                if let Some(status) = exited {
                    self.started = None;
                    bail!("auditd exited ({status}) at start; see {AUDITD_LOG}");
                }
                if self.status()?.pid != 0 {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("auditd did not register with the kernel; see {AUDITD_LOG}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // auditd enables auditing at start and leaves it on at exit: restore
        // the flag as it was before either.
        if status.enabled == 0 {
            self.restore_enabled = Some(0);
            run_cmd(self.auditctl().args(["-e", "1"]).stdout(Stdio::null()))?;
        }
        if status.backlog_limit < AUDIT_BACKLOG {
            self.restore_backlog = Some(status.backlog_limit);
            run_cmd(
                self.auditctl()
                    .args(["-b", &AUDIT_BACKLOG.to_string()])
                    .stdout(Stdio::null()),
            )?;
        }
        Ok(())
    }

    fn auditctl(&self) -> Command {
        Command::new(&self.auditctl)
    }

    fn status(&self) -> Result<AuditStatus> {
        AuditStatus::parse(&output(self.auditctl().arg("-s"))?)
    }

    /// `auditctl <op> <rule>` with its output discarded.
    fn auditctl_quiet(&self, op: &str, rule: &[&str]) -> Result<()> {
        run_cmd(
            self.auditctl()
                .arg(op)
                .args(rule)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    }

    /// The bench's rule, with new processes visible to audit again.
    fn add_rules(&mut self) -> Result<AuditRules<'_>> {
        self.set_task_rule(false)?;
        run_cmd(self.auditctl().arg("-a").args(AUDIT_RULE))?;
        Ok(AuditRules {
            audit: self,
            active: true,
        })
    }

    /// Puts back what was changed; safe to call twice.
    fn restore(&mut self) -> Result<()> {
        let mut first_err = None;
        let _ = self.auditctl_quiet("-d", AUDIT_RULE);
        if let Err(e) = self.set_task_rule(self.task_rule_at_start) {
            first_err.get_or_insert(e);
        }
        if let Some(mut child) = self.started.take() {
            signal(&child, libc::SIGTERM);
            match wait_timeout(&mut child, STOP_TIMEOUT) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(backlog) = self.restore_backlog.take() {
            let mut cmd = self.auditctl();
            cmd.args(["-b", &backlog.to_string()]).stdout(Stdio::null());
            if let Err(e) = run_cmd(&mut cmd) {
                first_err.get_or_insert(e);
            }
        }
        if let Some(enabled) = self.restore_enabled.take() {
            let mut cmd = self.auditctl();
            cmd.args(["-e", &enabled.to_string()]).stdout(Stdio::null());
            if let Err(e) = run_cmd(&mut cmd) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e.context("restoring the audit state")),
            None => Ok(()),
        }
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!("xtask: warning: {e:#}");
        }
    }
}

/// The bench's audit rule while it is loaded; removing it hides new
/// processes from audit again.
struct AuditRules<'a> {
    audit: &'a mut Audit,
    active: bool,
}

impl AuditRules<'_> {
    fn remove(mut self) -> Result<()> {
        self.active = false;
        run_cmd(self.audit.auditctl().arg("-d").args(AUDIT_RULE))?;
        self.audit.set_task_rule(true)
    }
}

impl Drop for AuditRules<'_> {
    fn drop(&mut self) {
        if self.active {
            if let Err(e) = self.audit.auditctl_quiet("-d", AUDIT_RULE) {
                eprintln!("xtask: warning: removing the bench's audit rule: {e:#}");
            }
        }
    }
}

/// A scratch directory for ready and log files, removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Result<WorkDir> {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on our own unreaped child: the pid cannot be reused.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Waits up to `timeout`; None if the child is still running then.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C reaches our children too (same process group); we note it and
/// stop at the next step so the guards can undo audit rules.
fn install_sigint_handler() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[derive(Serialize)]
struct Report {
    kernel: String,
    unix_time: u64,
    opens: u64,
    connects: u64,
    rounds: u64,
    /// `-a never,task` was loaded outside the auditd configuration.
    audit_never_task: bool,
    configs: Vec<ConfigResult>,
}

#[derive(Serialize)]
struct ConfigResult {
    config: Config,
    open_ms_median: f64,
    /// Against the baseline of the same run; absent without a baseline.
    open_ratio: Option<f64>,
    connect_ms_median: f64,
    connect_ratio: Option<f64>,
    /// Median over runs of (open loop + connect loop).
    total_ms_median: f64,
    total_ratio: Option<f64>,
    samples: Vec<Sample>,
}

impl Report {
    fn new(
        args: &OverheadArgs,
        configs: &[Config],
        samples: Vec<Vec<Sample>>,
        audit_never_task: bool,
    ) -> Report {
        let medians = |s: &[Sample]| {
            (
                median(s.iter().map(|x| ms(x.open_ns)).collect()),
                median(s.iter().map(|x| ms(x.connect_ns)).collect()),
                median(s.iter().map(|x| ms(x.open_ns + x.connect_ns)).collect()),
            )
        };
        let base = configs
            .iter()
            .position(|c| *c == Config::Baseline)
            .map(|i| medians(&samples[i]));
        let ratio = |v: f64, b: Option<f64>| b.map(|b| v / b);
        let results = configs
            .iter()
            .zip(samples)
            .map(|(&config, samples)| {
                let (open, connect, total) = medians(&samples);
                ConfigResult {
                    config,
                    open_ms_median: open,
                    open_ratio: ratio(open, base.map(|b| b.0)),
                    connect_ms_median: connect,
                    connect_ratio: ratio(connect, base.map(|b| b.1)),
                    total_ms_median: total,
                    total_ratio: ratio(total, base.map(|b| b.2)),
                    samples,
                }
            })
            .collect();
        Report {
            // Metadata only: an unreadable file just leaves it empty.
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            opens: args.opens,
            connects: args.connects,
            rounds: args.rounds,
            audit_never_task,
            configs: results,
        }
    }

    fn table(&self) -> String {
        let ratio = |r: Option<f64>| r.map(|r| format!("x{r:.2}")).unwrap_or_else(|| "-".into());
        let mut s = format!(
            "\nbench overhead: {} opens + {} connects per run, {} round(s), medians; ratio = / baseline\n\n",
            self.opens, self.connects, self.rounds
        );
        if self.audit_never_task {
            s += "(outside the auditd runs, `auditctl -a never,task` kept audit off new processes)\n\n";
        }
        s += &format!(
            "{:<10} {:>12} {:>7} {:>13} {:>7}\n",
            "config", "open ms", "ratio", "connect ms", "ratio"
        );
        for c in &self.configs {
            s += &format!(
                "{:<10} {:>12.1} {:>7} {:>13.1} {:>7}\n",
                c.config.name(),
                c.open_ms_median,
                ratio(c.open_ratio),
                c.connect_ms_median,
                ratio(c.connect_ratio)
            );
        }
        s += "\noverall (open + connect loops):\n";
        for c in &self.configs {
            s += &format!(
                "{:<10} {:>12.1} ms {:>7}\n",
                c.config.name(),
                c.total_ms_median,
                ratio(c.total_ratio)
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in agentguard whose `events --help` prints `help`.
    fn fake_daemon(name: &str, help: &str) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        std::fs::write(&path, format!("#!/bin/sh\necho '{help}'\n"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }

    #[test]
    fn daemon_flags_are_checked() -> Result<()> {
        let old = fake_daemon("old", "Usage: agentguard events [--watch <WATCH>]")?;
        let new = fake_daemon("new", "  --watch <WATCH>\n  --ready-file <READY_FILE>")?;
        let (old_result, new_result) = (check_daemon_flags(&old), check_daemon_flags(&new));
        let _ = std::fs::remove_file(&old);
        let _ = std::fs::remove_file(&new);
        let msg = format!("{:#}", old_result.err().context("old daemon accepted")?);
        assert!(
            msg.contains("--ready-file") && !msg.contains("--watch"),
            "{msg}"
        );
        new_result
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn parses_auditctl_status() -> Result<()> {
        let text =
            "enabled 1\nfailure 1\npid 4242\nrate_limit 0\nbacklog_limit 8192\nlost 7\nbacklog 0\n\
                    backlog_wait_time 60000\nbacklog_wait_time_actual 12\nloginuid_immutable 0 unlocked\n";
        assert_eq!(
            AuditStatus::parse(text)?,
            AuditStatus {
                enabled: 1,
                pid: 4242,
                backlog_limit: 8192,
                lost: 7,
                backlog_wait: Some(12),
            }
        );
        assert!(AuditStatus::parse("enabled x\n").is_err());
        Ok(())
    }

    #[test]
    fn ratios_against_baseline() {
        let sample = |open_ns, connect_ns| Sample {
            round: 1,
            open_ns,
            connect_ns,
            note: None,
        };
        let args = OverheadArgs {
            opens: 1,
            connects: 1,
            rounds: 1,
            configs: vec![],
        };
        let r = Report::new(
            &args,
            &[Config::Baseline, Config::Auditd],
            vec![
                vec![sample(1_000_000, 1_000_000)],
                vec![sample(3_000_000, 1_000_000)],
            ],
            false,
        );
        assert_eq!(r.configs[1].open_ratio, Some(3.0));
        assert_eq!(r.configs[1].connect_ratio, Some(1.0));
        assert_eq!(r.configs[1].total_ratio, Some(2.0));
        let r = Report::new(&args, &[Config::Auditd], vec![vec![sample(1, 1)]], false);
        assert_eq!(r.configs[0].open_ratio, None);
        assert!(r.table().contains(" -"));
    }
}
