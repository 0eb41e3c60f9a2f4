//! Project orchestration: `cargo xtask <cmd>` (alias in .cargo/config.toml).
//!
//! Progress goes to stderr as "xtask: ..." lines so that stdout stays clean
//! for whatever the commands themselves print.

mod bench;
mod bench_dns;
mod bench_lsm;
mod bench_throughput;
mod dist;
mod fuzz;
mod guest;
mod loadgen;
// The tests' ready-wait, shared so tests and benches start daemons alike.
#[path = "../../agentguard/tests/common/ready.rs"]
mod ready;
mod setup;
mod soak;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

/// What `cargo xtask run` starts when given no arguments.
/// With the policy stage this becomes `&["run", "--policies", "policies/"]`.
/// `agentguard run` with the repository's default policy pack (the pack
/// path is appended, absolute, by `run`).
const RUN_DEFAULT_ARGS: &[&str] = &["run", "--policies"];

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "agentguard set-up, build, run, test, lint and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build needs (nightly rust-src, LLVM 22, bpf-linker); idempotent.
    Setup {
        /// Also install and start the Docker engine (the tests need it).
        #[arg(long)]
        docker: bool,
    },
    /// Set up, then `cargo build --release -p agentguard`.
    Build,
    /// Set up, build, then run target/release/agentguard with ARGS
    /// (default: `events`).
    Run {
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// Set up (with Docker), then `cargo test --release`.
    ///
    /// ARGS go to the test binaries (`cargo xtask test -- --nocapture`).
    /// If ARGS contain a `--`, they go to cargo test verbatim instead
    /// (`cargo xtask test -- --test cli -- --nocapture`).
    Test {
        /// Call the run green even if tests skipped (they are still listed).
        /// Without it a run where any test skipped (no root, no Docker, no
        /// guest kernel) fails after listing what skipped and why.
        #[arg(long)]
        allow_skips: bool,
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// `cargo fmt --all -- --check` and `cargo clippy --all-targets -- -D warnings`.
    Lint,
    /// Benchmarks (they report, never assert).
    Bench {
        #[command(subcommand)]
        bench: BenchCmd,
    },
    /// What CI runs: lint, then test.
    Ci,
    /// Build the cargo-fuzz targets of fuzz/ and run each for --secs
    /// seconds on its seeds (fuzz/seeds/) and corpus (fuzz/corpus/).
    ///
    /// Installs cargo-fuzz when missing (the nightly toolchain builds).
    /// Prints per target the runs, the seconds and whether it crashed (the
    /// input is left in fuzz/artifacts/<target>/); fails if any did, or if
    /// a target does not build. `--target NAME` (repeatable) runs only
    /// those.
    Fuzz(fuzz::FuzzArgs),
    /// Run SCRIPT as root in a Debian cloud kernel booted in qemu.
    ///
    /// The guest (qemu, software emulation, 1 GiB, 2 vCPUs, no network
    /// device) boots with `lsm=lockdown,capability,bpf` and has: a pure
    /// cgroup v2 hierarchy at /sys/fs/cgroup; proc, sysfs, devtmpfs, tmpfs
    /// /tmp and /run, bpffs at /sys/fs/bpf, tracefs at /sys/kernel/tracing,
    /// securityfs at /sys/kernel/security; loopback up; hostname
    /// agentguard-guest. On PATH: /usr/bin/agentguard with its shared
    /// libraries, a static busybox with every applet, and each --add FILE
    /// in /bin. The default policy pack (policies/, recursively) is at
    /// /etc/agentguard/policies.
    ///
    /// SCRIPT runs with `sh` as root, in /root, HOME=/root,
    /// PATH=/bin:/sbin:/usr/bin:/usr/sbin, stdin /dev/null. Its stdout and
    /// stderr come to this command's stdout, unchanged, as they are
    /// written (the kernel console is shown only if the guest fails). The
    /// exit status is the script's; then the guest powers off.
    ///
    /// The kernel (6.1: Debian bookworm's linux-image-cloud-amd64; 6.12:
    /// linux-image-6.12-cloud-amd64 from bookworm-security) is fetched once
    /// with `apt-get download` into target/vm/<version>/, and qemu and
    /// busybox-static are installed when missing.
    ///
    /// Example: `cargo xtask guest --kernel 6.12 check.sh`.
    Guest(guest::GuestArgs),
    /// `agentguard run` (default pack) under a mixed load for N minutes.
    ///
    /// Host and agent-container execs, opens and refused connects, agent
    /// containers started and stopped, credential reads that alert, policy
    /// reloads and one Docker engine restart half-way. Samples RSS,
    /// events/s, losses, alerts and reloads every 10 s; ends with a summary
    /// and a `SOAK_JSON` line. Fails if the daemon died, did not re-attach
    /// to Docker, or (runs of 10 min or more) its RSS grew by more than
    /// 20 % and 5 MB from minute 1 to the end. Needs root and Docker.
    Soak(soak::SoakArgs),
    /// Build what users install, under target/dist/: a Debian package
    /// (`apt install ./agentguard_*.deb`), its `-dbgsym` package with the
    /// split debug info, and an OCI image archive (`docker load -i`) made
    /// from a minimal Debian root file system (mmdebstrap, Debian's
    /// packages) without any registry. Needs root and Docker.
    Dist(dist::DistArgs),
    /// Load generator for `bench overhead` and `bench throughput` (opens and
    /// refused connects; `--connects 0`: no connect syscalls at all).
    #[command(hide = true)]
    Loadgen {
        #[arg(long)]
        opens: u64,
        #[arg(long)]
        connects: u64,
        /// Directory for the opened file (created, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Sleep this long (untimed) before the warm-up.
        #[arg(long, default_value_t = 0)]
        settle_ms: u64,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Sensor overhead on an open loop and a connect loop, as a host process
    /// and in an agent container, against no monitor, bpftrace and auditd.
    Overhead(bench::OverheadArgs),
    /// BPF-LSM backend cost in a guest kernel: no daemon vs tracepoint vs
    /// LSM backend on an agent's syscall loop, and LSM decision time p50/p99.
    Lsm(bench_lsm::LsmArgs),
    /// Events per second `agentguard events --kind open` takes in, with its
    /// losses, under parallel open loops; against the loops alone.
    Throughput(bench_throughput::ThroughputArgs),
    /// Egress by domain name: lookups and connects of an agent container
    /// with no daemon, a CIDR exception, and a domain list of 1,000 names.
    Dns(bench_dns::DnsArgs),
}

fn main() -> ExitCode {
    // Before any thread exists, so changing the environment is sound.
    prepare_env();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup { docker } => setup::Setup::default().all(docker),
        Cmd::Build => setup::Setup::default().all(false).and_then(|()| build()),
        Cmd::Run { args } => run(&args),
        Cmd::Test { allow_skips, args } => test(&args, allow_skips),
        Cmd::Lint => lint(),
        Cmd::Bench {
            bench: BenchCmd::Overhead(args),
        } => bench::overhead(&args),
        Cmd::Bench {
            bench: BenchCmd::Lsm(args),
        } => bench_lsm::lsm(&args),
        Cmd::Bench {
            bench: BenchCmd::Throughput(args),
        } => bench_throughput::throughput(&args),
        Cmd::Bench {
            bench: BenchCmd::Dns(args),
        } => bench_dns::dns(&args),
        Cmd::Ci => lint().and_then(|()| test(&[], false)),
        Cmd::Fuzz(args) => fuzz::run(&args),
        Cmd::Guest(args) => guest::run(&args),
        Cmd::Soak(args) => soak::soak(&args),
        Cmd::Dist(args) => dist::dist(&args),
        Cmd::Loadgen {
            opens,
            connects,
            dir,
            settle_ms,
        } => loadgen::run(opens, connects, dir, Duration::from_millis(settle_ms)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Failed>() {
            // A child command failed: it has said why; pass its code on.
            Some(failed) => {
                eprintln!("xtask: {failed}");
                ExitCode::from(failed.code)
            }
            None => {
                eprintln!("xtask: error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Environment every child process gets.
fn prepare_env() {
    // `cargo install` puts bpf-linker in ~/.cargo/bin, which a root shell's
    // PATH often lacks; the eBPF build must find it.
    let bin = setup::cargo_bin_dir();
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|p| p == bin) {
        let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)));
        if let Ok(joined) = joined {
            std::env::set_var("PATH", joined);
        }
    }
    // Child cargos run from the workspace root; a relative target dir given
    // by the caller must keep meaning the caller's directory.
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if dir.is_relative() {
            if let Ok(cwd) = std::env::current_dir() {
                std::env::set_var("CARGO_TARGET_DIR", cwd.join(dir));
            }
        }
    }
}

/// The workspace root (xtask/ sits directly in it).
pub fn root() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest)
}

