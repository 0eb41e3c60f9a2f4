//! `bench dns`: what egress by domain name costs an agent. In an agent
//! container, a loop of DNS lookups of an allowed name (UDP, to a server on
//! the Docker bridge) and then a loop of connects to the address they
//! returned (a closed port: refused, never EPERM), timed by the loop itself.
//! Configurations, alternated per round:
//! - `none`: no daemon;
//! - `cidr`: the daemon with agent-egress excepting the address by CIDR
//!   (everything but the domain machinery);
//! - `domains`: agent-egress with a domain list of `--names` names (the
//!   address only reachable because the lookup returned it).
//!
//! Reported as medians, ratios to `none` of the same run, and the time each
//! lookup and connect gained. Never asserts anything.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde::Serialize;

use crate::agentguard_bin;
use crate::bench::{
    check_interrupted, install_sigint_handler, median, start_daemon, write_results, WorkDir,
    AGENT_IMAGE, AGENT_LABEL,
};
use crate::setup::{output, Setup};

#[derive(Args)]
pub struct DnsArgs {
    /// Rounds (each runs every configuration once).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Lookups, then connects, per run.
    #[arg(long, default_value_t = 2000)]
    ops: u64,
    /// Names in the domain list (one of them is the name looked up).
    #[arg(long, default_value_t = 1000)]
    names: usize,
}

const NAME: &str = "api.bench-agent.test";
/// A closed port on the bridge's host side: connects are refused quickly.
const PORT: &str = "9";

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Config {
    None,
    Cidr,
    Domains,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Times {
    lookup_ns: u64,
    connect_ns: u64,
}

#[derive(Serialize)]
struct Row {
    config: Config,
    lookup_ms: f64,
    connect_ms: f64,
    lookup_ratio: f64,
    connect_ratio: f64,
    /// Added per lookup / per connect against `none`, ns.
    lookup_added_ns: f64,
    connect_added_ns: f64,
}

#[derive(Serialize)]
struct Report {
    ops: u64,
    names: usize,
    rounds: u32,
    rows: Vec<Row>,
}

/// The static evade helper (its `dns-serve` and `dns-bench`), built here.
fn evade(work: &Path) -> Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agentguard/tests/evade/evade.c");
    let bin = work.join("evade");
    let st = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .arg("-lpthread")
        .status()
        .context("running cc for the evade helper")?;
    if !st.success() {
        bail!("cc failed building {}", src.display());
    }
    Ok(bin)
}

fn gateway() -> Result<String> {
    let gw = output(Command::new("docker").args([
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
    ]))?;
    let gw = gw.trim().to_owned();
    if !gw.is_empty() {
        return Ok(gw);
    }
    // Docker may leave the gateway out when it picked the subnet itself:
    // the bridge then holds the subnet's first address.
    let subnet = output(Command::new("docker").args([
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{(index .IPAM.Config 0).Subnet}}",
    ]))?;
    let net: std::net::Ipv4Addr = subnet
        .trim()
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no gateway or subnet for the Docker bridge: {subnet:?}"))?;
    Ok(std::net::Ipv4Addr::from(u32::from(net) + 1).to_string())
}

fn policy(dir: &Path, gw: &str, config: Config, names: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let except = match config {
        Config::Cidr => format!("cidrs: [{gw}/32]"),
        _ => {
            let mut list: Vec<String> = (1..names.max(1))
                .map(|i| format!("n{i:04}.bench-names.test"))
                .collect();
            list.push(NAME.to_owned());
            format!("domains: [{}]", list.join(", "))
        }
    };
    let text = format!(
        "name: bench\ndns_resolvers: [{gw}]\nrules:\n  - name: agent-egress\n    kinds: [connect, send]\n    match: {{ agent: any }}\n    when:\n      dest: {{ cidrs: [0.0.0.0/0, \"::/0\"] }}\n      except: {{ loopback: true, dns_resolver: true, {except} }}\n    action: deny\n    severity: high\n    message: \"{{comm}} connected to {{addr}}:{{port}}\"\n"
    );
    std::fs::write(dir.join("net.yaml"), text).context("writing the bench policy")
}

