//! `bench overhead`: what the sensor costs a busy process, next to running
//! nothing, next to the floor of this design (bpftrace counting the same
//! syscall tracepoints) and next to auditd. Under one monitor instance the
//! workload runs twice: as a host process, then in an agent container.
//! Configurations run in interleaved rounds (rotating order) so drift on
//! the machine hits all of them alike; the bench reports medians and ratios
//! and never asserts anything. For the configurations that run agentguard
//! it also reports the daemon's resident memory, idle and at its peak.

use std::collections::BTreeMap;
use std::ffi::OsString;
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
/// How long agentguard sits idle after it is ready before its idle RSS is
/// read: start-up work (BTF, map set-up, the first container scan) settles.
const IDLE_SETTLE: Duration = Duration::from_secs(1);
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
/// The agent container's image: a static busybox, enough to chroot into
/// the host's root and run this (dynamically linked) binary from there.
pub(crate) const AGENT_IMAGE: &str = "agentguard-bench/busybox:1";
/// The label that makes the container an agent for agentguard.
pub(crate) const AGENT_LABEL: &str = "agentguard.io/agent=bench";
/// Untimed wait in the container before the warm-up, so a monitor that
/// learns about containers from the Docker API knows this one already.
const AGENT_SETTLE_MS: u64 = 500;
/// bpftrace prints "Attaching N probes..." before it attaches them; its
/// BEGIN probe fires once all are attached, so this line means ready.
const BPFTRACE_READY: &str = "agbench: probes attached";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Config {
    /// Nothing monitoring.
    Baseline,
    /// bpftrace counting one syscall tracepoint the loops never hit (getppid).
    Floor1,
    /// bpftrace counting the loops' 4 tracepoints (openat, connect; enter and
    /// exit): the floor of this design.
    Floor,
    /// `agentguard events --watch none`: probes attached, every process filtered out in the kernel.
    Unwatched,
    /// `agentguard events`: every event serialized to JSON (to /dev/null).
    Streamed,
    /// `agentguard run` with the repository's policy pack.
    Run,
    /// `agentguard run --watch agents` with the repository's policy pack.
    RunAgents,
    /// `run` with one tracepoint per hooked syscall instead of the raw
    /// dispatch `run` picks where it can (AGENTGUARD_SYSCALL_HOOKS).
    RunTracepoints,
    /// auditd with a rule on openat and connect.
    Auditd,
}

impl Config {
    const ALL: [Config; 9] = [
        Config::Baseline,
        Config::Floor1,
        Config::Floor,
        Config::Unwatched,
        Config::Streamed,
        Config::Run,
        Config::RunAgents,
        Config::RunTracepoints,
        Config::Auditd,
    ];

    /// Without --configs: all but auditd, which installs and enables audit
    /// on the machine, so it runs only when asked for.
    fn default_set() -> Vec<Config> {
        Config::ALL
            .into_iter()
            .filter(|c| *c != Config::Auditd)
            .collect()
    }

    fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Floor1 => "floor1",
            Config::Floor => "floor",
            Config::Unwatched => "unwatched",
            Config::Streamed => "streamed",
            Config::Run => "run",
            Config::RunAgents => "run-agents",
            Config::RunTracepoints => "run-tracepoints",
            Config::Auditd => "auditd",
        }
    }

    /// agentguard's arguments (subcommand first, `--ready-file` excluded)
    /// for the configurations that run it; its files go in `work`.
    fn daemon_args(self, work: &Path) -> Option<Vec<OsString>> {
        let run = |watch: &[&str]| {
            let mut args: Vec<OsString> = vec!["run".into(), "--policies".into()];
            args.push(crate::root().join("policies").into());
            args.push("--alerts-file".into());
            args.push(work.join("alerts.jsonl").into());
            args.push("--status-socket".into());
            args.push(work.join("status.sock").into());
            args.extend(watch.iter().map(OsString::from));
            args
        };
        let strings = |v: &[&str]| v.iter().map(OsString::from).collect();
        match self {
            Config::Streamed => Some(strings(&["events"])),
            Config::Unwatched => Some(strings(&["events", "--watch", "none"])),
            Config::Run | Config::RunTracepoints => Some(run(&[])),
            Config::RunAgents => Some(run(&["--watch", "agents"])),
            Config::Baseline | Config::Floor1 | Config::Floor | Config::Auditd => None,
        }
    }

    /// Environment for the daemon of this configuration.
    fn daemon_env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Config::RunTracepoints => &[("AGENTGUARD_SYSCALL_HOOKS", "tracepoints")],
            _ => &[],
        }
    }

    /// The bpftrace program of the floor configurations.
    fn bpftrace_program(self) -> Option<&'static str> {
        match self {
            Config::Floor1 => Some("tracepoint:syscalls:sys_enter_getppid { @ = count(); }"),
            Config::Floor => Some(
                "tracepoint:syscalls:sys_enter_openat, tracepoint:syscalls:sys_exit_openat, \
                 tracepoint:syscalls:sys_enter_connect, tracepoint:syscalls:sys_exit_connect \
                 { @[probe] = count(); }",
            ),
            _ => None,
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
    /// Configurations to measure, comma separated [default: all but auditd].
    #[arg(long, value_enum, value_delimiter = ',')]
    configs: Vec<Config>,
    /// Skip the agent-container column (no Docker needed).
    #[arg(long)]
    no_agent: bool,
}

/// Elapsed times of the two loops of one loadgen run.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Loops {
    pub(crate) open_ns: u64,
    pub(crate) connect_ns: u64,
}

impl Loops {
    fn total_ns(self) -> u64 {
        self.open_ns + self.connect_ns
    }
}