/// Cargo's target directory, as the child cargos will use it.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => root().join("target"),
    }
}

/// The release daemon binary `build` produces.
pub fn agentguard_bin() -> PathBuf {
    target_dir().join("release").join("agentguard")
}

/// A cargo command run from the workspace root, with the same cargo that runs us.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(program);
    cmd.current_dir(root());
    cmd
}

/// A child command that exited unsuccessfully; main exits with its code.
#[derive(Debug)]
pub struct Failed {
    what: String,
    code: u8,
}

impl Failed {
    pub fn new(what: String, status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt as _;
        // Shells report death by signal N as 128+N; do the same.
        let code = match (status.code(), status.signal()) {
            (Some(c), _) => u8::try_from(c).unwrap_or(1),
            (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
            (None, None) => 1,
        };
        // A non-success status is never 0; keep it a failure regardless.
        let code = if code == 0 { 1 } else { code };
        Failed { what, code }
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed (exit code {})", self.what, self.code)
    }
}

impl std::error::Error for Failed {}

/// `cmd` as a shell-like string for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    if let Some(name) = Path::new(&s).file_name() {
        s = name.to_string_lossy().into_owned();
    }
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio; a non-zero exit becomes [`Failed`].
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let what = describe(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{what}`"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failed::new(what, status).into())
    }
}

pub fn build() -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "-p", "agentguard"]);
    eprintln!("xtask: {}", describe(&cmd));
    run_cmd(&mut cmd)
}

fn run(args: &[String]) -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    setup::Setup::default().all(false)?;
    build()?;
    let bin = agentguard_bin();
    let mut cmd = Command::new(&bin);
    if args.is_empty() {
        cmd.args(RUN_DEFAULT_ARGS).arg(root().join("policies"));
    } else {
        cmd.args(args);
    }
    eprintln!(
        "xtask: starting {} {}",
        bin.display(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    // Replace xtask so Ctrl-C, stdio and the exit code are agentguard's own.
    let err = cmd.exec();
    Err(err).with_context(|| format!("could not start {}", bin.display()))
}

/// Arguments for `cargo test` from what followed `cargo xtask test`.
fn cargo_test_args(args: &[String]) -> Vec<String> {
    if args.is_empty() || args.iter().any(|a| a == "--") {
        args.to_vec()
    } else {
        std::iter::once("--".to_owned())
            .chain(args.iter().cloned())
            .collect()
    }
}

fn test(args: &[String], allow_skips: bool) -> Result<()> {
    let mut set_up = setup::Setup::default();
    set_up.all(true)?;
    set_up.dist_tools()?;
    // tests/dist.rs installs and runs what users get: the package and the
    // image are built from the release binary first.
    build()?;
    dist::dist(&dist::DistArgs { no_build: true })?;
    // (a) Unit and integration tests. Plain `cargo test` covers the default
    // members; `--workspace` would also try to build agentguard-ebpf for the
    // host, which it cannot (build.rs builds it for bpfel). CI is inherited
    // unchanged: under CI=true root-only tests fail instead of skipping.
    let mut cmd = cargo();
    cmd.args(["test", "--release"]).args(cargo_test_args(args));
    // Tests that boot a guest run `$AGENTGUARD_XTASK guest ...`.
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    cmd.env("AGENTGUARD_XTASK", xtask);
    // tests/real_agents.rs drives the real CLI installed above.
    for cli in setup::AGENT_CLIS {
        cmd.env(format!("AGENTGUARD_{}", cli.bin.to_uppercase()), cli.path());
    }
    cmd.env("AGENTGUARD_AGENTS_DIR", setup::AGENTS_DIR);
    let ledger = target_dir().join("test-skips.log");
    let _ = std::fs::remove_file(&ledger);
    cmd.env("AGENTGUARD_SKIP_LEDGER", &ledger);
    eprintln!("xtask: {}", describe(&cmd));
    let ran = run_cmd(&mut cmd);
    let skips = skipped(&ledger);
    ran?;
    if !skips.is_empty() && !allow_skips {
        anyhow::bail!(
            "{} test(s) skipped (listed above): not a green run; run as root with Docker \
             (cargo xtask setup --docker), or pass --allow-skips to accept it",
            skips.len()
        );
    }

    // The default pack's own tests (`agentguard policy test policies/`) run
    // inside step (a), in tests/policy_cli.rs; the qemu guest test
    // (tests/vm.rs) runs `cargo xtask guest` with the kernels fetched above.
    Ok(())
}

/// The tests that skipped in this run (their ledger), listed loudly.
fn skipped(ledger: &Path) -> Vec<String> {
    let skips: Vec<String> = std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    if !skips.is_empty() {
        eprintln!("\nxtask: ==== {} TEST(S) SKIPPED ====", skips.len());
        for s in &skips {
            eprintln!("xtask:   SKIPPED {s}");
        }
        eprintln!("xtask: ====\n");
    }
    skips
}

fn lint() -> Result<()> {
    // Clippy runs agentguard's build.rs, which builds the eBPF object.
    setup::Setup::default().all(false)?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    let mut clippy = cargo();
    clippy.args(["clippy", "--all-targets", "--", "-D", "warnings"]);
    // Run both so one report shows all problems; fail with the first failure.
    let mut first_err = None;
    for cmd in [&mut fmt, &mut clippy] {
        eprintln!("xtask: {}", describe(cmd));
        if let Err(e) = run_cmd(cmd) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Tests that write a script and run it hold this: a fork in another test
/// thread while the script is still open for writing makes its exec fail
/// with "Text file busy".
#[cfg(test)]
pub(crate) static EXEC_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn test_args_go_to_the_harness_by_default() {
        assert!(cargo_test_args(&[]).is_empty());
        assert_eq!(
            cargo_test_args(&strings(&["--nocapture"])),
            strings(&["--", "--nocapture"])
        );
    }

    #[test]
    fn test_args_with_separator_go_to_cargo() {
        let args = strings(&["--test", "cli", "--", "--nocapture"]);
        assert_eq!(cargo_test_args(&args), args);
    }

    #[test]
    fn cli_parses_passthrough_args() {
        let cli = Cli::try_parse_from(["xtask", "run", "--", "events", "--kind", "exec"]);
        match cli.map(|c| c.cmd) {
            Ok(Cmd::Run { args }) => assert_eq!(args, strings(&["events", "--kind", "exec"])),
            _ => panic!("run args not parsed"),
        }
        let cli = Cli::try_parse_from(["xtask", "test", "--", "--nocapture"]);
        match cli.map(|c| c.cmd) {
            Ok(Cmd::Test { args, allow_skips }) => {
                assert_eq!(args, strings(&["--nocapture"]));
                assert!(!allow_skips);
            }
            _ => panic!("test args not parsed"),
        }
        let cli = Cli::try_parse_from([
            "xtask",
            "test",
            "--allow-skips",
            "--",
            "--test",
            "cli",
            "--",
            "--nocapture",
        ]);
        match cli.map(|c| c.cmd) {
            Ok(Cmd::Test { args, allow_skips }) => {
                assert_eq!(args, strings(&["--test", "cli", "--", "--nocapture"]));
                assert!(allow_skips);
            }
            _ => panic!("test --allow-skips not parsed"),
        }
    }

    #[test]
    fn failed_keeps_exit_code() {
        use std::os::unix::process::ExitStatusExt as _;
        let f = Failed::new("x".into(), ExitStatus::from_raw(101 << 8));
        assert_eq!(f.code, 101);
        // Killed by SIGKILL (raw wait status 9).
        let f = Failed::new("x".into(), ExitStatus::from_raw(9));
        assert_eq!(f.code, 137);
    }

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
