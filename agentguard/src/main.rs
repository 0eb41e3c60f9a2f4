//! agentguard command line.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{anyhow, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};

use agentguard::event::{Event, Kind};
use agentguard::identity::resolver::{ContainerMap, Resolver, DEFAULT_AGENTS};
use agentguard::identity::stage::{IdentityStage, DEFAULT_MAX_WAIT};
use agentguard::identity::watch;
use agentguard::outputs::jsonl::{EventLine, LineWriter, Plain};
use agentguard::sensor::{features, Sensor, SensorOptions};

/// See `agentguard::alloc`.
#[global_allocator]
static HEAP: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tunes the heap before the first allocation (the Rust runtime allocates
/// before `main`, and mimalloc fixes an arena's settings when it first
/// reserves one): run by the loader with the program's constructors.
#[used]
#[link_section = ".init_array"]
static TUNE_HEAP: extern "C" fn() = tune_heap;

extern "C" fn tune_heap() {
    agentguard::alloc::tune();
}

#[derive(Parser)]
#[command(
    name = "agentguard",
    version,
    about = "Runtime guard for AI-agent workloads: eBPF events, policy, enforcement"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Watch {
    /// Every process streams (except agentguard itself).
    All,
    /// Only processes named with --pid and their new children.
    None,
    /// Agents and their descendants (every kind); other processes stream
    /// only exec/fork/exit, which identity needs to find new agents.
    Agents,
}

// Parsed once per process: the size difference of the variants is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Stream events as JSON lines (one object per line) until Ctrl-C.
    Events {
        /// Event kinds, comma separated: exec,fork,exit,open,unlink,rmdir,rename,truncate,connect,send,io_uring_setup.
        #[arg(long, value_delimiter = ',')]
        kind: Vec<String>,
        /// Only process PID and the children it starts from now on (filtered in the kernel). Repeatable.
        #[arg(long)]
        pid: Vec<u32>,
        /// Only events whose comm (process name, 15 chars) is NAME. Repeatable.
        #[arg(long)]
        comm: Vec<String>,
        /// Only events from this container (name, full id or id prefix). Repeatable.
        #[arg(long)]
        container: Vec<String>,
        /// Only events of this agent (label or ancestry name, e.g. claude). Repeatable.
        #[arg(long)]
        agent: Vec<String>,
        /// Docker API socket (default /var/run/docker.sock).
        #[arg(long)]
        docker_socket: Option<String>,
        /// Which processes stream by default.
        #[arg(long, value_enum, default_value_t = Watch::All)]
        watch: Watch,
        /// Write this file once the probes are attached (for scripts).
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Write events here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Events that may wait for the output before new ones are dropped.
        #[arg(long, default_value_t = 65536)]
        queue: usize,
    },
    /// List containers (Docker) and agent processes running now.
    Ps {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Docker API socket (default /var/run/docker.sock).
        #[arg(long)]
        docker_socket: Option<String>,
    },
    /// Policy tooling: lint and unit-test policy packs (no root needed).
    Policy {
        #[command(subcommand)]
        cmd: agentguard::policy::cli::PolicyCmd,
    },
    /// Evaluate recorded events (JSON lines) against policies; print decisions as JSON lines.
    Replay(agentguard::policy::cli::ReplayArgs),
    /// Write a policy (and its tests) from what an agent did: recorded events, or watched now.
    Learn(agentguard::learn::LearnArgs),
    /// Show what the running daemon is doing (read from its status socket; root).
    Status(agentguard::status::StatusArgs),
    /// Give tainted subjects their network back (a taint rule took it; root).
    Untaint(agentguard::enforcement::untaint::UntaintArgs),
    /// The daemon: watch, decide with the policies, act (kill/deny), report alerts.
    Run {
        #[command(flatten)]
        flags: agentguard::config::RunFlags,
        /// Remove the pinned deny programs and enforcement maps, then exit.
        #[arg(long)]
        cleanup: bool,
        /// Write this file (holding the pid) once running (for scripts).
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Report what this kernel supports and which agentguard features that enables.
    Check {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENTGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn parse_kinds(names: &[String]) -> Result<Vec<Kind>> {
    if names.is_empty() {
        return Ok(Kind::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| {
            Kind::parse(n.trim()).ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                anyhow!("unknown event kind {n:?}; known kinds: {}", known.join(","))
            })
        })
        .collect()
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if matches!(
        cli.cmd,
        Cmd::Check { .. } | Cmd::Policy { .. } | Cmd::Replay(_) | Cmd::Status(_) | Cmd::Ps { .. }
    ) {
        // Report commands end quietly when their reader goes away (`| head`),
        // like other Unix tools, instead of panicking on EPIPE. The daemon
        // and `events` keep Rust's default: they hold kernel state to clean
        // up and see EPIPE as an error.
        // SAFETY: called before any thread exists; only changes a disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.cmd {
        Cmd::Check { json } => check(json),
        Cmd::Run {
            flags,
            cleanup,
            ready_file,
        } => run(&flags, cleanup, ready_file),
        Cmd::Policy { cmd } => agentguard::policy::cli::run(cmd),
        Cmd::Replay(args) => agentguard::policy::cli::run_replay(args),
        Cmd::Learn(args) => agentguard::learn::run(args),
        Cmd::Status(args) => agentguard::status::run_cli(args),
        Cmd::Untaint(args) => agentguard::enforcement::untaint::run(&args),
        Cmd::Ps {
            json,
            docker_socket,
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")
            .and_then(|rt| {
                let snap = rt.block_on(agentguard::identity::snapshot::take(
                    docker_socket.as_deref(),
                    DEFAULT_AGENTS,
                ));
                if json {
                    println!("{}", serde_json::to_string_pretty(&snap)?);
                } else {
                    print!("{}", snap.render());
                }
                Ok(())
            }),
        Cmd::Events {
            kind,
            pid,
            comm,
            container,
            agent,
            docker_socket,
            watch,
            ready_file,
            output,
            queue,
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the tokio runtime")
            .and_then(|rt| {
                rt.block_on(events(EventsArgs {
                    kind,
                    pids: pid,
                    comms: comm,
                    containers: container,
                    agents: agent,
                    docker_socket,
                    watch,
                    ready_file,
                    output,
                    queue,
                }))
            }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentguard: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(
    flags: &agentguard::config::RunFlags,
    cleanup: bool,
    ready_file: Option<PathBuf>,
) -> Result<()> {
    agentguard::daemon::preflight()?;
    if cleanup {
        return agentguard::daemon::cleanup(std::path::Path::new(agentguard::sensor::PIN_DIR));
    }
    let cfg = agentguard::config::Config::resolve(flags).map_err(|e| anyhow!("{e}"))?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(agentguard::daemon::run(cfg, ready_file.as_deref()))
}

fn check(json: bool) -> Result<()> {
    let report = features::detect();
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render_table());
    }
    Ok(())
}

struct EventsArgs {
    kind: Vec<String>,
    pids: Vec<u32>,
    comms: Vec<String>,
    containers: Vec<String>,
    agents: Vec<String>,
    docker_socket: Option<String>,
    watch: Watch,
    ready_file: Option<PathBuf>,
    output: Option<PathBuf>,
    queue: usize,
}

/// Does `ev` pass the identity filters?
fn identity_matches(ev: &Event, containers: &[String], agents: &[String]) -> bool {
    let id = ev.identity.as_ref();
    let container_ok = containers.is_empty()
        || id.and_then(|i| i.container.as_ref()).is_some_and(|c| {
            containers.iter().any(|want| {
                c.id.starts_with(want.as_str())
                    || c.info.as_ref().is_some_and(|info| info.name == *want)
            })
        });
    let agent_ok = agents.is_empty()
        || id
            .and_then(|i| i.agent.as_ref())
            .is_some_and(|a| agents.contains(&a.name));
    container_ok && agent_ok
}

/// Where `events` sends tagged events: the filters, then the sink.
struct EventsOut {
    sink: LineWriter<EventLine>,
    comms: Vec<String>,
    containers: Vec<String>,
    agents: Vec<String>,
    seen: u64,
    /// watch=agents: agent processes to widen to every kind, applied after
    /// each read (the sensor is busy during it).
    widen_agents: bool,
    widen: Vec<u32>,
    widened: std::collections::HashSet<u32>,
}

impl EventsOut {
    fn emit(&mut self, ev: Event) {
        if self.widen_agents
            && ev.kind != Kind::Exit
            && ev.identity.as_ref().is_some_and(|i| i.agent.is_some())
            && !self.widened.contains(&ev.pid)
        {
            self.widen.push(ev.pid);
        }
        if (self.comms.is_empty() || self.comms.contains(&ev.comm))
            && identity_matches(&ev, &self.containers, &self.agents)
        {
            self.seen += 1;
            self.sink.send(EventLine(ev));
        }
    }
}

async fn events(args: EventsArgs) -> Result<()> {
    let EventsArgs {
        kind,
        pids,
        comms,
        containers,
        agents,
        docker_socket,
        watch,
        ready_file,
        output,
        queue,
    } = args;
    let kinds = parse_kinds(&kind)?;
    let opts = SensorOptions {
        kinds: kinds.clone(),
        // Naming pids means "only these".
        watch_all: watch == Watch::All && pids.is_empty(),
        ..Default::default()
    };
    let mut sensor = Sensor::start(&opts)?;
    for pid in &pids {
        sensor.set_filter(*pid, &kinds)?;
    }
    let sink: LineWriter<EventLine> = match &output {
        Some(path) => {
            let f = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            LineWriter::spawn(Plain::new(f), queue)?
        }
        None => LineWriter::spawn(Plain::new(std::io::stdout()), queue)?,
    };
    // Listeners made once, and before the ready file: a ctrl_c() future
    // re-created per loop turn would miss a signal that lands between two
    // turns, and one sent right after "ready" would find no handler.
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    if let Some(path) = &ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing ready file {}", path.display()))?;
    }
    eprintln!(
        "agentguard: streaming {} ({} probes attached, syscall hooks: {}); Ctrl-C to stop",
        kinds
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(","),
        sensor.attached().len(),
        sensor.syscall_hooks().as_str()
    );
    if watch == Watch::Agents && pids.is_empty() {
        sensor.set_default(&[Kind::Exec, Kind::Fork, Kind::Exit])?;
    }
    let container_map = ContainerMap::default();
    let (wanted_tx, _) = watch::spawn_runtimes(container_map.clone(), docker_socket, None);
    let mut resolver = Resolver::new(container_map, DEFAULT_AGENTS);
    let existing = agentguard::sensor::cgroups::walk_host().unwrap_or_default();
    if let Some(paths) = sensor.take_cgroup_paths(&existing) {
        resolver = resolver.with_cgroup_paths(Box::new(move |cg| paths.get(cg)));
    }
    let mut stage = IdentityStage::new(resolver, wanted_tx, DEFAULT_MAX_WAIT);
    let mut out = EventsOut {
        sink,
        comms,
        containers,
        agents,
        seen: 0,
        widen_agents: watch == Watch::Agents,
        widen: Vec::new(),
        widened: std::collections::HashSet::new(),
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(5));
    loop {
        let holding = stage.is_holding();
        let mut on_event = |ev: Event| stage.push(ev, Instant::now(), &mut |e| out.emit(e));
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            r = sensor.read(&mut on_event) => { r?; }
            // Held events (new container, metadata on its way) are
            // re-checked every tick until released.
            _ = tick.tick(), if holding => {}
        }
        stage.drain(Instant::now(), &mut |e| out.emit(e));
        for pid in std::mem::take(&mut out.widen) {
            if out.widened.insert(pid) {
                if let Err(e) = sensor.set_filter(pid, &kinds) {
                    tracing::warn!("widening the kernel filter to agent pid {pid}: {e:#}");
                }
            }
        }
    }
    stage.flush(&mut |e| out.emit(e));
    let EventsOut { sink, seen, .. } = out;
    let lost = sensor.lost_events();
    let decode_errors = sensor.decode_errors();
    let stats = sink.close();
    eprintln!(
        "agentguard: {seen} events, {} written, {} dropped by the output queue, {lost} lost in the kernel (ring buffer full), {decode_errors} undecodable",
        stats.written.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
    );
    if let Some(path) = &ready_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
