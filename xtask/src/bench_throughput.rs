//! `bench throughput`: how many events per second `agentguard events`
//! takes in, and whether it loses any, when parallel producers (loadgen
//! processes in an openat + close loop) run flat out. Rounds alternate the
//! producers alone (their own rate) and under agentguard; the bench reports
//! medians and loss counts and never asserts anything.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde::Serialize;

use crate::bench::{
    check_flags, check_interrupted, install_sigint_handler, kernel_release, last_line, mb, median,
    median_round, ms, other_monitors, parse_timings, start_daemon, unix_time, write_results,
    Loadgen, Monitor, WorkDir,
};
use crate::loadgen::WARMUP;
use crate::setup::Setup;
use crate::{agentguard_bin, describe};

/// agentguard's arguments (`--ready-file` is added by `start_daemon`):
/// open events only, JSON serialized and written, to a sink that costs
/// nothing itself.
const DAEMON_ARGS: &[&str] = &["events", "--kind", "open", "--output", "/dev/null"];
/// After the producers, agentguard's CPU use is polled this often until it
/// goes idle: it may still be reading a backlog from the ring buffer, and
/// SIGINT ends it without reading further (those events would count
/// nowhere, neither written nor lost).
const DRAIN_POLL: Duration = Duration::from_millis(200);
/// Less CPU than this per poll is idle: 2 ticks of USER_HZ (100 on Linux)
/// is 20 ms in 200 ms; a daemon reading a backlog uses the whole 200.
const IDLE_TICKS: u64 = 2;
/// Stop waiting for idle after this long and say so in the results.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct ThroughputArgs {
    /// Producers (loadgen processes) running at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    producers: u64,
    /// openat + close iterations per run (baseline or events), split across the producers.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    opens: u64,
    /// Rounds; each runs the producers alone and under agentguard once.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
}

/// What runs alongside the producers in a measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Config {
    /// The producers alone.
    Baseline,
    /// The producers under `agentguard events` ([`DAEMON_ARGS`]).
    Events,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Events => "events",
        }
    }
}

/// The counts `agentguard events` prints on stderr when it stops:
/// `agentguard: N events, N written, N dropped by the output queue, N lost
/// in the kernel (ring buffer full), N undecodable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
struct EventsSummary {
    /// Events that passed the filters (all of them here: none are given).
    events: u64,
    /// Serialized and written to the output.
    written: u64,
    /// Dropped because the output queue was full.
    dropped: u64,
    /// Lost in the kernel: the ring buffer was full.
    lost: u64,
    /// Records that did not decode; absent if the line does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    undecodable: Option<u64>,
}

impl EventsSummary {
    /// The last summary line in agentguard's stderr (log lines may follow it).
    fn find(stderr: &str) -> Result<EventsSummary> {
        let line = stderr
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with("agentguard: ") && l.contains(" events, "))
            .with_context(|| {
                format!(
                    "no summary line (`agentguard: N events, N written, ...`) in agentguard's \
                     stderr; its last line: {:?}",
                    last_line(stderr).unwrap_or_default()
                )
            })?;
        EventsSummary::parse(line)
    }

    /// One summary line: comma-separated `<number> <what>` parts after
    /// `agentguard: `, told apart by the first word of `<what>`. Unknown
    /// parts are skipped (a newer daemon may add some); the four counts
    /// the bench needs must be there.
    fn parse(line: &str) -> Result<EventsSummary> {
        let parse = || -> Result<EventsSummary> {
            let body = line
                .trim()
                .strip_prefix("agentguard: ")
                .context("it does not start with `agentguard: `")?;
            let mut counts: Vec<(&str, u64)> = Vec::new();
            for part in body.split(',').map(str::trim) {
                let (number, what) = part
                    .split_once(' ')
                    .with_context(|| format!("`{part}` is not `<number> <what>`"))?;
                let n: u64 = number
                    .parse()
                    .with_context(|| format!("`{part}`: bad number"))?;
                let key = what.split_whitespace().next().unwrap_or_default();
                if counts.iter().any(|(k, _)| *k == key) {
                    bail!("`{key}` appears twice");
                }
                counts.push((key, n));
            }
            let get = |key: &str| counts.iter().find(|(k, _)| *k == key).map(|&(_, n)| n);
            let need = |key: &str| get(key).with_context(|| format!("no `<number> {key}` part"));
            Ok(EventsSummary {
                events: need("events")?,
                written: need("written")?,
                dropped: need("dropped")?,
                lost: need("lost")?,
                undecodable: get("undecodable"),
            })
        };
        parse().with_context(|| format!("unexpected `agentguard events` summary {line:?}"))
    }
}