fn run_loop(evade: &Path, gw: &str, ops: u64) -> Result<Times> {
    let mount = format!("{}:/bin/evade:ro", evade.display());
    let out = output(Command::new("docker").args([
        "run",
        "--rm",
        "--label",
        AGENT_LABEL,
        "-v",
        &mount,
        AGENT_IMAGE,
        "/bin/evade",
        "dns-bench",
        &ops.to_string(),
        gw,
        NAME,
        PORT,
    ]))?;
    let line = out.trim();
    let field = |k: &str| -> Result<u64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {k} in the loop's output {line:?}"))
    };
    if !line.starts_with("ok") {
        bail!("the lookup/connect loop failed: {line:?}");
    }
    Ok(Times {
        lookup_ns: field("lookup_ns")?,
        connect_ns: field("connect_ns")?,
    })
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn dns(args: &DnsArgs) -> Result<()> {
    let mut setup = Setup::default();
    setup.all(false)?;
    crate::build()?;
    setup.docker()?;
    setup.busybox_image(AGENT_IMAGE)?;
    install_sigint_handler();
    let work = WorkDir::new()?;
    let evade = evade(&work.0)?;
    let gw = gateway()?;
    let _server = Server(
        Command::new(&evade)
            .args(["dns-serve", &gw, &format!("{NAME}={gw}")])
            .stdout(Stdio::null())
            .spawn()
            .context("starting the DNS server (evade dns-serve)")?,
    );
    let bin = agentguard_bin();
    let configs = [Config::None, Config::Cidr, Config::Domains];
    eprintln!(
        "xtask: bench dns: {} round(s) of none, cidr, domains ({} names); {} lookups then {} connects per run, in an agent container",
        args.rounds, args.names, args.ops, args.ops
    );
    let mut samples: Vec<Vec<Times>> = vec![Vec::new(); configs.len()];
    for round in 1..=args.rounds {
        for (i, c) in configs.iter().enumerate() {
            check_interrupted()?;
            let t = match c {
                Config::None => run_loop(&evade, &gw, args.ops)?,
                _ => {
                    let dir = work.0.join(format!("pol-{c:?}"));
                    policy(&dir, &gw, *c, args.names)?;
                    let _ = Command::new(&bin)
                        .args(["run", "--cleanup"])
                        .stderr(Stdio::null())
                        .status();
                    let daemon_args: Vec<OsString> = vec![
                        "run".into(),
                        "--policies".into(),
                        dir.into_os_string(),
                        "--status-socket".into(),
                        work.0.join("status.sock").into_os_string(),
                    ];
                    let d = start_daemon(&bin, &daemon_args, &work.0)?;
                    let t = run_loop(&evade, &gw, args.ops);
                    d.stop()?;
                    let _ = Command::new(&bin)
                        .args(["run", "--cleanup"])
                        .stderr(Stdio::null())
                        .status();
                    t?
                }
            };
            eprintln!(
                "xtask: round {round} {c:?}: lookups {:.1} ms, connects {:.1} ms",
                t.lookup_ns as f64 / 1e6,
                t.connect_ns as f64 / 1e6
            );
            samples[i].push(t);
        }
    }
    let med =
        |i: usize, f: fn(&Times) -> u64| median(samples[i].iter().map(|t| f(t) as f64).collect());
    let (base_l, base_c) = (med(0, |t| t.lookup_ns), med(0, |t| t.connect_ns));
    let ops = args.ops as f64;
    let rows: Vec<Row> = configs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (l, cn) = (med(i, |t| t.lookup_ns), med(i, |t| t.connect_ns));
            Row {
                config: *c,
                lookup_ms: l / 1e6,
                connect_ms: cn / 1e6,
                lookup_ratio: l / base_l,
                connect_ratio: cn / base_c,
                lookup_added_ns: (l - base_l) / ops,
                connect_added_ns: (cn - base_c) / ops,
            }
        })
        .collect();
    println!("| config | lookups | ratio | +ns/lookup | connects | ratio | +ns/connect |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {:?} | {:.1} ms | x{:.2} | {:.0} | {:.1} ms | x{:.2} | {:.0} |",
            r.config,
            r.lookup_ms,
            r.lookup_ratio,
            r.lookup_added_ns,
            r.connect_ms,
            r.connect_ratio,
            r.connect_added_ns
        );
    }
    write_results(
        "bench-dns.json",
        &Report {
            ops: args.ops,
            names: args.names,
            rounds: args.rounds,
            rows,
        },
    )
}
