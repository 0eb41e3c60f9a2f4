//! A one-minute `cargo xtask soak`: the daemon with the default pack under
//! the soak's mixed load (execs, opens, refused connects, agent containers
//! started and stopped, credential reads, policy reloads and a Docker
//! engine restart half-way) stays up and keeps working. Its own test
//! binary, because the soak restarts the Docker engine, which stops every
//! container (cargo runs test binaries one at a time).

mod common;

use std::process::{Command, Stdio};

#[test]
fn one_minute_soak_keeps_the_daemon_working() {
    if !common::privileged() || !common::require("a running Docker engine", common::docker_up()) {
        return;
    }
    let xtask = std::env::var_os("AGENTGUARD_XTASK").filter(|x| !x.is_empty());
    if !common::require(
        "AGENTGUARD_XTASK, the xtask binary that runs the soak (`cargo xtask test` sets it)",
        xtask.is_some(),
    ) {
        return;
    }
    let Some(xtask) = xtask else {
        return;
    };
    let out = Command::new(&xtask)
        .args(["soak", "--secs", "60", "--agentguard"])
        .arg(env!("CARGO_BIN_EXE_agentguard"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {} soak: {e}", xtask.to_string_lossy()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}\n--- stderr:\n{stderr}");
    assert!(
        out.status.success(),
        "the soak failed ({}):\n{all}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SOAK_JSON "))
        .unwrap_or_else(|| panic!("no SOAK_JSON line:\n{all}"));
    let s: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("SOAK_JSON: {e}:\n{all}"));
    let n = |key: &str| s[key].as_u64().unwrap_or(0);
    assert_eq!(s["daemon_survived"], true, "{all}");
    assert!(n("events") > 0, "no events:\n{all}");
    assert!(n("alerts") > 0, "no alerts:\n{all}");
    assert!(
        n("reloads_applied") >= 1,
        "no policy reload applied:\n{all}"
    );
    assert_eq!(s["reload_failures"], 0, "{all}");
    // The credential reads of containers the restarted engine started
    // were alerted with their agent: the daemon re-attached to Docker.
    assert!(
        s["docker_restart_s"].is_number(),
        "no Docker restart:\n{all}"
    );
    assert_eq!(s["docker_reattached"], true, "{all}");
    assert!(n("alerts_after_restart") > 0, "{all}");
}