/// agentguard's side of one measurement.
#[derive(Clone, Debug, Serialize)]
struct DaemonRun {
    #[serde(flatten)]
    summary: EventsSummary,
    /// Events written / the producers' wall time.
    events_per_s: f64,
    /// How long agentguard stayed busy after the producers ended, in
    /// [`DRAIN_POLL`] steps (0: idle at the first look); absent if it was
    /// still busy after [`DRAIN_TIMEOUT`].
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_ms: Option<u64>,
    /// VmRSS 1 s after it was ready, before the producers (kB).
    idle_rss_kb: u64,
    /// VmHWM (peak RSS) after the producers, before it was stopped (kB).
    peak_rss_kb: u64,
}

/// One measurement.
#[derive(Clone, Debug, Serialize)]
struct Sample {
    round: u64,
    config: Config,
    /// From just before the first producer started to just after the last
    /// one ended.
    wall_ns: u64,
    /// All producers' opens (warm-up excluded) / wall time.
    opens_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    daemon: Option<DaemonRun>,
}

/// What a measurement needs.
struct Bench {
    /// One loadgen per producer, each with its share of the opens.
    producers: Vec<Loadgen>,
    total_opens: u64,
    agentguard: PathBuf,
    work: WorkDir,
}

pub fn throughput(args: &ThroughputArgs) -> Result<()> {
    if args.opens < args.producers {
        bail!(
            "--opens {} is fewer than --producers {}: some producers would do nothing",
            args.opens,
            args.producers
        );
    }
    Setup::default().all(false)?;
    crate::build()?;
    let bin = agentguard_bin();
    check_flags(&bin, &[("bench throughput", daemon_args())], "")?;
    install_sigint_handler();
    let other_monitors = other_monitors();
    for m in &other_monitors {
        eprintln!(
            "xtask: warning: {m} is running; it competes with the producers and agentguard \
             in every round"
        );
    }
    let work = WorkDir::new()?;
    let exe = std::env::current_exe().context("locating the xtask binary (loadgen)")?;
    let producers = split(args.opens, args.producers)
        .into_iter()
        .enumerate()
        .map(|(i, opens)| Loadgen {
            exe: exe.clone(),
            // Each its own file: a loadgen removes its file when it ends.
            work: work.0.join(format!("producer-{i}")),
            opens,
            connects: 0,
            agent: false,
        })
        .collect();
    let bench = Bench {
        producers,
        total_opens: args.opens,
        agentguard: bin,
        work,
    };

    eprintln!(
        "xtask: bench throughput: {} round(s) of baseline, events ({} producers, {} opens in all \
         per run; agentguard {})",
        args.rounds,
        args.producers,
        args.opens,
        DAEMON_ARGS.join(" ")
    );
    let mut samples = Vec::new();
    for round in 1..=args.rounds {
        // Alternate the order so drift on the machine hits both alike.
        let order = if round % 2 == 1 {
            [Config::Baseline, Config::Events]
        } else {
            [Config::Events, Config::Baseline]
        };
        for config in order {
            check_interrupted()?;
            let sample = match measure(config, round, &bench) {
                Ok(s) => s,
                Err(e) => {
                    check_interrupted()?;
                    return Err(e.context(format!("{} run of round {round}", config.name())));
                }
            };
            eprintln!("xtask: round {round}/{} {}", args.rounds, progress(&sample));
            samples.push(sample);
        }
    }

    let report = Report::new(args, samples, other_monitors);
    print!("{}", report.table());
    println!("BENCH_JSON {}", serde_json::to_string(&report.tracking())?);
    write_results("bench-throughput.json", &report)
}