/// One round of one configuration: the loadgen as a host process and in an
/// agent container, under the same monitor instance.
#[derive(Clone, Debug, Serialize)]
struct Sample {
    round: u64,
    host: Loops,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<Loops>,
    /// What the monitor said about the run (agentguard's summary, bpftrace's
    /// counts, audit backlog waits or losses).
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    /// agentguard's memory in this run; absent for the other monitors.
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<DaemonMemory>,
}

/// agentguard's resident memory in one run, from /proc/<pid>/status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
struct DaemonMemory {
    /// VmRSS once ready plus [`IDLE_SETTLE`], before the loops.
    idle_rss_kb: u64,
    /// Pss (smaps_rollup) at the same time: VmRSS counts the event ring's
    /// pages twice (the kernel maps them twice, for records that wrap).
    idle_pss_kb: u64,
    /// VmHWM (peak RSS) just before it was stopped, after the loops.
    peak_rss_kb: u64,
}

/// What `measure` needs besides the configuration.
struct Bench {
    load: Loadgen,
    agentguard: PathBuf,
    bpftrace: Option<PathBuf>,
    work: PathBuf,
}

pub fn overhead(args: &OverheadArgs) -> Result<()> {
    let configs: Vec<Config> = if args.configs.is_empty() {
        Config::default_set()
    } else {
        Config::ALL
            .into_iter()
            .filter(|c| args.configs.contains(c))
            .collect()
    };
    let agent = !args.no_agent;
    let mut setup = Setup::default();
    let bin = agentguard_bin();
    // Build (and set up the build) only when agentguard is measured.
    if configs
        .iter()
        .any(|c| c.daemon_args(Path::new("")).is_some())
    {
        setup.all(false)?;
        crate::build()?;
        check_daemon_flags(&bin, &configs)?;
    }
    let bpftrace = if configs.iter().any(|c| c.bpftrace_program().is_some()) {
        Some(setup.bpftrace()?)
    } else {
        None
    };
    if agent {
        setup.docker()?;
        setup.busybox_image(AGENT_IMAGE)?;
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
    let other_monitors = other_monitors();
    for m in &other_monitors {
        eprintln!(
            "xtask: warning: {m} is running; every configuration pays for it \
             (and an agentguard may treat the agent container as an agent)"
        );
    }
    let work = WorkDir::new()?;
    let bench = Bench {
        load: Loadgen {
            exe: std::env::current_exe().context("locating the xtask binary (loadgen)")?,
            work: work.0.clone(),
            opens: args.opens,
            connects: args.connects,
            agent,
        },
        agentguard: bin,
        bpftrace,
        work: work.0.clone(),
    };

    eprintln!(
        "xtask: bench overhead: {} round(s) of {} ({} opens, {} connects per run; {})",
        args.rounds,
        configs
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", "),
        args.opens,
        args.connects,
        if agent {
            "host process, then agent container"
        } else {
            "host process only"
        }
    );
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); configs.len()];
    for round in 0..args.rounds {
        for k in 0..configs.len() {
            // Rotate the order so no configuration always runs first.
            let i = (k + round as usize) % configs.len();
            let config = configs[i];
            check_interrupted()?;
            let sample = match measure(config, round + 1, &bench, audit.as_mut()) {
                Ok(s) => s,
                Err(e) => {
                    check_interrupted()?;
                    return Err(e.context(format!("{} run of round {}", config.name(), round + 1)));
                }
            };
            let loops = |l: Loops| {
                format!(
                    "open {:>9.1} ms  connect {:>9.1} ms",
                    ms(l.open_ns),
                    ms(l.connect_ns)
                )
            };
            eprintln!(
                "xtask: round {}/{} {:<10} host {}{}{}{}",
                round + 1,
                args.rounds,
                config.name(),
                loops(sample.host),
                sample
                    .agent
                    .map(|a| format!("  | agent {}", loops(a)))
                    .unwrap_or_default(),
                sample
                    .memory
                    .map(|m| format!(
                        "  rss idle {:.1} MB (pss {:.1}) peak {:.1} MB",
                        mb(m.idle_rss_kb),
                        mb(m.idle_pss_kb),
                        mb(m.peak_rss_kb)
                    ))
                    .unwrap_or_default(),
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

    let report = Report::new(args, &configs, samples, audit_never_task, other_monitors);
    print!("{}", report.table());
    println!("BENCH_JSON {}", serde_json::to_string(&report.tracking())?);
    write_results("bench-overhead.json", &report)
}

/// Writes `report` as pretty JSON to target/`name`.
pub(crate) fn write_results(name: &str, report: &impl Serialize) -> Result<()> {
    let path = target_dir().join(name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("xtask: results written to {}", path.display());
    Ok(())
}

/// The daemon is written alongside this bench: say plainly when the binary
/// lacks a flag the selected configurations pass (`--ready-file` included,
/// which every daemon start adds).
fn check_daemon_flags(bin: &Path, configs: &[Config]) -> Result<()> {
    // Flag names do not depend on the work dir.
    let uses: Vec<(&str, Vec<OsString>)> = configs
        .iter()
        .filter_map(|c| Some((c.name(), c.daemon_args(Path::new(""))?)))
        .collect();
    check_flags(
        bin,
        &uses,
        "; measure the other configurations with --configs",
    )
}

/// Asks `bin SUBCOMMAND --help` whether it knows every flag in each use's
/// arguments (subcommand first) and `--ready-file`; the error names the
/// missing flags and who (a configuration, a bench) wanted them, then `hint`.
pub(crate) fn check_flags(bin: &Path, uses: &[(&str, Vec<OsString>)], hint: &str) -> Result<()> {
    // Subcommand -> (flags it must know, the users that want them).
    let mut wanted: BTreeMap<String, (Vec<String>, Vec<&str>)> = BTreeMap::new();
    for (user, args) in uses {
        let mut args = args.iter().map(|a| a.to_string_lossy().into_owned());
        let Some(sub) = args.next() else {
            continue;
        };
        let entry = wanted.entry(sub).or_default();
        for flag in args
            .filter(|a| a.starts_with("--"))
            .chain(["--ready-file".to_owned()])
        {
            if !entry.0.contains(&flag) {
                entry.0.push(flag);
            }
        }
        entry.1.push(user);
    }
    let mut problems = Vec::new();
    for (sub, (flags, users)) in &wanted {
        let out = Command::new(bin)
            .args([sub, "--help"])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not run {}", bin.display()))?;
        let help = String::from_utf8_lossy(&out.stdout);
        let missing: Vec<&str> = flags
            .iter()
            .map(String::as_str)
            .filter(|flag| !out.status.success() || !help.contains(flag))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "`{sub} {}` (for {})",
                missing.join(" / "),
                users.join(", ")
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} does not support {} yet{}",
            bin.display(),
            problems.join(", nor "),
            hint
        );
    }
    Ok(())
}

/// The load generator: this binary's hidden `loadgen` command, run as a
/// host process or in the agent container.
pub(crate) struct Loadgen {
    pub(crate) exe: PathBuf,
    /// The bench's work dir; the loadgen's file goes in a directory in it.
    pub(crate) work: PathBuf,
    pub(crate) opens: u64,
    /// 0: no connect loop at all (not even its warm-up).
    pub(crate) connects: u64,
    /// Also run in the agent container.
    pub(crate) agent: bool,
}

impl Loadgen {
    /// The loadgen's arguments after the program name.
    fn args(&self, cmd: &mut Command, dir: &Path, settle_ms: u64) {
        cmd.arg("loadgen")
            .arg("--opens")
            .arg(self.opens.to_string())
            .arg("--connects")
            .arg(self.connects.to_string())
            .arg("--dir")
            .arg(dir)
            .arg("--settle-ms")
            .arg(settle_ms.to_string());
    }

    /// The loadgen as a host process, not started.
    pub(crate) fn host_command(&self) -> Command {
        let mut cmd = Command::new(&self.exe);
        self.args(&mut cmd, &self.work.join("loadgen"), 0);
        cmd
    }

    fn host(&self) -> Result<Loops> {
        parse_timings(&output(&mut self.host_command())?)
    }

    /// The same loadgen in a container labelled as an agent: busybox
    /// chroots into the host's root (read-only, the work dir writable over
    /// it), where this binary and its libraries are at their usual paths.
    fn in_agent(&self) -> Result<Loops> {
        let mut work_mount = self.work.clone().into_os_string();
        work_mount.push(":/host");
        work_mount.push(&self.work);
        let mut cmd = Command::new("docker");
        cmd.args([
            "run",
            "--rm",
            "--label",
            AGENT_LABEL,
            "-v",
            "/:/host:ro",
            "-v",
        ])
        .arg(work_mount)
        .args([AGENT_IMAGE, "/bin/busybox", "chroot", "/host"])
        .arg(&self.exe);
        self.args(&mut cmd, &self.work.join("loadgen-agent"), AGENT_SETTLE_MS);
        parse_timings(&output(&mut cmd)?)
    }

    /// Host run, then (if wanted) the agent run.
    fn run(&self) -> Result<(Loops, Option<Loops>)> {
        let host = self.host()?;
        check_interrupted()?;
        let agent = if self.agent {
            Some(self.in_agent()?)
        } else {
            None
        };
        Ok((host, agent))
    }
}

pub(crate) fn parse_timings(stdout: &str) -> Result<Loops> {
    let t: Timings = serde_json::from_str(stdout.trim())
        .with_context(|| format!("unexpected loadgen output: {stdout:?}"))?;
    Ok(Loops {
        open_ns: t.open_ns,
        connect_ns: t.connect_ns,
    })
}

/// One round of `config`: the monitor started once, both loadgen runs under
/// it, the monitor stopped.
fn measure(config: Config, round: u64, bench: &Bench, audit: Option<&mut Audit>) -> Result<Sample> {
    let load = &bench.load;
    let ((host, agent), note, memory) = match config {
        Config::Baseline => (load.run()?, None, None),
        Config::Floor1 | Config::Floor => {
            let program = config.bpftrace_program().context("no bpftrace program")?;
            let bpftrace = bench
                .bpftrace
                .as_deref()
                .context("bpftrace was not installed")?;
            let monitor = start_bpftrace(bpftrace, program, &bench.work)?;
            let loops = load.run();
            let stopped = monitor.stop();
            let loops = loops?;
            (loops, bpftrace_note(&stopped?), None)
        }
        Config::Streamed
        | Config::Unwatched
        | Config::Run
        | Config::RunAgents
        | Config::RunTracepoints => {
            let args = config
                .daemon_args(&bench.work)
                .context("no daemon arguments")?;
            let mut monitor =
                start_daemon_env(&bench.agentguard, &args, config.daemon_env(), &bench.work)?;
            let idle_rss_kb = monitor.idle_rss_kb()?;
            let idle_pss_kb = monitor.pss_kb()?;
            let loops = load.run();
            // Read before the stop: an exited process has no memory figures.
            let peak_rss_kb = monitor.status_kb("VmHWM");
            let stopped = monitor.stop();
            let loops = loops?;
            // A monitor that died explains a failed read best: its error first.
            let stopped = stopped?;
            let memory = DaemonMemory {
                idle_rss_kb,
                idle_pss_kb,
                peak_rss_kb: peak_rss_kb?,
            };
            // The last stderr line: `events` prints its summary there, `run`
            // its last log line; either is worth seeing, neither is checked.
            (loops, last_line(&stopped), Some(memory))
        }
        Config::Auditd => {
            let audit = audit.context("auditd was not prepared")?;
            let before = audit.status()?;
            let rules = audit.add_rules()?;
            let loops = load.run();
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
            (loops?, note, None)
        }
    };
    Ok(Sample {
        round,
        host,
        agent,
        note,
        memory,
    })
}

/// `agentguard ARGS --ready-file ...`, started and ready.
pub(crate) fn start_daemon(bin: &Path, args: &[OsString], work: &Path) -> Result<Monitor> {
    start_daemon_env(bin, args, &[], work)
}

/// [`start_daemon`] with extra environment variables.
fn start_daemon_env(
    bin: &Path,
    args: &[OsString],
    env: &[(&str, &str)],
    work: &Path,
) -> Result<Monitor> {
    let ready = work.join("agentguard.ready");
    let mut cmd = Command::new(bin);
    cmd.args(args);
    crate::ready::ready_file_arg(&mut cmd, &ready);
    cmd.envs(env.iter().copied());
    // stdout: `events` streams there; only its cost matters, not the JSON.
    cmd.stdout(Stdio::null());
    Monitor::start(cmd, work.join("agentguard.stderr"), false, || {
        ready.exists()
    })
}

/// `bpftrace -e PROGRAM` with a BEGIN probe that says when it is attached.
fn start_bpftrace(bpftrace: &Path, program: &str, work: &Path) -> Result<Monitor> {
    let log = work.join("bpftrace.out");
    let mut cmd = Command::new(bpftrace);
    // Line-buffered: the BEGIN line must reach the file while it runs.
    cmd.args(["-B", "line", "-e"]).arg(format!(
        "BEGIN {{ printf(\"{BPFTRACE_READY}\\n\"); }} {program}"
    ));
    let ready_log = log.clone();
    Monitor::start(cmd, log, true, move || {
        std::fs::read_to_string(&ready_log).is_ok_and(|t| t.contains(BPFTRACE_READY))
    })
}

/// The sum of the counts bpftrace printed at exit (`@[probe]: N` or `@: N`).
fn bpftrace_note(output: &str) -> Option<String> {
    let counts: Vec<u64> = output
        .lines()
        .filter(|l| l.starts_with('@'))
        .filter_map(|l| l.rsplit_once(": ")?.1.trim().parse().ok())
        .collect();
    if counts.is_empty() {
        return last_line(output);
    }
    Some(format!(
        "bpftrace counted {} events",
        counts.iter().sum::<u64>()
    ))
}

pub(crate) fn last_line(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}

/// A running monitor (agentguard, bpftrace) with its stderr in a log file;
/// killed if dropped before [`Monitor::stop`].
pub(crate) struct Monitor {
    child: Child,
    what: String,
    log: PathBuf,
    exited: bool,
}

impl Monitor {
    /// Starts `cmd` with stderr (and stdout if `stdout_to_log`) in `log`,
    /// then waits until `ready` holds.
    fn start(
        mut cmd: Command,
        log: PathBuf,
        stdout_to_log: bool,
        ready: impl Fn() -> bool,
    ) -> Result<Monitor> {
        let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        if stdout_to_log {
            cmd.stdout(
                file.try_clone()
                    .with_context(|| format!("opening {}", log.display()))?,
            );
        }
        cmd.stdin(Stdio::null()).stderr(file);
        let what = describe(&cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start `{what}`"))?;
        let mut monitor = Monitor {
            child,
            what,
            log,
            exited: false,
        };
        let looked = crate::ready::wait_ready(&mut monitor.child, READY_TIMEOUT, || {
            if check_interrupted().is_err() {
                crate::ready::Look::Stop("interrupted".into())
            } else if ready() {
                crate::ready::Look::Ready
            } else {
                crate::ready::Look::NotYet
            }
        });
        if let Err(why) = looked {
            monitor.exited = matches!(why, crate::ready::NotReady::Exited(_));
            bail!("`{}` {why}:\n{}", monitor.what, monitor.log_text());
        }
        Ok(monitor)
    }

    /// Waits [`IDLE_SETTLE`], then reads the monitor's VmRSS.
    pub(crate) fn idle_rss_kb(&mut self) -> Result<u64> {
        std::thread::sleep(IDLE_SETTLE);
        check_interrupted()?;
        self.status_kb("VmRSS")
    }

    /// The monitor's proportional set size (`Pss:` of smaps_rollup).
    pub(crate) fn pss_kb(&mut self) -> Result<u64> {
        self.check_running()?;
        let path = format!("/proc/{}/smaps_rollup", self.child.id());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_status_kb(&text, "Pss").with_context(|| format!("in {path} (`{}`)", self.what))
    }

    /// A `kB` field (VmRSS, VmHWM) of the monitor's /proc/<pid>/status.
    pub(crate) fn status_kb(&mut self, field: &str) -> Result<u64> {
        // Checked first: an exited process (a zombie, or gone) has no Vm*
        // lines, and its log says more than "no VmRSS".
        self.check_running()?;
        let path = format!("/proc/{}/status", self.child.id());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_status_kb(&text, field).with_context(|| format!("in {path} (`{}`)", self.what))
    }

    /// User + system CPU time the monitor has used so far, in clock ticks.
    pub(crate) fn cpu_ticks(&mut self) -> Result<u64> {
        self.check_running()?;
        let path = format!("/proc/{}/stat", self.child.id());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_stat_cpu_ticks(&text).with_context(|| format!("in {path} (`{}`)", self.what))
    }

    /// An error (with the log) if the monitor has exited.
    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            self.exited = true;
            bail!(
                "`{}` exited ({status}) during the run:\n{}",
                self.what,
                self.log_text()
            );
        }
        Ok(())
    }

    /// SIGINT, wait; returns what the monitor logged. A monitor that
    /// stopped on its own during the run, or failed, is an error: the
    /// loops were not (all) monitored.
    pub(crate) fn stop(mut self) -> Result<String> {
        self.check_running()?;
        signal(&self.child, libc::SIGINT);
        let status = wait_timeout(&mut self.child, STOP_TIMEOUT)?.with_context(|| {
            format!(
                "`{}` did not stop within {} s of SIGINT:\n{}",
                self.what,
                STOP_TIMEOUT.as_secs(),
                self.log_text()
            )
        })?;
        self.exited = true;
        let text = self.log_text();
        if !status.success() {
            bail!("`{}` failed ({status}):\n{text}", self.what);
        }
        Ok(text)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The number of a `kB` line (`VmRSS:   12345 kB`) of /proc/<pid>/status.
fn parse_status_kb(status: &str, field: &str) -> Result<u64> {
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .with_context(|| format!("no `{field}:` line"))?;
    let mut words = value.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(n), Some("kB"), None) => n
            .parse()
            .with_context(|| format!("`{field}:{value}`: bad number")),
        _ => bail!("`{field}:{value}`: expected `<number> kB`"),
    }
}

