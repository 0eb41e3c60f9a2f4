//! `agentguard policy lint|test` and `agentguard replay`: policy tooling
//! that needs no root and no kernel.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};
use serde::Serialize;

use super::{suite, Diagnostic, LoadOptions, PolicySet};
use crate::alert::Decision;
use crate::event::{Event, Kind};

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCmd {
    /// Check policy files (a directory or one file); errors name file:line:col.
    Lint {
        /// Policy directory or a single .yaml/.rego file.
        path: PathBuf,
    },
    /// Run the policy unit tests of a pack (DIR/tests/, *_test.yaml, *_test.rego).
    Test {
        /// Policy directory.
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Policy directory.
    #[arg(long)]
    pub policies: PathBuf,
    /// Recorded events, one JSON object per line (`agentguard events` output).
    pub events: PathBuf,
    /// DNS resolver for `except: {dns_resolver: true}` rules. Repeatable.
    #[arg(long)]
    pub dns_resolver: Vec<std::net::IpAddr>,
}

/// Dispatch for `agentguard policy ...`.
pub fn run(cmd: PolicyCmd) -> Result<()> {
    match cmd {
        PolicyCmd::Lint { path } => lint(&path),
        PolicyCmd::Test { dir } => test(&dir),
    }
}

/// Dispatch for `agentguard replay ...`.
pub fn run_replay(args: ReplayArgs) -> Result<()> {
    let opts = LoadOptions {
        dns_resolvers: args.dns_resolver,
        ..LoadOptions::default()
    };
    replay(&args.policies, &args.events, &opts)
}

fn print_diags(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
}

/// Loads a directory or a single policy file.
pub fn load(path: &Path) -> Result<PolicySet, Vec<Diagnostic>> {
    if path.is_dir() {
        PolicySet::load_dir(path)
    } else if path.is_file() {
        PolicySet::load_files(&[path.to_owned()], &LoadOptions::default())
    } else {
        Err(vec![Diagnostic::new(
            path,
            1,
            1,
            "no such file or directory".into(),
        )])
    }
}

/// `policy lint`: Ok when every policy loads; errors go to stderr.
pub fn lint(path: &Path) -> Result<()> {
    match load(path) {
        Ok(set) => {
            let rules = set.rules().len();
            let rego = set.rego_policies().len();
            let yaml_files = set.files().len() - rego;
            println!(
                "{}: OK ({yaml_files} YAML policies with {rules} rules, {rego} Rego policies)",
                path.display()
            );
            Ok(())
        }
        Err(diags) => {
            print_diags(&diags);
            Err(anyhow!("{} error(s) in {}", diags.len(), path.display()))
        }
    }
}

/// `policy test`: prints failures with a diff and `N passed, M failed`.
pub fn test(dir: &Path) -> Result<()> {
    let report = suite::run(dir).map_err(|diags| {
        print_diags(&diags);
        anyhow!("{} error(s) loading {}", diags.len(), dir.display())
    })?;
    print!("{}", report.text);
    println!("{} passed, {} failed", report.passed, report.failed);
    if report.failed > 0 {
        return Err(anyhow!("{} policy test(s) failed", report.failed));
    }
    if report.passed == 0 {
        return Err(anyhow!("no policy tests in {}", dir.display()));
    }
    Ok(())
}

/// One line of `replay` output: where the event was, and the decision.
#[derive(Serialize)]
struct ReplayLine<'a> {
    line: usize,
    ts_ns: u64,
    pid: u32,
    kind: Kind,
    #[serde(flatten)]
    decision: &'a Decision,
}

/// `replay`: evaluates each recorded event, prints each decision as a JSON
/// line. Unparseable lines are reported on stderr and make it fail at the end.
pub fn replay(dir: &Path, events: &Path, opts: &LoadOptions) -> Result<()> {
    let set = PolicySet::load_dir_with(dir, opts).map_err(|diags| {
        print_diags(&diags);
        anyhow!("{} error(s) loading {}", diags.len(), dir.display())
    })?;
    let f = std::fs::File::open(events).with_context(|| format!("opening {}", events.display()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut n, mut decided, mut bad) = (0usize, 0usize, 0usize);
    let mut decisions = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", events.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let ev: Event = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("{}:{}: skipped: {e}", events.display(), i + 1);
                bad += 1;
                continue;
            }
        };
        n += 1;
        decisions.clear();
        set.evaluate(&ev, &mut decisions);
        for d in &decisions {
            decided += 1;
            let rec = ReplayLine {
                line: i + 1,
                ts_ns: ev.ts_ns,
                pid: ev.pid,
                kind: ev.kind,
                decision: d,
            };
            serde_json::to_writer(&mut out, &rec)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    eprintln!("replay: {n} events, {decided} decisions, {bad} unreadable lines");
    if set.rego_errors() > 0 {
        eprintln!("replay: {} Rego evaluation errors", set.rego_errors());
    }
    if bad > 0 {
        return Err(anyhow!("{bad} unreadable line(s) in {}", events.display()));
    }
    Ok(())
}