fn daemon_args() -> Vec<OsString> {
    DAEMON_ARGS.iter().map(OsString::from).collect()
}

/// `total` split into `n` shares differing by at most one.
fn split(total: u64, n: u64) -> Vec<u64> {
    (0..n)
        .map(|i| total / n + u64::from(i < total % n))
        .collect()
}

fn measure(config: Config, round: u64, bench: &Bench) -> Result<Sample> {
    let (wall, daemon) = match config {
        Config::Baseline => (run_producers(&bench.producers, &bench.work.0)?, None),
        Config::Events => {
            let mut monitor = start_daemon(&bench.agentguard, &daemon_args(), &bench.work.0)?;
            // Also lets its start-up work finish before the producers start.
            let idle_rss_kb = monitor.idle_rss_kb()?;
            let run = run_producers(&bench.producers, &bench.work.0).and_then(|wall| {
                let drain = wait_drained(&mut monitor)?;
                // Read before the stop: an exited process has no memory figures.
                let peak_rss_kb = monitor.status_kb("VmHWM")?;
                Ok((wall, drain, peak_rss_kb))
            });
            let stopped = monitor.stop();
            let (wall, drain, peak_rss_kb) = run?;
            let summary = EventsSummary::find(&stopped?)?;
            let daemon = DaemonRun {
                summary,
                events_per_s: per_s(summary.written, wall),
                drain_ms: drain.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                idle_rss_kb,
                peak_rss_kb,
            };
            (wall, Some(daemon))
        }
    };
    Ok(Sample {
        round,
        config,
        wall_ns: u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX),
        opens_per_s: per_s(bench.total_opens, wall),
        daemon,
    })
}

fn per_s(n: u64, wall: Duration) -> f64 {
    n as f64 / wall.as_secs_f64()
}

/// Children killed and reaped if dropped: one failed producer (or Ctrl-C)
/// must not leave the others running.
struct ChildGroup(Vec<Child>);

