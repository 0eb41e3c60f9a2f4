//! The BPF-LSM backend against an agent that tries to get around it, on
//! real Debian kernels (6.1 and 6.12) booted with `lsm=...,bpf` by
//! `cargo xtask guest` (this host refuses BPF-LSM).
//!
//! In the guest, a fake `claude` agent (found by ancestry) runs every
//! evasion we know of against a protected volume directory and a
//! protected secret: absolute and relative paths, a symlinked directory,
//! `/proc/self/root`, io_uring, openat2, a hard link made beforehand, a
//! loop of `rm` processes, `rm -rf`, rename away and onto, truncate, a
//! thread racing to rewrite the path after the syscall started, raw and
//! packet sockets, an io_uring connect, the Docker socket, and attacks on
//! the daemon itself (signal, ptrace, bpf). Each must lose nothing and be
//! refused; the alerts must name the rule and the `lsm` mechanism. A
//! non-agent shell then does the same things freely (the control).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use common::evade::evade_bin;

const POLICY: &str = r#"name: guest
mode: enforce
rules:
  - name: protect-volume
    kinds: [unlink, rmdir, rename, truncate]
    match: { agent: any }
    when: { path: ["/srv/vol/**"] }
    action: kill
    severity: critical
    message: "{comm} ({agent}) destroyed {path}"
  - name: secret-deny
    kinds: [open]
    match: { agent: any }
    when: { path: ["/root/secret/**"] }
    action: deny
    severity: critical
    message: "{comm} ({agent}) opened {path}"
  - name: local-port-deny
    kinds: [connect, send]
    match: { agent: any }
    when: { dest: { cidrs: [127.0.0.2/32], ports: [9] } }
    action: deny
    severity: high
    message: "{comm} ({agent}) connected to {addr}:{port}"
  - name: named-egress
    kinds: [connect, send]
    match: { agent: any }
    when:
      dest: { cidrs: [127.0.0.64/26] }
      except: { domains: [api.agent.test] }
    action: deny
    severity: high
    message: "{comm} ({agent}) connected to {addr}:{port}"
"#;

