//! `agentguard policy lint|test` and `agentguard replay`, run as a user
//! would (no root needed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn agentguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentguard"))
        .args(args)
        .env("AGENTGUARD_LOG", "warn")
        .output()
        .expect("run agentguard")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn pack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "agentguard-policy-cli-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

/// A copy of the default pack's policies (not its tests).
fn copy_pack(to: &Path) {
    for e in std::fs::read_dir(pack()).expect("read pack") {
        let p = e.expect("entry").path();
        let keep = p.extension().is_some_and(|x| x == "yaml" || x == "rego") && p.is_file();
        if keep {
            std::fs::copy(&p, to.join(p.file_name().expect("name"))).expect("copy");
        }
    }
}

#[test]
fn lint_accepts_the_default_pack() {
    let o = agentguard(&["policy", "lint", pack().to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("OK"), "{}", text(&o));
    // One file of it, too.
    let one = pack().join("network.yaml");
    let o = agentguard(&["policy", "lint", one.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn lint_names_file_and_line_of_errors() {
    let d = scratch("lint");
    copy_pack(&d);
    std::fs::write(
        d.join("typo.yaml"),
        "name: typo\nrules:\n  - name: r\n    kinds: [open]\n    when:\n      paths: [/etc/**]\n    action: alert\n    severity: low\n    message: m\n",
    )
    .expect("write");
    std::fs::write(
        d.join("syntax.yaml"),
        "rules:\n  - name: r\n    kinds: [open\n",
    )
    .expect("write");
    let o = agentguard(&["policy", "lint", d.to_str().expect("utf8")]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let typo = format!("{}:6:7: error: ", d.join("typo.yaml").display());
    assert!(err.contains(&typo), "{}", text(&o));
    assert!(err.contains("unknown field `paths`"), "{}", text(&o));
    let syntax = format!("{}:4:", d.join("syntax.yaml").display());
    assert!(err.contains(&syntax), "{}", text(&o));

    // A single broken file.
    let o = agentguard(&[
        "policy",
        "lint",
        d.join("typo.yaml").to_str().expect("utf8"),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&d);
}

/// Every broken rule of a file is reported, each at its place, not only
/// the first one serde stops at.
#[test]
fn lint_reports_every_broken_rule_of_a_file() {
    let d = scratch("lint-all");
    let rule = |name: &str, extra: &str| {
        format!(
            "  - name: {name}\n    kinds: [open]\n    match: {{ agent: any }}\n    when: {{ path: [\"/x\"] }}\n{extra}    action: alert\n    message: m\n"
        )
    };
    let src = format!(
        "name: many\nrules:\n{}{}{}{}",
        rule("no-severity", ""),
        rule("fine", "    severity: low\n"),
        rule("bogus-field", "    severity: low\n    bogus: 1\n"),
        rule("bad-kind", "    severity: low\n").replace("[open]", "[opne]"),
    );
    std::fs::write(d.join("many.yaml"), &src).expect("write");
    let o = agentguard(&["policy", "lint", d.to_str().expect("utf8")]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let at = |needle: &str| {
        let line = src
            .lines()
            .position(|l| l.contains(needle))
            .map_or(0, |i| i + 1);
        format!("{}:{line}:", d.join("many.yaml").display())
    };
    for (place, what) in [
        (
            at("name: no-severity"),
            "rules[0]: missing field `severity`",
        ),
        (at("bogus: 1"), "rules[2]: unknown field `bogus`"),
        (at("[opne]"), "rules[3]: unknown variant `opne`"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&place) && l.contains(what)),
            "{place} {what}:\n{err}"
        );
    }
    assert!(!err.contains("rules[1]"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn test_runs_the_default_pack() {
    let o = agentguard(&["policy", "test", pack().to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let summary = out.lines().last().unwrap_or("");
    assert!(summary.ends_with(" passed, 0 failed"), "{}", text(&o));
    let passed: usize = summary
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(passed >= 40, "{}", text(&o));
}

#[test]
fn test_reports_a_wrong_expectation_with_a_diff() {
    let d = scratch("test");
    copy_pack(&d);
    std::fs::create_dir_all(d.join("tests")).expect("mkdir");
    let case = r#"
base: { ts_ns: 1, kind: open, syscall: openat, pid: 9, tid: 9, ppid: 1, uid: 0, gid: 0, comm: cat, cgroup_id: 1, ret: 3 }
identities:
  claude: { scope: host, agent: { name: claude, source: ancestry, pid: 5 } }
cases:
  - name: right
    identity: claude
    event: { file: { path: /root/.ssh/id_rsa, resolution: absolute, flags: 0, access: read } }
    expect: [{ rule: credential-read, action: alert }]
  - name: deliberately wrong
    identity: claude
    event: { file: { path: /root/.ssh/id_rsa, resolution: absolute, flags: 0, access: read } }
    expect: none
"#;
    std::fs::write(d.join("tests/wrong.yaml"), case).expect("write");
    let o = agentguard(&["policy", "test", d.to_str().expect("utf8")]);
    assert!(!o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("FAIL "), "{}", text(&o));
    assert!(
        out.contains("wrong.yaml:10: deliberately wrong"),
        "{}",
        text(&o)
    );
    assert!(out.contains("--- expected"), "{}", text(&o));
    assert!(out.contains("- (no decision)"), "{}", text(&o));
    assert!(out.contains("+ alert credential-read"), "{}", text(&o));
    // The pack's Rego tests ran too (privilege_test.rego was copied).
    assert!(
        out.lines()
            .last()
            .unwrap_or("")
            .ends_with(" passed, 1 failed"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn replay_prints_decisions_as_json_lines() {
    let d = scratch("replay");
    let claude = r#""identity":{"scope":"container","container":{"id":"c1","info":{"id":"c1","name":"agent-1","image":"img","runtime":"docker","labels":{"agentguard.io/agent":"claude"},"mounts":[{"source":"/srv","destination":"/data","read_only":false,"kind":"bind"}]}},"agent":{"name":"claude","source":"label"}}"#;
    let common = r#""pid":7,"tid":7,"ppid":1,"uid":0,"gid":0,"comm":"agent","cgroup_id":1"#;
    let lines = [
        format!(
            r#"{{"ts_ns":1,"kind":"connect","syscall":"connect",{common},"ret":0,"net":{{"family":"inet","addr":"203.0.113.9","port":443,"fd":3}},{claude}}}"#
        ),
        format!(
            r#"{{"ts_ns":2,"kind":"connect","syscall":"connect",{common},"ret":0,"net":{{"family":"inet","addr":"127.0.0.1","port":443,"fd":3}},{claude}}}"#
        ),
        format!(
            r#"{{"ts_ns":3,"kind":"unlink","syscall":"unlinkat",{common},"ret":0,"file":{{"path":"/data/x","resolution":"absolute","flags":0}},{claude}}}"#
        ),
        format!(
            r#"{{"ts_ns":4,"kind":"unlink","syscall":"unlinkat",{common},"ret":0,"file":{{"path":"/data/x","resolution":"absolute","flags":0}}}}"#
        ),
        format!(
            r#"{{"ts_ns":5,"kind":"send","syscall":"sendto",{common},"ret":40,"net":{{"family":"inet","addr":"10.9.9.9","port":53,"fd":3,"len":40}},{claude}}}"#
        ),
        String::new(),
    ];
    let events = d.join("events.jsonl");
    std::fs::write(&events, lines.join("\n")).expect("write");
    let o = agentguard(&[
        "replay",
        "--policies",
        pack().to_str().expect("utf8"),
        "--dns-resolver",
        "10.9.9.9",
        events.to_str().expect("utf8"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let got: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let summary: Vec<(u64, &str, &str)> = got
        .iter()
        .map(|v| {
            (
                v["line"].as_u64().expect("line"),
                v["rule"].as_str().expect("rule"),
                v["action"].as_str().expect("action"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(1, "agent-egress", "deny"), (3, "volume-removal", "kill")],
        "{}",
        text(&o)
    );
    assert_eq!(got[0]["policy"], "network");
    assert_eq!(
        got[0]["message"],
        "agent (claude) connected to 203.0.113.9:443"
    );
    assert_eq!(got[0]["mode"], "enforce");
    assert_eq!(got[1]["ts_ns"], 3);

    // Without the resolver the DNS query is egress too; a bad line fails.
    std::fs::write(&events, format!("{}\nnot json\n", lines[4])).expect("write");
    let o = agentguard(&[
        "replay",
        "--policies",
        pack().to_str().expect("utf8"),
        events.to_str().expect("utf8"),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 1, "{}", text(&o));
    assert!(out.contains("agent-egress"), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(":2: skipped"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(&d);
}