impl Drop for ChildGroup {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // Only a child not yet reaped: its pid cannot have been reused.
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Runs every producer at once, each a host process with its output in
/// `work`; returns the wall time from just before the first started to
/// just after the last had ended.
fn run_producers(producers: &[Loadgen], work: &Path) -> Result<Duration> {
    // Output files first, so nothing but spawning happens between the starts.
    let mut runs = Vec::new();
    for (i, producer) in producers.iter().enumerate() {
        let out = work.join(format!("producer-{i}.out"));
        let err = work.join(format!("producer-{i}.err"));
        let create =
            |p: &Path| File::create(p).with_context(|| format!("creating {}", p.display()));
        let mut cmd = producer.host_command();
        cmd.stdin(Stdio::null())
            .stdout(create(&out)?)
            .stderr(create(&err)?);
        runs.push((cmd, out, err));
    }
    let mut group = ChildGroup(Vec::new());
    let start = Instant::now();
    for (cmd, ..) in &mut runs {
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start `{}`", describe(cmd)))?;
        group.0.push(child);
    }
    let mut statuses = Vec::new();
    for child in &mut group.0 {
        statuses.push(child.wait().context("waiting for a producer")?);
    }
    let wall = start.elapsed();
    for ((cmd, out, err), status) in runs.iter().zip(statuses) {
        let what = describe(cmd);
        if !status.success() {
            // Best effort: the failure is reported either way.
            let stderr = std::fs::read_to_string(err).unwrap_or_default();
            bail!("`{what}` failed ({status}):\n{stderr}");
        }
        let stdout =
            std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
        // Checks that it ran its loops to the end.
        parse_timings(&stdout).with_context(|| format!("`{what}`"))?;
    }
    Ok(wall)
}

/// Waits until `monitor` uses less than [`IDLE_TICKS`] of CPU in a
/// [`DRAIN_POLL`]; returns how long it was busy (None: still busy after
/// [`DRAIN_TIMEOUT`]).
fn wait_drained(monitor: &mut Monitor) -> Result<Option<Duration>> {
    let start = Instant::now();
    let mut last = monitor.cpu_ticks()?;
    loop {
        std::thread::sleep(DRAIN_POLL);
        check_interrupted()?;
        let now = monitor.cpu_ticks()?;
        if now.saturating_sub(last) < IDLE_TICKS {
            // The last poll was idle: it was busy up to the one before.
            return Ok(Some(start.elapsed().saturating_sub(DRAIN_POLL)));
        }
        if start.elapsed() > DRAIN_TIMEOUT {
            return Ok(None);
        }
        last = now;
    }
}

/// One stderr line about a finished measurement.
fn progress(s: &Sample) -> String {
    let mut line = format!(
        "{:<8} {:>9.1} ms {:>12.0} opens/s",
        s.config.name(),
        ms(s.wall_ns),
        s.opens_per_s
    );
    if let Some(d) = &s.daemon {
        line += &format!(
            "  | {} written ({:.0}/s), {} lost, {} dropped, drain {}, peak {:.1} MB",
            d.summary.written,
            d.events_per_s,
            d.summary.lost,
            d.summary.dropped,
            d.drain_ms
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_else(|| format!("> {} s", DRAIN_TIMEOUT.as_secs())),
            mb(d.peak_rss_kb)
        );
    }
    line
}

#[derive(Serialize)]
struct Report {
    kernel: String,
    unix_time: u64,
    /// agentguard's command line after the binary (`--ready-file` aside).
    daemon: String,
    producers: u64,
    /// openat + close iterations per run, all producers together.
    opens: u64,
    /// The producers' openat calls per run, warm-up included: agentguard
    /// should see at least these (plus a few at each producer's start and
    /// the rest of the machine's).
    producer_opens: u64,
    rounds: u64,
    /// Monitors the bench found running and did not start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    other_monitors: Vec<String>,
    baseline: BaselineResult,
    events: EventsResult,
    samples: Vec<Sample>,
}

/// Medians of the producers alone.
#[derive(Serialize)]
struct BaselineResult {
    opens_per_s_median: f64,
}

/// Medians (and loss totals) of the runs under agentguard.
#[derive(Serialize)]
struct EventsResult {
    /// The producers' own rate under agentguard.
    opens_per_s_median: f64,
    /// Events written / the producers' wall time.
    events_per_s_median: f64,
    written_median: Option<u64>,
    lost_median: Option<u64>,
    dropped_median: Option<u64>,
    lost_total: u64,
    dropped_total: u64,
    /// Rounds in which any event was lost or dropped: there the producers
    /// outran agentguard, whose zero-loss rate is then below events/s.
    rounds_with_loss: u64,
    /// Over the rounds that went idle; see `drain_ms` in the samples.
    drain_ms_median: Option<u64>,
    /// Rounds in which agentguard was still busy after DRAIN_TIMEOUT.
    rounds_not_drained: u64,
    /// Rounds in which events + lost was below `producer_opens`: opens
    /// that agentguard reported neither as events nor as lost.
    rounds_short: u64,
    idle_rss_kb_median: Option<u64>,
    peak_rss_kb_median: Option<u64>,
}

impl Report {
    fn new(args: &ThroughputArgs, samples: Vec<Sample>, other_monitors: Vec<String>) -> Report {
        let rates = |config| -> Vec<f64> {
            samples
                .iter()
                .filter(|s| s.config == config)
                .map(|s| s.opens_per_s)
                .collect()
        };
        let runs: Vec<&DaemonRun> = samples.iter().filter_map(|s| s.daemon.as_ref()).collect();
        let count = |f: fn(&EventsSummary) -> u64| median_round(runs.iter().map(|d| f(&d.summary)));
        let total = |f: fn(&EventsSummary) -> u64| runs.iter().map(|d| f(&d.summary)).sum();
        let producer_opens = args.opens + WARMUP * args.producers;
        let events = EventsResult {
            opens_per_s_median: median(rates(Config::Events)),
            events_per_s_median: median(runs.iter().map(|d| d.events_per_s).collect()),
            written_median: count(|s| s.written),
            lost_median: count(|s| s.lost),
            dropped_median: count(|s| s.dropped),
            lost_total: total(|s| s.lost),
            dropped_total: total(|s| s.dropped),
            rounds_with_loss: runs
                .iter()
                .filter(|d| d.summary.lost + d.summary.dropped > 0)
                .count() as u64,
            drain_ms_median: median_round(runs.iter().filter_map(|d| d.drain_ms)),
            rounds_not_drained: runs.iter().filter(|d| d.drain_ms.is_none()).count() as u64,
            rounds_short: runs
                .iter()
                .filter(|d| d.summary.events + d.summary.lost < producer_opens)
                .count() as u64,
            idle_rss_kb_median: median_round(runs.iter().map(|d| d.idle_rss_kb)),
            peak_rss_kb_median: median_round(runs.iter().map(|d| d.peak_rss_kb)),
        };
        Report {
            kernel: kernel_release(),
            unix_time: unix_time(),
            daemon: DAEMON_ARGS.join(" "),
            producers: args.producers,
            opens: args.opens,
            producer_opens,
            rounds: args.rounds,
            other_monitors,
            baseline: BaselineResult {
                opens_per_s_median: median(rates(Config::Baseline)),
            },
            events,
            samples,
        }
    }