/// utime + stime (fields 14 and 15) of /proc/<pid>/stat, in clock ticks.
fn parse_stat_cpu_ticks(stat: &str) -> Result<u64> {
    // Field 2, the command name in parentheses, may hold spaces and ')':
    // count the fields after its last ')'; that rest starts at field 3.
    let (_, rest) = stat
        .rsplit_once(')')
        .context("no `(comm)` field in /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        let text = fields
            .get(n - 3)
            .with_context(|| format!("/proc/<pid>/stat has no field {n}"))?;
        text.parse()
            .with_context(|| format!("/proc/<pid>/stat field {n}: bad number {text:?}"))
    };
    Ok(field(14)? + field(15)?)
}

impl Drop for Monitor {
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

/// Monitors already running that the bench did not start (`agentguard
/// (pid N)`), from /proc/*/comm: they weigh on every configuration alike,
/// baseline included, so the results should say so.
pub(crate) fn other_monitors() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<(u32, String)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            // A process may exit between listing and reading: skip it.
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let comm = comm.trim();
            ["agentguard", "bpftrace"]
                .contains(&comm)
                .then(|| (pid, comm.to_owned()))
        })
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|(pid, comm)| format!("{comm} (pid {pid})"))
        .collect()
}

/// A scratch directory for ready and log files, removed on drop.
pub(crate) struct WorkDir(pub(crate) PathBuf);

