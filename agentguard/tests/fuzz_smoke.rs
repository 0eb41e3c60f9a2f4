//! The fuzz targets (fuzz/, cargo-fuzz: the YAML policy loader, Rego
//! inputs and policies, the ring-buffer record decoder, DNS answers) build
//! and survive a short run: `cargo xtask fuzz --secs 10` through the xtask
//! binary (`$AGENTGUARD_XTASK`, which `cargo xtask test` sets, else
//! target/release/xtask). A crash fails the test with the target's report
//! and the input left in fuzz/artifacts/. Under CI=true it never skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Seconds of fuzzing per target.
const SECS: &str = "10";

fn xtask() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("AGENTGUARD_XTASK").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    Some(target.join("release/xtask")).filter(|p| p.is_file())
}

#[test]
fn every_fuzz_target_builds_and_survives_a_short_run() {
    let xtask = xtask();
    if !common::require(
        "the xtask binary (`cargo xtask test` sets AGENTGUARD_XTASK; or build target/release/xtask)",
        xtask.is_some(),
    ) {
        return;
    }
    let Some(xtask) = xtask else { return };
    let out = Command::new(&xtask)
        .args(["fuzz", "--secs", SECS])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {} fuzz: {e}", xtask.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The per-target lines (runs, seconds, crash or not).
    eprint!("{stdout}");
    assert!(
        out.status.success(),
        "`xtask fuzz --secs {SECS}` failed ({}):\n{stdout}\n--- stderr:\n{stderr}",
        out.status
    );
    for target in ["policy_yaml", "rego", "decode", "dns"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{target}: ")) && l.ends_with("no crash")),
            "no clean run of {target} reported:\n{stdout}"
        );
    }
}