/// The guest scenario. Lines `R NAME VALUE` are results; `A {json}` alerts.
const SCRIPT: &str = r#"
set -u
export PATH=/bin:/usr/bin:/sbin:/usr/sbin
mkdir -p /etc/ag/pol
cp /etc/agentguard/policies/*.yaml /etc/agentguard/policies/*.rego /etc/ag/pol/
# With BPF-LSM the io_uring operations themselves are checked: let the
# agent set one up, so the hooks are what stops it.
sed -i '/name: io-uring/,/message/ s/action: kill/action: alert/' /etc/ag/pol/exec.yaml
grep -A12 'name: io-uring' /etc/ag/pol/exec.yaml | grep -q 'action: alert' || { echo "io-uring rule not relaxed"; exit 1; }
# Every domain rule of a subject must list a name for its query to leave:
# the test's name joins the pack's agent-egress list too.
sed -i 's/^\( *\)- api.anthropic.com/\1- api.agent.test\n\1- api.anthropic.com/' /etc/ag/pol/network.yaml
grep -q -- '- api.agent.test' /etc/ag/pol/network.yaml || { echo "test name not added to agent-egress"; exit 1; }
cat > /etc/ag/pol/guest.yaml <<'POLICY_EOF'
@POLICY@
POLICY_EOF

# Set-up, as a non-agent: the volume, the secret, and the indirect paths an
# agent would use (made beforehand: a hard link, symlinks).
mkdir -p /srv/vol/sub /root/secret /var/ag /run
i=1; while [ $i -le 30 ]; do echo data > /srv/vol/f$i; i=$((i+1)); done
echo deep > /srv/vol/sub/g
echo TOPSECRET > /root/secret/key
mkdir -p /root/.ssh; echo GUESTKEY > /root/.ssh/guest_key
echo DECOYDATA > /var/ag/decoy000
ln /root/secret/key /var/ag/hardlink
ln -s /root/secret /var/ag/symdir
ln -s /root/secret/key /var/ag/symkey
ln -s /srv/vol /var/ag/volink
echo other > /var/ag/other
cp /bin/busybox /tmp/bb
ln -s /tmp/bb /var/ag/true
# A resolver and a server for the domain rule (named-egress).
evade dns-serve 127.0.0.1 api.agent.test=127.0.0.66 other.test=127.0.0.67 &
httpd -p 127.0.0.66:8080 -h /var/ag
httpd -p 127.0.0.67:8080 -h /var/ag

agentguard run --policies /etc/ag/pol --alerts /var/ag/alerts.jsonl \
  --status-socket /run/docker.sock --ready-file /var/ag/ready 2>/var/ag/daemon.log &
DAEMON=$!
n=0; while [ ! -e /var/ag/ready ] && [ $n -lt 600 ]; do sleep 0.2; n=$((n+1)); done
[ -e /var/ag/ready ] || { echo "daemon not ready"; cat /var/ag/daemon.log; exit 1; }
echo "R backend $(grep -o 'enforcement backend: [a-z]*' /var/ag/daemon.log | head -1 | cut -d' ' -f3)"

left() { n=0; for f in /srv/vol/f* /srv/vol/sub/g; do [ -e "$f" ] && n=$((n+1)); done; echo $n; }
got() { r=$("$@" 2>/dev/null); s=$?; [ $s -gt 128 ] && echo "killed" || echo "$r"; }

cat > /var/ag/agent.sh <<'AGENT_EOF'
set -u
left() { n=0; for f in /srv/vol/f* /srv/vol/sub/g; do [ -e "$f" ] && n=$((n+1)); done; echo $n; }
got() { r=$("$@" 2>/dev/null); s=$?; [ $s -gt 128 ] && echo "killed" || echo "$r"; }
rm /srv/vol/f1 2>/dev/null; echo "R abs_unlink_kept $([ -e /srv/vol/f1 ] && echo yes || echo no)"
(cd /srv/vol && rm f2 2>/dev/null); echo "R rel_unlink_kept $([ -e /srv/vol/f2 ] && echo yes || echo no)"
rm /var/ag/volink/f3 2>/dev/null; echo "R symdir_unlink_kept $([ -e /srv/vol/f3 ] && echo yes || echo no)"
rm /proc/self/root/srv/vol/f4 2>/dev/null; echo "R procroot_unlink_kept $([ -e /srv/vol/f4 ] && echo yes || echo no)"
echo "R uring_unlink $(got evade uring-unlink /srv/vol/f5)"
echo "R uring_unlink_kept $([ -e /srv/vol/f5 ] && echo yes || echo no)"
for i in 6 7 8 9 10 11 12 13; do rm /srv/vol/f$i 2>/dev/null; done
echo "R rm_loop_left $(left)"
rm -rf /srv/vol 2>/dev/null
echo "R rm_rf_left $(left)"
echo "R rename_away $(got evade rename /srv/vol/f14 /var/ag/f14)"
echo "R rename_inside $(got evade rename /srv/vol/f15 /srv/vol/f15.new)"
echo "R rename_onto $(got evade rename /var/ag/other /srv/vol/f16)"
echo "R truncate $(got evade truncate /srv/vol/f17)"
echo "R open_trunc $(got evade open-trunc /srv/vol/f18)"
echo "R f17_size $(wc -c < /srv/vol/f17)"
echo "R f18_size $(wc -c < /srv/vol/f18)"
echo "R cat_secret $(cat /root/secret/key 2>/dev/null || echo refused)"
echo "R open_symkey $(got evade open /var/ag/symkey)"
echo "R open_symdir $(got evade open /var/ag/symdir/key)"
echo "R open_hardlink $(got evade open /var/ag/hardlink)"
echo "R open_procroot $(got evade open /proc/self/root/root/secret/key)"
echo "R uring_open $(got evade uring-open /root/secret/key)"
echo "R openat2 $(got evade openat2 /root/secret/key)"
echo "R new_link $(got evade link /root/secret/key /var/ag/hl2)"
echo "R raw_socket $(got evade raw-socket)"
echo "R raw6_socket $(got evade raw6-socket)"
echo "R packet_socket $(got evade packet-socket)"
echo "R connect_denied $(got evade connect 127.0.0.2 9)"
echo "R uring_connect $(got evade uring-connect 127.0.0.2 9)"
echo "R loopback_allowed $(got evade connect 127.0.0.1 9)"
echo "R docker_socket $(got evade unix-connect /run/docker.sock)"
echo "R kill_daemon $(got evade kill $DAEMON 15)"
echo "R ptrace_daemon $(got evade ptrace $DAEMON)"
echo "R bpf $(got evade bpf-prog)"
/var/ag/true; echo "R exec_symlink_temp ran"
# Last: its thousands of refused opens are each an alert.
evade race-open /root/secret/key /var/ag/decoy000 1 > /var/ag/race.out 2>/dev/null &
echo $! > /var/ag/race.pid; wait
echo "R race $(cat /var/ag/race.out)"
# Egress by name for a host agent (its process tree): the address of an
# allowed name only once this agent's own lookup gave it.
echo "R dns_hard $(got evade connect 127.0.0.66 8080)"
echo "R dns_api $(got evade dns-connect 127.0.0.1 api.agent.test 8080)"
echo "R dns_again $(got evade connect 127.0.0.66 8080)"
echo "R dns_other $(got evade dns-query 127.0.0.1 other.test)"
echo "R dns_bind $(got evade bind53)"
# The pack's credential-read taints (matched in the file_open hook): the
# agent's next connect, even to loopback, is refused.
echo "R taint_before $(got evade connect 127.0.0.1 9)"
cat /root/.ssh/guest_key > /dev/null
echo "R taint_loopback $(got evade connect 127.0.0.1 9)"
echo "R agent_done 1"
AGENT_EOF

# The agent: a process named claude (found by ancestry) running the
# attempts. It waits for the daemon to have seen it before it forks.
printf '#!/bin/sh\nsleep 2\nexport DAEMON=%s\nsh /var/ag/agent.sh\n' "$DAEMON" > /bin/claude
chmod +x /bin/claude
claude

# The control: the same things from a non-agent shell.
echo "R ctl_unlink $(got evade unlink /srv/vol/f19)"
echo "R ctl_cat $(cat /root/secret/key)"
echo "R ctl_hardlink $(got evade open /var/ag/hardlink)"
echo "R ctl_raw $(got evade raw-socket)"
echo "R ctl_connect $(got evade connect 127.0.0.2 9)"
echo "R ctl_docker $(got evade unix-connect /run/docker.sock)"
echo "R ctl_rm_rf $(rm -rf /srv/vol && echo gone)"
echo "R ctl_dns_other $(got evade dns-query 127.0.0.1 other.test)"
echo "R ctl_dns_hard $(got evade connect 127.0.0.67 8080)"

# Reload: the secret rule becomes a rule about another directory, the port
# moves. The changed rules must stop at once, and no entry left from them
# may fire for the rules now in their slots.
mkdir -p /srv/other; echo o > /srv/other/x
sed -e 's#/root/secret/\*\*#/srv/other/**#' -e 's#ports: \[9\]#ports: [10]#' \
  -e 's#name: secret-deny#name: other-deny#' /etc/ag/pol/guest.yaml > /var/ag/g2.yaml
cp /var/ag/g2.yaml /etc/ag/pol/guest.yaml
kill -HUP $DAEMON; sleep 3
cat > /var/ag/agent2.sh <<'AGENT_EOF'
got() { r=$("$@" 2>/dev/null); s=$?; [ $s -gt 128 ] && echo "killed" || echo "$r"; }
echo "R reload_secret $(got evade open /root/secret/key)"
echo "R reload_other $(got evade open /srv/other/x)"
echo "R reload_port9 $(got evade connect 127.0.0.2 9)"
echo "R reload_port10 $(got evade connect 127.0.0.2 10)"
AGENT_EOF
printf '#!/bin/sh\nsleep 2\nsh /var/ag/agent2.sh\n' > /bin/claude; claude

# Restart after kill -9 with the port rule changed back: the pinned network
# entries of the old rule must not survive into the new daemon's slots.
kill -9 $DAEMON; wait $DAEMON 2>/dev/null
sed -e 's#ports: \[10\]#ports: [9]#' /var/ag/g2.yaml > /etc/ag/pol/guest.yaml
rm -f /var/ag/ready
agentguard run --policies /etc/ag/pol --alerts /var/ag/alerts2.jsonl \
  --status-socket /run/ag2.sock --ready-file /var/ag/ready 2>/var/ag/daemon2.log &
DAEMON=$!
n=0; while [ ! -e /var/ag/ready ] && [ $n -lt 600 ]; do sleep 0.2; n=$((n+1)); done
cat > /var/ag/agent3.sh <<'AGENT_EOF'
got() { r=$("$@" 2>/dev/null); s=$?; [ $s -gt 128 ] && echo "killed" || echo "$r"; }
echo "R restart_port9 $(got evade connect 127.0.0.2 9)"
echo "R restart_port10 $(got evade connect 127.0.0.2 10)"
AGENT_EOF
printf '#!/bin/sh\nsleep 2\nsh /var/ag/agent3.sh\n' > /bin/claude; claude
kill $DAEMON; wait $DAEMON
agentguard check | grep -o 'enforcement backend: [a-z]*' | sed 's/enforcement backend: /R check_backend /'
RACE=$(cat /var/ag/race.pid)
echo "R race_alerts $(grep -c "\"pid\":$RACE," /var/ag/alerts.jsonl)"
grep -v "\"pid\":$RACE," /var/ag/alerts.jsonl | while read -r line; do echo "A $line"; done
echo "--- daemon log (warnings and errors)"
grep -i 'error\|verifier\|warn' /var/ag/daemon.log | head -30
"#;

fn run_guest(kernel: &str) -> Option<(HashMap<String, String>, Vec<serde_json::Value>)> {
    let xtask = std::env::var_os("AGENTGUARD_XTASK");
    if !common::require(
        "the guest runner (run through `cargo xtask test`, which sets AGENTGUARD_XTASK)",
        xtask.is_some(),
    ) {
        return None;
    }
    let xtask = PathBuf::from(xtask?);
    let dir = std::env::temp_dir().join(format!("agentguard-lsm-{kernel}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let script = dir.join("lsm.sh");
    std::fs::write(&script, SCRIPT.replace("@POLICY@", POLICY.trim_end())).expect("write script");
    let out = Command::new(&xtask)
        .args(["guest", "--kernel", kernel, "--agentguard"])
        .arg(env!("CARGO_BIN_EXE_agentguard"))
        .arg("--add")
        .arg(evade_bin())
        .arg(&script)
        .output()
        .expect("run the guest runner");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "--- guest {kernel} output ---\n{text}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "guest {kernel} failed: {}",
        out.status
    );
    let mut results = HashMap::new();
    let mut alerts = Vec::new();
    for line in text.lines() {
        if let Some(r) = line.strip_prefix("R ") {
            let (k, v) = r.split_once(' ').unwrap_or((r, ""));
            results.insert(k.to_owned(), v.trim().to_owned());
        } else if let Some(a) = line.strip_prefix("A ") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(a) {
                alerts.push(v);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Some((results, alerts))
}

fn check(kernel: &str) {
    let Some((r, alerts)) = run_guest(kernel) else {
        return;
    };
    let get = |k: &str| r.get(k).map(String::as_str).unwrap_or("<missing>");
    let expect = |k: &str, want: &str| assert_eq!(get(k), want, "{kernel}: {k}");
    expect("backend", "lsm");
    expect("agent_done", "1");
    // The volume: every way of removing a file loses nothing.
    for k in [
        "abs_unlink_kept",
        "rel_unlink_kept",
        "symdir_unlink_kept",
        "procroot_unlink_kept",
        "uring_unlink_kept",
    ] {
        expect(k, "yes");
    }
    expect("uring_unlink", "killed");
    expect("rm_loop_left", "31");
    expect("rm_rf_left", "31");
    expect("rename_away", "killed");
    // A `path` rule covers any rename of its files (the rule's userspace
    // meaning too); only `under_mount` lets moves inside the volume pass.
    expect("rename_inside", "killed");
    expect("rename_onto", "killed");
    expect("truncate", "killed");
    expect("open_trunc", "killed");
    expect("f17_size", "5");
    expect("f18_size", "5");
    // The secret: refused however it is reached.
    expect("cat_secret", "refused");
    for k in [
        "open_symkey",
        "open_symdir",
        "open_hardlink",
        "open_procroot",
        "uring_open",
        "openat2",
        "new_link",
    ] {
        expect(k, "err EPERM");
    }
    // The race: the thread rewriting the path never gets the secret.
    let race = get("race");
    assert!(race.starts_with("ok "), "{kernel}: race {race}");
    assert!(race.contains(" secret=0 "), "{kernel}: race {race}");
    assert!(!race.contains(" decoy=0 "), "{kernel}: race ran: {race}");
    let race_alerts: u64 = get("race_alerts").parse().unwrap_or(0);
    assert!(
        race_alerts > 0,
        "{kernel}: the race's refused opens raised no alert"
    );
    // The network.
    for k in [
        "raw_socket",
        "raw6_socket",
        "packet_socket",
        "connect_denied",
        "uring_connect",
        "docker_socket",
        // The daemon itself.
        "kill_daemon",
        "ptrace_daemon",
        "bpf",
    ] {
        expect(k, "err EPERM");
    }
    // Loopback stays open (nothing listens there).
    expect("loopback_allowed", "err ECONNREFUSED");
    // Until the agent reads a key: then it is tainted, in the hook.
    // Egress by name: the hardcoded address is refused until the agent's
    // own lookup of the allowed name gave it; an unlisted name's query is
    // refused at its send; so is a bind to port 53.
    expect("dns_hard", "err EPERM");
    expect("dns_api", "ok addr=127.0.0.66");
    expect("dns_again", "ok");
    expect("dns_other", "err EPERM");
    expect("dns_bind", "err EPERM");
    expect("ctl_dns_other", "ok addr=127.0.0.67");
    expect("ctl_dns_hard", "ok");
    expect("taint_before", "err ECONNREFUSED");
    expect("taint_loopback", "err EPERM");
    // The control: a non-agent does all of it freely.
    expect("ctl_unlink", "ok");
    expect("ctl_cat", "TOPSECRET");
    expect("ctl_hardlink", "ok bytes=10");
    expect("ctl_raw", "ok");
    expect("ctl_connect", "err ECONNREFUSED");
    expect("ctl_docker", "ok");
    expect("ctl_rm_rf", "gone");
    // Reload and restart reconcile the kernel maps with the new rules.
    expect("reload_secret", "ok bytes=10");
    expect("reload_other", "err EPERM");
    expect("reload_port9", "err ECONNREFUSED");
    expect("reload_port10", "err EPERM");
    expect("restart_port9", "err EPERM");
    expect("restart_port10", "err ECONNREFUSED");
    expect("check_backend", "lsm");

    // Alerts: each refusal under its rule, carried out by the LSM hook.
    let by = |rule: &str| -> Vec<&serde_json::Value> {
        alerts
            .iter()
            .filter(|a| a["decision"]["rule"] == rule)
            .collect()
    };
    let lsm = |a: &&serde_json::Value| a["result"]["mechanism"] == "lsm";
    let vol = by("protect-volume");
    assert!(
        vol.iter()
            .filter(|a| lsm(a) && a["result"]["outcome"] == "killed")
            .count()
            >= 10,
        "{kernel}: protect-volume alerts {vol:#?}"
    );
    assert!(
        vol.iter().all(|a| a["result"]["syscall_completed"] != true),
        "{kernel}: a refused removal completed: {vol:#?}"
    );
    // io_uring's removal is reported by the hook itself, with the real path.
    assert!(
        vol.iter()
            .any(|a| a["event"]["syscall"] == "lsm:path_unlink"
                && a["event"]["file"]["path"] == "/srv/vol/f5"),
        "{kernel}: no LSM record for the io_uring unlink: {vol:#?}"
    );
    let sec = by("secret-deny");
    assert!(
        sec.iter()
            .filter(|a| lsm(a) && a["result"]["outcome"] == "denied")
            .count()
            >= 7,
        "{kernel}: secret-deny alerts {sec:#?}"
    );
    assert!(
        by("raw-socket")
            .iter()
            .any(|a| a["event"]["kind"] == "socket"
                && lsm(a)
                && a["result"]["outcome"] == "denied"),
        "{kernel}: no LSM deny alert for the raw socket"
    );
    assert!(
        by("local-port-deny")
            .iter()
            .any(|a| a["result"]["outcome"] == "denied"),
        "{kernel}: no alert for the denied connect"
    );
    assert!(
        by("docker-socket")
            .iter()
            .any(|a| lsm(a) && a["result"]["outcome"] == "denied"),
        "{kernel}: docker-socket deny not by lsm"
    );
    assert!(
        by("exec-from-temp").iter().any(lsm),
        "{kernel}: exec through a symlink into /tmp not alerted by lsm"
    );
    // The dropped query is alerted with its name, as a kernel deny.
    assert!(
        by("named-egress")
            .iter()
            .any(|a| a["event"]["dns"]["name"] == "other.test"
                && a["result"]["outcome"] == "denied"
                && a["result"]["mechanism"] == "cgroup_skb"),
        "{kernel}: no named-egress alert for the query of other.test: {:#?}",
        by("named-egress")
    );
    // The control raised nothing.
    assert!(
        alerts
            .iter()
            .all(|a| a["event"]["comm"] != "evade" || a["event"]["identity"]["agent"].is_object()),
        "{kernel}: an alert for the non-agent control"
    );
}

#[test]
fn lsm_backend_refuses_evasions_on_debian_6_1() {
    check("6.1");
}

#[test]
fn lsm_backend_refuses_evasions_on_debian_6_12() {
    check("6.12");
}
