//! `cargo xtask fuzz`: builds the cargo-fuzz targets of fuzz/ (libFuzzer,
//! nightly, AddressSanitizer, debug assertions) and runs each for a while
//! on its seeds (fuzz/seeds/<target>/, in git) and its own corpus
//! (fuzz/corpus/<target>/, kept between runs, not in git). A crash leaves
//! its input in fuzz/artifacts/<target>/ and fails the command.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::{describe, root, run_cmd, setup};

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds of fuzzing per target (libFuzzer's -max_total_time).
    #[arg(long, default_value_t = 60)]
    pub secs: u64,
    /// Run only this target (repeatable); default: every file of
    /// fuzz/fuzz_targets.
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
}

/// What one target's run gave.
struct Outcome {
    runs: Option<u64>,
    secs: f64,
    /// The crashing input libFuzzer wrote, if it found one.
    artifact: Option<PathBuf>,
    ok: bool,
    log: PathBuf,
}

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// The targets in fuzz/fuzz_targets (file stems), sorted.
fn all_targets() -> Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    out.sort();
    Ok(out)
}

/// `cargo fuzz ...` on the nightly toolchain, from the workspace root.
fn cargo_fuzz() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "fuzz"]);
    cmd.current_dir(root());
    // The fuzz crate is its own workspace: its build goes to fuzz/target,
    // whatever target directory the main workspace uses.
    cmd.env_remove("CARGO_TARGET_DIR");
    // The targets never load probes: agentguard's build.rs skips the eBPF
    // object (about a minute of a cold build, and no bpf-linker needed).
    // Built, it works too: aya-build gives its cargo its own
    // CARGO_ENCODED_RUSTFLAGS, so the sanitizer flags don't reach it.
    cmd.env("AYA_BUILD_SKIP", "1");
    cmd
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    let known = all_targets()?;
    let targets = if args.targets.is_empty() {
        known.clone()
    } else {
        for t in &args.targets {
            if !known.contains(t) {
                bail!("no fuzz target {t:?} (targets: {})", known.join(", "));
            }
        }
        args.targets.clone()
    };
    if targets.is_empty() {
        bail!(
            "no fuzz targets in {}",
            fuzz_dir().join("fuzz_targets").display()
        );
    }
    if args.secs == 0 {
        bail!("--secs must be at least 1");
    }
    setup::Setup::default().fuzz()?;

    // One build for every target (`cargo fuzz run` then finds it done).
    let mut build = cargo_fuzz();
    build.arg("build");
    if targets.len() == 1 {
        build.args(&targets);
    }
    eprintln!("xtask: {}", describe(&build));
    let started = Instant::now();
    run_cmd(&mut build)?;
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let mut failed = Vec::new();
    for t in &targets {
        let o = run_target(t, args.secs)?;
        let runs = o
            .runs
            .map_or_else(|| "? runs".to_owned(), |r| format!("{r} runs"));
        match (&o.artifact, o.ok) {
            (None, true) => println!("{t}: {runs} in {:.0} s, no crash", o.secs),
            (Some(a), _) => {
                println!(
                    "{t}: CRASH after {runs} in {:.0} s: {} (reproduce: cargo +nightly fuzz run {t} {}; log: {})",
                    o.secs,
                    a.display(),
                    a.display(),
                    o.log.display()
                );
                failed.push(t.clone());
            }
            (None, false) => {
                println!(
                    "{t}: FAILED after {runs} in {:.0} s without a crash input (log: {})",
                    o.secs,
                    o.log.display()
                );
                failed.push(t.clone());
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} fuzz targets failed: {}",
            failed.len(),
            targets.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// Runs `target` for `secs` seconds; its output goes to
/// fuzz/target/logs/<target>.log (the end of it to stderr on failure).
fn run_target(target: &str, secs: u64) -> Result<Outcome> {
    let fuzz = fuzz_dir();
    let corpus = fuzz.join("corpus").join(target);
    let seeds = fuzz.join("seeds").join(target);
    let logs = fuzz.join("target").join("logs");
    // The targets write their policy files under TMPDIR: keep them here.
    let tmp = fuzz.join("target").join("tmp").join(target);
    for d in [&corpus, &logs, &tmp] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let log = logs.join(format!("{target}.log"));
    let file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = cargo_fuzz();
    cmd.args(["run", target]).arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg("-print_final_stats=1")
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    eprintln!(
        "xtask: fuzzing {target} for {secs} s: {} (log: {})",
        describe(&cmd),
        log.display()
    );
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", describe(&cmd)))?;
    let wall = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&tmp);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let (runs, secs) = stats(&text);
    let artifact = text.lines().find_map(|l| {
        l.split_once("Test unit written to ")
            .map(|(_, p)| root().join(p.trim()))
    });
    let ok = status.success() && artifact.is_none();
    if !ok {
        eprintln!(
            "xtask: {target} failed ({status}); the end of {}:",
            log.display()
        );
        eprint!("{}", tail(&text, 60));
    }
    Ok(Outcome {
        runs,
        secs: secs.unwrap_or(wall),
        artifact,
        ok,
        log,
    })
}

/// Runs and seconds from libFuzzer's output: "Done N runs in S second(s)"
/// at a normal end, else the last "#N ..." status line and
/// `stat::number_of_executed_units` (printed at a crash too).
fn stats(text: &str) -> (Option<u64>, Option<f64>) {
    let mut runs = None;
    let mut secs = None;
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("Done ") {
            let mut it = rest.split_whitespace();
            runs = it.next().and_then(|n| n.parse().ok()).or(runs);
            secs = it.nth(2).and_then(|s| s.parse().ok());
        } else if let Some(n) = l.strip_prefix("stat::number_of_executed_units:") {
            runs = n.trim().parse().ok().or(runs);
        } else if let Some(rest) = l.strip_prefix('#') {
            if let Some(n) = rest.split_whitespace().next().and_then(|n| n.parse().ok()) {
                runs = Some(n);
            }
        }
    }
    (runs, secs)
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    let mut out = lines[from..].join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_a_clean_run() {
        let text = "#2\tINITED cov: 10 ft: 11 corp: 3/1b exec/s: 0 rss: 30Mb\n\
                    #4096\tpulse  cov: 10\n\
                    Done 123456 runs in 11 second(s)\n\
                    stat::number_of_executed_units: 123456\n";
        assert_eq!(stats(text), (Some(123_456), Some(11.0)));
    }

    #[test]
    fn stats_and_artifact_of_a_crash() {
        let text = "#11957\tNEW    cov: 2657 ft: 10124\n\
                    thread '<unnamed>' panicked at src/x.rs:1:1:\n\
                    ==1== ERROR: libFuzzer: deadly signal\n\
                    artifact_prefix='/w/fuzz/artifacts/dns/'; Test unit written to /w/fuzz/artifacts/dns/crash-9e12\n\
                    stat::number_of_executed_units: 12071\n";
        assert_eq!(stats(text), (Some(12_071), None));
        let a = text
            .lines()
            .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p));
        assert_eq!(a, Some("/w/fuzz/artifacts/dns/crash-9e12"));
    }

    #[test]
    fn every_target_has_seeds() {
        let targets = all_targets().expect("targets");
        assert!(targets.len() >= 4, "{targets:?}");
        for t in targets {
            let seeds = fuzz_dir().join("seeds").join(&t);
            let n = std::fs::read_dir(&seeds).map_or(0, |d| d.count());
            assert!(n > 0, "no seeds in {}", seeds.display());
        }
    }
}