impl WorkDir {
    pub(crate) fn new() -> Result<WorkDir> {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Absolute and free of symlinks: the agent container mounts it at
        // the same path under the host's root.
        let dir =
            std::fs::canonicalize(&dir).with_context(|| format!("resolving {}", dir.display()))?;
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
pub(crate) fn install_sigint_handler() {
    let handler: extern "C" fn(libc::c_int) = on_sigint;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
}

pub(crate) fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

pub(crate) fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
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

/// The running kernel's release, for the report. Metadata only: an
/// unreadable file just leaves it empty.
pub(crate) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Seconds since the epoch, for the report (0 if the clock is before it).
pub(crate) fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The median of whole numbers (kB, counts), rounded to a whole number;
/// None if there are none.
pub(crate) fn median_round(v: impl IntoIterator<Item = u64>) -> Option<u64> {
    let v: Vec<f64> = v.into_iter().map(|kb| kb as f64).collect();
    // Non-negative and finite: the cast back cannot truncate a sign.
    (!v.is_empty()).then(|| median(v).round() as u64)
}

/// kB as MB (MiB, as `free -m` counts) for the tables.
pub(crate) fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

#[derive(Serialize)]
struct Report {
    kernel: String,
    unix_time: u64,
    opens: u64,
    connects: u64,
    rounds: u64,
    /// The loadgen also ran in an agent container (image, label, settle
    /// time: see the constants in xtask/src/bench.rs).
    agent_container: bool,
    /// `-a never,task` was loaded outside the auditd configuration.
    audit_never_task: bool,
    /// Monitors the bench found running and did not start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    other_monitors: Vec<String>,
    configs: Vec<ConfigResult>,
}

#[derive(Serialize)]
struct ConfigResult {
    config: Config,
    host: Column,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<Column>,
    /// Median over rounds of agentguard's VmRSS 1 s after it was ready,
    /// before the loops (kB); absent for configurations without agentguard.
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_rss_kb: Option<u64>,
    /// Median over rounds of its Pss read with the idle VmRSS (kB).
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_pss_kb: Option<u64>,
    /// Median over rounds of agentguard's VmHWM (peak RSS) at the end of
    /// the run (kB).
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_rss_kb: Option<u64>,
    samples: Vec<Sample>,
}

/// Medians of one configuration in one column (host or agent container).
#[derive(Serialize)]
struct Column {
    open_ms_median: f64,
    /// Against the baseline of the same column; absent without a baseline.
    open_ratio: Option<f64>,
    connect_ms_median: f64,
    connect_ratio: Option<f64>,
    /// Median over runs of (open loop + connect loop).
    total_ms_median: f64,
    total_ratio: Option<f64>,
}

/// The ratios of a column, for the BENCH_JSON line.
#[derive(Serialize)]
struct Ratios {
    open_ratio: Option<f64>,
    connect_ratio: Option<f64>,
    total_ratio: Option<f64>,
}

impl Column {
    /// None without loops (the agent column under --no-agent).
    fn new(loops: &[Loops], base: Option<&Column>) -> Option<Column> {
        if loops.is_empty() {
            return None;
        }
        let med = |f: fn(Loops) -> u64| median(loops.iter().map(|&l| ms(f(l))).collect());
        let (open, connect, total) = (
            med(|l| l.open_ns),
            med(|l| l.connect_ns),
            med(Loops::total_ns),
        );
        let ratio = |v: f64, b: fn(&Column) -> f64| base.map(|base| v / b(base));
        Some(Column {
            open_ms_median: open,
            open_ratio: ratio(open, |b| b.open_ms_median),
            connect_ms_median: connect,
            connect_ratio: ratio(connect, |b| b.connect_ms_median),
            total_ms_median: total,
            total_ratio: ratio(total, |b| b.total_ms_median),
        })
    }

    fn ratios(&self) -> Ratios {
        Ratios {
            open_ratio: self.open_ratio,
            connect_ratio: self.connect_ratio,
            total_ratio: self.total_ratio,
        }
    }
}

impl Report {
    fn new(
        args: &OverheadArgs,
        configs: &[Config],
        samples: Vec<Vec<Sample>>,
        audit_never_task: bool,
        other_monitors: Vec<String>,
    ) -> Report {
        let host = |s: &[Sample]| s.iter().map(|x| x.host).collect::<Vec<_>>();
        let agent = |s: &[Sample]| s.iter().filter_map(|x| x.agent).collect::<Vec<_>>();
        let base = configs
            .iter()
            .position(|c| *c == Config::Baseline)
            .map(|i| {
                (
                    Column::new(&host(&samples[i]), None),
                    Column::new(&agent(&samples[i]), None),
                )
            });
        let (base_host, base_agent) = match &base {
            Some((h, a)) => (h.as_ref(), a.as_ref()),
            None => (None, None),
        };
        let results = configs
            .iter()
            .zip(samples)
            .map(|(&config, samples)| ConfigResult {
                config,
                // Every sample has a host run, so the column exists.
                host: Column::new(&host(&samples), base_host).unwrap_or(Column {
                    open_ms_median: f64::NAN,
                    open_ratio: None,
                    connect_ms_median: f64::NAN,
                    connect_ratio: None,
                    total_ms_median: f64::NAN,
                    total_ratio: None,
                }),
                agent: Column::new(&agent(&samples), base_agent),
                idle_rss_kb: median_round(
                    samples.iter().filter_map(|x| Some(x.memory?.idle_rss_kb)),
                ),
                idle_pss_kb: median_round(
                    samples.iter().filter_map(|x| Some(x.memory?.idle_pss_kb)),
                ),
                peak_rss_kb: median_round(
                    samples.iter().filter_map(|x| Some(x.memory?.peak_rss_kb)),
                ),
                samples,
            })
            .collect();
        Report {
            kernel: kernel_release(),
            unix_time: unix_time(),
            opens: args.opens,
            connects: args.connects,
            rounds: args.rounds,
            agent_container: !args.no_agent,
            audit_never_task,
            other_monitors,
            configs: results,
        }
    }

    /// The one-line summary printed as `BENCH_JSON ...` for tracking.
    fn tracking(&self) -> serde_json::Value {
        serde_json::json!({
            "kernel": self.kernel,
            "unix_time": self.unix_time,
            "configs": self
                .configs
                .iter()
                .map(|c| serde_json::json!({
                    "config": c.config,
                    "host": c.host.ratios(),
                    "agent": c.agent.as_ref().map(Column::ratios),
                    "idle_rss_kb": c.idle_rss_kb,
                    "idle_pss_kb": c.idle_pss_kb,
                    "peak_rss_kb": c.peak_rss_kb,
                }))
                .collect::<Vec<_>>(),
        })
    }

    fn table(&self) -> String {
        let ratio = |r: Option<f64>| r.map(|r| format!("x{r:.2}")).unwrap_or_else(|| "-".into());
        // One group of columns: open ms, ratio, connect ms, ratio, overall ratio.
        let cells = |c: Option<&Column>| match c {
            Some(c) => format!(
                "{:>9.1} {:>6} {:>11.1} {:>6} {:>8}",
                c.open_ms_median,
                ratio(c.open_ratio),
                c.connect_ms_median,
                ratio(c.connect_ratio),
                ratio(c.total_ratio)
            ),
            None => format!("{:>9} {:>6} {:>11} {:>6} {:>8}", "-", "-", "-", "-", "-"),
        };
        let header = format!(
            "{:>9} {:>6} {:>11} {:>6} {:>8}",
            "open ms", "ratio", "connect ms", "ratio", "overall"
        );
        let width = header.len();
        let agent = self.configs.iter().any(|c| c.agent.is_some());

        let mut s = format!(
            "\nbench overhead: {} opens + {} connects per run, {} round(s), medians; \
             ratio = / baseline of the same column; overall = open + connect loops\n",
            self.opens, self.connects, self.rounds
        );
        if agent {
            s += &format!(
                "agent container: {AGENT_IMAGE}, label {AGENT_LABEL}, the same loadgen \
                 (chroot to the host's root) after {AGENT_SETTLE_MS} ms untimed\n"
            );
        }
        if self.audit_never_task {
            s += "(outside the auditd runs, `auditctl -a never,task` kept audit off new processes)\n";
        }
        if !self.other_monitors.is_empty() {
            s += &format!(
                "warning: also running during every run, baseline included: {}\n",
                self.other_monitors.join(", ")
            );
        }
        s += "\n";
        let mut groups = format!("{:<10} | {:^width$}", "", "host process");
        if agent {
            groups += &format!(" | {:^width$}", "agent container");
        }
        // Centring pads the last title with spaces.
        s += groups.trim_end();
        s += "\n";
        s += &format!("{:<10} | {header}", "config");
        if agent {
            s += &format!(" | {header}");
        }
        s += "\n";
        for c in &self.configs {
            s += &format!("{:<10} | {}", c.config.name(), cells(Some(&c.host)));
            if agent {
                s += &format!(" | {}", cells(c.agent.as_ref()));
            }
            s += "\n";
        }
        s += &self.memory_table();
        s
    }

    /// The "daemon memory" section; empty when no configuration ran agentguard.
    fn memory_table(&self) -> String {
        let rows: Vec<_> = self
            .configs
            .iter()
            .filter(|c| c.idle_rss_kb.is_some() || c.peak_rss_kb.is_some())
            .collect();
        if rows.is_empty() {
            return String::new();
        }
        let cell = |kb: Option<u64>| match kb {
            Some(kb) => format!("{:>8.1}", mb(kb)),
            None => format!("{:>8}", "-"),
        };
        let mut s = format!(
            "\ndaemon memory (median): idle = VmRSS {} s after ready, before the loops \
             (pss: Pss then, the event ring's pages counted once); peak = VmHWM at stop\n\
             {:<10} | {:>8} {:>8} {:>8}\n",
            IDLE_SETTLE.as_secs(),
            "config",
            "idle MB",
            "pss MB",
            "peak MB"
        );
        for c in rows {
            s += &format!(
                "{:<10} | {} {} {}\n",
                c.config.name(),
                cell(c.idle_rss_kb),
                cell(c.idle_pss_kb),
                cell(c.peak_rss_kb)
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in agentguard whose `events --help` and `run --help` print
    /// `events` and `run`.
    fn fake_daemon(name: &str, events: &str, run: &str) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\ncase \"$1\" in\n  events) echo '{events}';;\n  run) echo '{run}';;\n  \
                 *) exit 2;;\nesac\n"
            ),
        )?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(path)
    }

    #[test]
    fn daemon_flags_are_checked() -> Result<()> {
        let _exec = crate::EXEC_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let run_old = "--policies --alerts-file --status-socket --watch";
        let run_new = "--policies --alerts-file --status-socket --watch --ready-file";
        let old = fake_daemon("old", "Usage: agentguard events [--watch <WATCH>]", run_old)?;
        let new = fake_daemon(
            "new",
            "  --watch <WATCH>\n  --ready-file <READY_FILE>",
            run_new,
        )?;
        let results = (
            check_daemon_flags(&old, &[Config::Unwatched]),
            check_daemon_flags(&old, &[Config::Baseline, Config::Floor, Config::Run]),
            check_daemon_flags(&old, &[Config::Floor1, Config::Auditd]),
            check_daemon_flags(&new, &Config::ALL),
        );
        let _ = std::fs::remove_file(&old);
        let _ = std::fs::remove_file(&new);
        let msg = format!("{:#}", results.0.err().context("old events accepted")?);
        assert!(
            msg.contains("`events --ready-file`") && !msg.contains("--watch"),
            "{msg}"
        );
        let msg = format!("{:#}", results.1.err().context("old run accepted")?);
        assert!(
            msg.contains("`run --ready-file` (for run)") && !msg.contains("events"),
            "{msg}"
        );
        // No daemon configuration: the binary is not asked.
        results.2?;
        results.3
    }

    #[test]
    fn config_names_and_defaults() -> Result<()> {
        for c in Config::ALL {
            let parsed = Config::from_str(c.name(), false).map_err(anyhow::Error::msg)?;
            assert_eq!(parsed, c);
            assert_eq!(serde_json::to_value(c)?, c.name());
        }
        assert!(!Config::default_set().contains(&Config::Auditd));
        assert_eq!(Config::default_set().len(), Config::ALL.len() - 1);
        let args = Config::RunAgents
            .daemon_args(Path::new("/w"))
            .context("run-agents runs the daemon")?;
        let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        assert_eq!(args[0], "run");
        assert!(args
            .windows(2)
            .any(|w| w[0] == "--watch" && w[1] == "agents"));
        assert!(args
            .windows(2)
            .any(|w| w[0] == "--status-socket" && w[1] == "/w/status.sock"));
        assert!(args.last().is_some_and(|a| a == "agents"));
        Ok(())
    }

    #[test]
    fn bpftrace_counts_are_summed() {
        let out = "Attaching 5 probes...\nagbench: probes attached\n\n\n\
                   @[tracepoint:syscalls:sys_enter_openat]: 20100\n\
                   @[tracepoint:syscalls:sys_exit_openat]: 20100\n";
        assert_eq!(
            bpftrace_note(out).as_deref(),
            Some("bpftrace counted 40200 events")
        );
        assert_eq!(
            bpftrace_note("Attaching 2 probes...\n\n@: 3\n").as_deref(),
            Some("bpftrace counted 3 events")
        );
        assert_eq!(
            bpftrace_note("Attaching 2 probes...\n").as_deref(),
            Some("Attaching 2 probes...")
        );
    }

    #[test]
    fn parses_proc_status_kb() -> Result<()> {
        let status = "Name:\tagentguard\nUmask:\t0022\nState:\tS (sleeping)\n\
                      VmPeak:\t  812344 kB\nVmHWM:\t   61440 kB\nVmRSS:\t   40960 kB\n\
                      RssAnon:\t   20480 kB\nThreads:\t5\n";
        assert_eq!(parse_status_kb(status, "VmRSS")?, 40960);
        let rollup = "20000000000-7ffe3164e000 ---p 00000000 00:00 0  [rollup]\n\
                      Rss:               32928 kB\nPss_Dirty:   22276 kB\nPss:  27295 kB\n";
        assert_eq!(parse_status_kb(rollup, "Pss")?, 27295);
        assert_eq!(parse_status_kb(status, "VmHWM")?, 61440);
        // A prefix of another field is not that field.
        let msg = format!("{:#}", parse_status_kb(status, "Vm").err().context("Vm")?);
        assert!(msg.contains("no `Vm:` line"), "{msg}");
        // A zombie's status has no Vm* lines.
        let zombie = "Name:\tagentguard\nState:\tZ (zombie)\nThreads:\t1\n";
        let msg = format!(
            "{:#}",
            parse_status_kb(zombie, "VmRSS").err().context("zombie")?
        );
        assert!(msg.contains("no `VmRSS:` line"), "{msg}");
        for bad in [
            "VmRSS:\t 12 MB\n",
            "VmRSS:\t x kB\n",
            "VmRSS:\n",
            "VmRSS: 1 kB 2\n",
        ] {
            assert!(parse_status_kb(bad, "VmRSS").is_err(), "{bad:?}");
        }
        Ok(())
    }

    #[test]
    fn parses_proc_stat_cpu_ticks() -> Result<()> {
        // Fields 14 (utime) = 150 and 15 (stime) = 25; the comm holds ") ".
        let stat = "4242 (agent) guard) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 25 0 0 \
                    20 0 5 0 12345 831848448 10240 18446744073709551615\n";
        assert_eq!(parse_stat_cpu_ticks(stat)?, 175);
        assert!(parse_stat_cpu_ticks("4242 (agentguard) S 1 2 3").is_err());
        assert!(parse_stat_cpu_ticks("no parenthesis").is_err());
        Ok(())
    }

    #[test]
    fn daemon_memory_medians_and_table() -> Result<()> {
        let with_memory = |idle, peak| Sample {
            memory: Some(DaemonMemory {
                idle_rss_kb: idle,
                idle_pss_kb: idle - 2048,
                peak_rss_kb: peak,
            }),
            ..sample((1, 1), None)
        };
        let r = Report::new(
            &args(true),
            &[Config::Baseline, Config::Streamed],
            vec![
                vec![sample((1, 1), None), sample((1, 1), None)],
                vec![with_memory(10240, 30720), with_memory(12288, 40960)],
            ],
            false,
            vec![],
        );
        assert_eq!(r.configs[0].idle_rss_kb, None);
        assert_eq!(r.configs[1].idle_rss_kb, Some(11264));
        assert_eq!(r.configs[1].idle_pss_kb, Some(9216));
        assert_eq!(r.configs[1].peak_rss_kb, Some(35840));
        let table = r.table();
        assert!(table.contains("daemon memory (median)"), "{table}");
        assert!(
            table.contains("streamed   |     11.0      9.0     35.0"),
            "{table}"
        );
        assert!(!table.contains("baseline   |      -"), "{table}");
        let json = serde_json::to_value(&r)?;
        assert_eq!(json["configs"][1]["idle_rss_kb"], 11264);
        assert_eq!(json["configs"][1]["peak_rss_kb"], 35840);
        assert_eq!(r.tracking()["configs"][1]["idle_pss_kb"], 9216);
        assert!(json["configs"][0].get("idle_rss_kb").is_none());
        assert_eq!(
            json["configs"][1]["samples"][0]["memory"]["peak_rss_kb"],
            30720
        );
        assert_eq!(r.tracking()["configs"][1]["peak_rss_kb"], 35840);

        // No agentguard configuration: no memory section.
        let r = Report::new(
            &args(true),
            &[Config::Baseline],
            vec![vec![sample((1, 1), None)]],
            false,
            vec![],
        );
        assert!(!r.table().contains("daemon memory"));
        Ok(())
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

    fn sample(host: (u64, u64), agent: Option<(u64, u64)>) -> Sample {
        let loops = |(open_ns, connect_ns)| Loops {
            open_ns,
            connect_ns,
        };
        Sample {
            round: 1,
            host: loops(host),
            agent: agent.map(loops),
            note: None,
            memory: None,
        }
    }

    fn args(no_agent: bool) -> OverheadArgs {
        OverheadArgs {
            opens: 1,
            connects: 1,
            rounds: 1,
            configs: vec![],
            no_agent,
        }
    }

    #[test]
    fn ratios_against_baseline_per_column() -> Result<()> {
        let ms = 1_000_000;
        let r = Report::new(
            &args(false),
            &[Config::Baseline, Config::Floor],
            vec![
                vec![sample((ms, ms), Some((2 * ms, 2 * ms)))],
                vec![sample((3 * ms, ms), Some((2 * ms, 6 * ms)))],
            ],
            false,
            vec![],
        );
        let host = &r.configs[1].host;
        assert_eq!(host.open_ratio, Some(3.0));
        assert_eq!(host.connect_ratio, Some(1.0));
        assert_eq!(host.total_ratio, Some(2.0));
        let agent = r.configs[1].agent.as_ref().context("agent column")?;
        assert_eq!(agent.open_ratio, Some(1.0));
        assert_eq!(agent.connect_ratio, Some(3.0));
        assert_eq!(agent.total_ratio, Some(2.0));
        let table = r.table();
        assert!(table.contains("agent container"), "{table}");
        let json = r.tracking();
        assert_eq!(json["configs"][1]["config"], "floor");
        assert_eq!(json["configs"][1]["host"]["open_ratio"], 3.0);
        assert_eq!(json["configs"][1]["agent"]["total_ratio"], 2.0);

        // No baseline: no ratios. No agent column: none in the table or JSON.
        let r = Report::new(
            &args(true),
            &[Config::Auditd],
            vec![vec![sample((1, 1), None)]],
            false,
            vec!["bpftrace (pid 1)".into()],
        );
        assert_eq!(r.configs[0].host.open_ratio, None);
        assert!(r.configs[0].agent.is_none());
        let table = r.table();
        assert!(table.contains(" -") && !table.contains("agent"), "{table}");
        assert!(
            table.contains("baseline included: bpftrace (pid 1)"),
            "{table}"
        );
        assert!(r.tracking()["configs"][0]["agent"].is_null());
        Ok(())
    }
}