    /// The one-line summary printed as `BENCH_JSON ...` for tracking.
    fn tracking(&self) -> serde_json::Value {
        let e = &self.events;
        serde_json::json!({
            "kernel": self.kernel,
            "unix_time": self.unix_time,
            "producers": self.producers,
            "opens": self.opens,
            "baseline_opens_per_s": self.baseline.opens_per_s_median,
            "opens_per_s": e.opens_per_s_median,
            "events_per_s": e.events_per_s_median,
            "lost_total": e.lost_total,
            "dropped_total": e.dropped_total,
            "rounds_with_loss": e.rounds_with_loss,
            "peak_rss_kb": e.peak_rss_kb_median,
        })
    }

    fn table(&self) -> String {
        let e = &self.events;
        let num = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let mut s = format!(
            "\nbench throughput: `agentguard {}`; {} producer(s), {} openat + close in all per \
             run (+{WARMUP} warm-up each), {} round(s), medians\n\
             opens/s = the producers' rate (start of the first to end of the last); \
             events/s = events written / that time\n",
            self.daemon, self.producers, self.opens, self.rounds
        );
        if !self.other_monitors.is_empty() {
            s += &format!(
                "warning: also running during every run: {}\n",
                self.other_monitors.join(", ")
            );
        }
        s += &format!(
            "\n{:<8} | {:>12} {:>12} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            "config",
            "opens/s",
            "events/s",
            "written",
            "lost",
            "dropped",
            "drain ms",
            "idle MB",
            "peak MB"
        );
        s += &format!(
            "{:<8} | {:>12.0} {:>12} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            Config::Baseline.name(),
            self.baseline.opens_per_s_median,
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-"
        );
        let mb_cell = |kb: Option<u64>| kb.map(|kb| format!("{:.1}", mb(kb))).unwrap_or("-".into());
        s += &format!(
            "{:<8} | {:>12.0} {:>12.0} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            Config::Events.name(),
            e.opens_per_s_median,
            e.events_per_s_median,
            num(e.written_median),
            num(e.lost_median),
            num(e.dropped_median),
            num(e.drain_ms_median),
            mb_cell(e.idle_rss_kb_median),
            mb_cell(e.peak_rss_kb_median)
        );
        s += "\n";
        if e.rounds_with_loss == 0 {
            s += &format!(
                "no loss in {} round(s): agentguard kept up with the producers (its zero-loss \
                 rate is at least events/s)\n",
                self.rounds
            );
        } else {
            s += &format!(
                "loss in {} of {} round(s) ({} lost in the kernel, {} dropped by the output \
                 queue in all): the producers outran agentguard, whose zero-loss rate is below \
                 events/s; fewer --producers offer less\n",
                e.rounds_with_loss, self.rounds, e.lost_total, e.dropped_total
            );
        }
        if e.rounds_not_drained > 0 {
            s += &format!(
                "warning: in {} round(s) agentguard was still busy {} s after the producers \
                 ended; events it had not read by then are counted nowhere\n",
                e.rounds_not_drained,
                DRAIN_TIMEOUT.as_secs()
            );
        }
        if e.rounds_short > 0 {
            s += &format!(
                "warning: in {} round(s) events + lost was below the producers' {} openat \
                 calls: some were reported neither as events nor as lost\n",
                e.rounds_short, self.producer_opens
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "agentguard: 2000312 events, 2000300 written, 12 dropped by the output \
                           queue, 7 lost in the kernel (ring buffer full), 0 undecodable";

    #[test]
    fn parses_events_summary() -> Result<()> {
        let want = EventsSummary {
            events: 2000312,
            written: 2000300,
            dropped: 12,
            lost: 7,
            undecodable: Some(0),
        };
        assert_eq!(EventsSummary::parse(SUMMARY)?, want);
        // The last summary line wins; log lines after it are skipped.
        let stderr = format!(
            "agentguard: streaming open (2 probes attached); Ctrl-C to stop\n\
             agentguard: 1 events, 1 written, 0 dropped by the output queue, 0 lost in the \
             kernel (ring buffer full), 0 undecodable\n{SUMMARY}\n\
             2025-01-01T00:00:00Z  INFO agentguard: detached\n\n"
        );
        assert_eq!(EventsSummary::find(&stderr)?, want);
        // Without undecodable, and with a part the bench does not know.
        let short = "agentguard: 5 events, 4 written, 1 dropped, 0 lost, 3 held back";
        assert_eq!(
            EventsSummary::parse(short)?,
            EventsSummary {
                events: 5,
                written: 4,
                dropped: 1,
                lost: 0,
                undecodable: None,
            }
        );
        Ok(())
    }

    #[test]
    fn rejects_other_summaries() -> Result<()> {
        let err = |line: &str| -> Result<String> {
            Ok(format!(
                "{:#}",
                EventsSummary::parse(line)
                    .err()
                    .with_context(|| format!("{line:?} accepted"))?
            ))
        };
        let msg = err("agentguard: 5 events, 4 written, 0 lost in the kernel")?;
        assert!(
            msg.contains("no `<number> dropped` part") && msg.contains("unexpected"),
            "{msg}"
        );
        let msg = err("agentguard: 5 events, many written, 0 dropped, 0 lost")?;
        assert!(msg.contains("`many written`: bad number"), "{msg}");
        let msg = err("agentguard: 5 events, 4 written, 0 dropped, 0 lost, 1 lost")?;
        assert!(msg.contains("`lost` appears twice"), "{msg}");
        assert!(err("5 events, 4 written, 0 dropped, 0 lost")?.contains("agentguard: "));
        assert!(err("agentguard: 5 events,, 4 written, 0 dropped, 0 lost").is_ok());
        let msg = format!(
            "{:#}",
            EventsSummary::find("agentguard: error: no BTF\n")
                .err()
                .context("no summary accepted")?
        );
        assert!(
            msg.contains("no summary line") && msg.contains("agentguard: error: no BTF"),
            "{msg}"
        );
        Ok(())
    }

    #[test]
    fn opens_are_split_evenly() {
        assert_eq!(split(2_000_000, 2), vec![1_000_000, 1_000_000]);
        assert_eq!(split(10, 3), vec![4, 3, 3]);
        assert_eq!(split(3, 3), vec![1, 1, 1]);
        assert_eq!(split(7, 1), vec![7]);
    }

    fn args() -> ThroughputArgs {
        ThroughputArgs {
            producers: 2,
            opens: 1000,
            rounds: 2,
        }
    }

    fn sample(round: u64, config: Config, secs: f64, written: u64, lost: u64) -> Sample {
        let wall = Duration::from_secs_f64(secs);
        Sample {
            round,
            config,
            wall_ns: u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX),
            opens_per_s: per_s(1000, wall),
            daemon: (config == Config::Events).then(|| DaemonRun {
                summary: EventsSummary {
                    events: written,
                    written,
                    dropped: 0,
                    lost,
                    undecodable: Some(0),
                },
                events_per_s: per_s(written, wall),
                drain_ms: Some(0),
                idle_rss_kb: 10240,
                peak_rss_kb: 20480,
            }),
        }
    }

    #[test]
    fn report_medians_and_loss() -> Result<()> {
        let r = Report::new(
            &args(),
            vec![
                sample(1, Config::Baseline, 0.5, 0, 0),
                sample(1, Config::Events, 1.0, 1300, 0),
                sample(2, Config::Events, 2.0, 1200, 5),
                sample(2, Config::Baseline, 0.25, 0, 0),
            ],
            vec![],
        );
        assert_eq!(r.baseline.opens_per_s_median, 3000.0);
        assert_eq!(r.events.opens_per_s_median, 750.0);
        assert_eq!(r.events.events_per_s_median, 950.0);
        assert_eq!(r.events.written_median, Some(1250));
        assert_eq!(r.events.lost_total, 5);
        assert_eq!(r.events.rounds_with_loss, 1);
        assert_eq!(r.producer_opens, 1000 + 2 * WARMUP);
        let table = r.table();
        assert!(table.contains("loss in 1 of 2 round(s)"), "{table}");
        assert!(
            table.contains("events   |          750          950"),
            "{table}"
        );
        assert!(!table.contains("warning"), "{table}");
        let json = serde_json::to_value(&r)?;
        assert_eq!(json["samples"][1]["config"], "events");
        assert_eq!(json["samples"][1]["daemon"]["written"], 1300);
        assert_eq!(json["samples"][1]["daemon"]["peak_rss_kb"], 20480);
        assert!(json["samples"][0].get("daemon").is_none());
        let line = r.tracking();
        assert_eq!(line["events_per_s"], 950.0);
        assert_eq!(line["baseline_opens_per_s"], 3000.0);
        assert_eq!(line["rounds_with_loss"], 1);

        // No loss, but fewer events than the producers' opens.
        let r = Report::new(
            &args(),
            vec![
                sample(1, Config::Baseline, 1.0, 0, 0),
                sample(1, Config::Events, 1.0, 900, 0),
            ],
            vec![],
        );
        let table = r.table();
        assert!(table.contains("no loss in 2 round(s)"), "{table}");
        assert_eq!(r.events.rounds_short, 1);
        assert!(
            table.contains("warning: in 1 round(s) events + lost"),
            "{table}"
        );
        Ok(())
    }

    #[test]
    fn daemon_flags_are_checked() -> Result<()> {
        let _exec = crate::EXEC_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::temp_dir().join(format!("xtask-tp-{}", std::process::id()));
        std::fs::write(
            &path,
            "#!/bin/sh\n[ \"$1\" = events ] && echo '--kind --output --queue'\n",
        )?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        let result = check_flags(&path, &[("bench throughput", daemon_args())], "");
        let _ = std::fs::remove_file(&path);
        let msg = format!(
            "{:#}",
            result.err().context("missing --ready-file accepted")?
        );
        assert!(
            msg.ends_with("does not support `events --ready-file` (for bench throughput) yet"),
            "{msg}"
        );
        Ok(())
    }
}
