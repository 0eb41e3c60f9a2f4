//! `cargo xtask bench lsm`: the BPF-LSM backend's cost, measured in a
//! guest kernel that runs it (this host refuses BPF-LSM).
//!
//! In one guest run, interleaved rounds of the loadgen workload (openat +
//! close, refused loopback connects) run as an agent (a process named
//! `claude`, found by ancestry) with no daemon, with the daemon on the
//! tracepoint backend, and on the LSM backend, all with the default pack.
//! A last LSM run times every hook decision for the guarded task (p50/p99
//! from an in-kernel histogram). Ratios are against the no-daemon runs of
//! the same guest. Absolute times are emulated (TCG): only ratios carry.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::loadgen::Timings;

#[derive(clap::Args)]
pub struct LsmArgs {
    /// Guest kernel series.
    #[arg(long, default_value = "6.12")]
    kernel: String,
    /// Interleaved rounds per configuration.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// openat+close iterations per run.
    #[arg(long, default_value_t = 20_000)]
    opens: u64,
    /// Refused connects per run.
    #[arg(long, default_value_t = 2_000)]
    connects: u64,
}

const CONFIGS: [&str; 3] = ["none", "tracepoint", "lsm"];

/// The `--backend` value a configuration runs the daemon with.
fn backend_flag(c: &str) -> &str {
    if c == "lsm" {
        "auto"
    } else {
        c
    }
}

fn script(a: &LsmArgs) -> String {
    let mut s = String::from(
        r#"set -u
export PATH=/bin:/usr/bin:/sbin:/usr/sbin
mkdir -p /var/lg
# The agent: claude runs the workload as its child, once the daemon knows it.
printf '#!/bin/sh\nsleep 3\nxtask loadgen --opens %s --connects %s --dir /var/lg/w\n' "$1" "$2" > /bin/claude
chmod +x /bin/claude
start() {
  rm -f /var/lg/ready
  AGENTGUARD_LSM_TIMING=$2 agentguard run --policies /etc/agentguard/policies --backend $1 \
     --alerts - --ready-file /var/lg/ready > /dev/null 2>/var/lg/daemon.log &
  D=$!
  n=0; while [ ! -e /var/lg/ready ] && [ $n -lt 600 ]; do sleep 0.2; n=$((n+1)); done
  [ -e /var/lg/ready ] || { echo "daemon did not start:"; cat /var/lg/daemon.log; exit 1; }
}
stop() { kill $D; wait $D; echo "E $1 $(grep -o 'stopped after [0-9]* events' /var/lg/daemon.log) $(grep -o 'walked [0-9]* objects' /var/lg/daemon.log)"; }
"#,
    );
    s = s.replace("\"$1\" \"$2\"", &format!("{} {}", a.opens, a.connects));
    for round in 1..=a.rounds {
        for c in CONFIGS {
            match c {
                "none" => s.push_str(&format!("echo \"T none {round} $(claude)\"\n")),
                b => s.push_str(&format!(
                    "start {} 0; echo \"T {b} {round} $(claude)\"; stop {b}\n",
                    backend_flag(b)
                )),
            }
        }
    }
    s.push_str(
        "start auto 1; claude > /dev/null; stop timing\necho \"H $(grep -o 'n=[0-9]* p50=[0-9]*ns p99=[0-9]*ns' /var/lg/daemon.log)\"\n",
    );
    s
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

pub fn lsm(a: &LsmArgs) -> Result<()> {
    if !matches!(a.kernel.as_str(), "6.1" | "6.12") {
        bail!("--kernel: 6.1 or 6.12");
    }
    crate::setup::Setup::default().all(false)?;
    crate::build()?;
    let me = std::env::current_exe().context("locating the xtask binary")?;
    let dir = crate::target_dir().join("bench-lsm");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bench.sh");
    std::fs::write(&path, script(a))?;
    eprintln!(
        "xtask: bench lsm: {} rounds of {} opens and {} connects per configuration in a {} guest ...",
        a.rounds, a.opens, a.connects, a.kernel
    );
    let out = Command::new(&me)
        .args(["guest", "--kernel", &a.kernel, "--agentguard"])
        .arg(crate::agentguard_bin())
        .arg("--add")
        .arg(&me)
        .arg(&path)
        .output()
        .context("running the guest")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the guest run failed ({}):\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut open: std::collections::HashMap<&str, Vec<u64>> = Default::default();
    let mut conn: std::collections::HashMap<&str, Vec<u64>> = Default::default();
    let mut hist = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("T ") {
            let mut it = rest.splitn(3, ' ');
            let (Some(cfg), Some(_round), Some(json)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let Some(cfg) = CONFIGS.iter().find(|c| **c == cfg) else {
                continue;
            };
            let t: Timings =
                serde_json::from_str(json).with_context(|| format!("loadgen output {json:?}"))?;
            open.entry(cfg).or_default().push(t.open_ns);
            conn.entry(cfg).or_default().push(t.connect_ns);
        } else if let Some(e) = line.strip_prefix("E ") {
            // What the daemon saw: shows the agent was really guarded.
            eprintln!("xtask: daemon ({e})");
        } else if let Some(h) = line.strip_prefix("H ") {
            hist = Some(h.trim().to_owned());
        }
    }
    let base_o = median(open.get("none").cloned().unwrap_or_default()).max(1);
    let base_c = median(conn.get("none").cloned().unwrap_or_default()).max(1);
    println!(
        "guest {} (TCG), medians of {} rounds; agent workload, default pack",
        a.kernel, a.rounds
    );
    println!("| backend | open loop | connect loop | overall |");
    println!("| --- | --- | --- | --- |");
    for c in CONFIGS {
        let o = median(open.get(c).cloned().unwrap_or_default());
        let n = median(conn.get(c).cloned().unwrap_or_default());
        println!(
            "| {c} | {:.1} ms ×{:.2} | {:.1} ms ×{:.2} | ×{:.2} |",
            o as f64 / 1e6,
            o as f64 / base_o as f64,
            n as f64 / 1e6,
            n as f64 / base_c as f64,
            (o + n) as f64 / (base_o + base_c) as f64
        );
    }
    match hist {
        Some(h) if !h.is_empty() => println!("LSM decision time (file hooks, guarded task): {h}"),
        _ => println!("LSM decision time: no histogram (the daemon printed none)"),
    }
    Ok(())
}
