//! `agentguard learn`: watch a real agent container, write its policy, and
//! check that the policy lints, passes its own tests, raises nothing on
//! replay of the session it came from, and catches what was not seen.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_agentguard");

fn agentguard(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run agentguard")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Replays `lines` (events as JSON) under `pol`; returns the decisions.
fn replay(dir: &Path, pol: &Path, lines: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let f = dir.join("probe.jsonl");
    let body: Vec<String> = lines.iter().map(|v| v.to_string()).collect();
    std::fs::write(&f, body.join("\n") + "\n").expect("write probe events");
    let out = agentguard(&[
        "replay",
        "--policies",
        pol.to_str().expect("utf-8"),
        f.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "replay: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("replay line"))
        .collect()
}

#[test]
fn a_learned_policy_fits_the_session_it_came_from_and_catches_the_rest() {
    if !common::docker_ready() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("agtest-learn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pol = dir.join("pol");
    let vol = dir.join("vol");
    std::fs::create_dir_all(&vol).expect("mkdir");
    let ready = dir.join("ready");
    let out_file = pol.join("learner.yaml");
    let learn_log = dir.join("learn.log");
    let learn = common::daemon::spawn_ready(
        Command::new(BIN)
            .args(["learn", "--agent", "learner", "--for", "8s", "--strictness"])
            .arg("enforce")
            .arg("--out")
            .arg(&out_file)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&learn_log).expect("learn log")),
        &ready,
        Some(&learn_log),
    );
    let gw = common::bridge_gateway();
    let name = format!("agtest-learner-{}", std::process::id());
    let _c = common::ContainerGuard(name.clone());
    let script = format!(
        "mkdir -p /work/out; for i in 1 2 3 4; do echo x > /work/out/f$i; done; \
         echo y > /work/notes.txt; rm /work/out/f1; cat /etc/hostname >/dev/null; \
         nc -w 1 {gw} 9 </dev/null; echo done"
    );
    let run = Command::new("docker")
        .args(["run", "--rm", "--name", &name])
        .args(["--label", "agentguard.io/agent=learner", "-v"])
        .arg(format!("{}:/work", vol.display()))
        .args([common::TEST_IMAGE, "sh", "-c", &script])
        .output()
        .expect("docker run");
    assert!(text(&run).contains("done"), "{}", text(&run));
    let learned = learn.wait_with_output().expect("learn");
    assert!(
        learned.status.success(),
        "learn: {}{}",
        text(&learned),
        std::fs::read_to_string(&learn_log).unwrap_or_default()
    );
    let policy = std::fs::read_to_string(&out_file).expect("learned policy");
    // What the session did is in it, generalised where it should be.
    for want in [
        format!("\"{gw}/32\""),
        "\"/work/out/**\"".to_owned(),
        "\"/work/notes.txt\"".to_owned(),
        "action: deny".to_owned(),
        "action: kill".to_owned(),
    ] {
        assert!(policy.contains(&want), "no {want} in:\n{policy}");
    }
    let lint = agentguard(&["policy", "lint", pol.to_str().expect("utf-8")]);
    assert!(lint.status.success(), "lint: {}\n{policy}", text(&lint));
    let test = agentguard(&["policy", "test", pol.to_str().expect("utf-8")]);
    let t = text(&test);
    assert!(test.status.success(), "policy test: {t}\n{policy}");
    let passed: usize = t
        .lines()
        .find_map(|l| l.strip_suffix(" passed, 0 failed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 6, "too few generated cases: {t}");
    // Replay of the session under its own policy: nothing.
    let events: Vec<serde_json::Value> = std::fs::read_to_string(pol.join("learner.events.jsonl"))
        .expect("recorded events")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["identity"]["agent"]["name"] == "learner")
        .collect();
    assert!(events.len() > 10, "few events recorded: {}", events.len());
    let got = replay(&dir, &pol, &events);
    assert!(got.is_empty(), "replay of the learned session: {got:?}");
    // What was not seen: another binary, another destination, a write
    // and a removal elsewhere (replayed: no traffic leaves).
    let first = |kind: &str| {
        events
            .iter()
            .find(|v| v["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} event recorded"))
    };
    let mut exec = events
        .iter()
        .find(|v| v["kind"] == "exec" && v["ret"] == 0)
        .cloned()
        .expect("an exec recorded");
    exec["exec"]["file"]["path"] = "/usr/bin/wget".into();
    exec["exec"].as_object_mut().expect("exec").remove("binary");
    let mut conn = first("connect");
    conn["net"]["addr"] = "10.255.255.1".into();
    let mut write = events
        .iter()
        .find(|v| v["kind"] == "open" && v["file"]["access"] == "write")
        .cloned()
        .expect("a write recorded");
    write["file"]["path"] = "/etc/passwd".into();
    let mut rm = first("unlink");
    rm["file"]["path"] = "/work/notes.txt".into();
    let got = replay(&dir, &pol, &[exec, conn, write, rm]);
    let rules: Vec<(&str, &str)> = got
        .iter()
        .map(|d| {
            (
                d["rule"].as_str().unwrap_or(""),
                d["action"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            ("learner-exec", "kill"),
            ("learner-egress", "deny"),
            ("learner-writes", "kill"),
            ("learner-removals", "kill"),
        ],
        "{got:?}"
    );
    // Offline, by container name, from the same recording: the same
    // session, so the same policy (under another name).
    let pol2 = dir.join("pol2");
    let by_container = pol2.join("c.yaml");
    let rec = pol.join("learner.events.jsonl");
    let o = agentguard(&[
        "learn",
        "--from",
        rec.to_str().expect("utf-8"),
        "--container",
        &name,
        "--out",
        by_container.to_str().expect("utf-8"),
        "--strictness",
        "enforce",
    ]);
    assert!(o.status.success(), "learn --container: {}", text(&o));
    let p2 = std::fs::read_to_string(&by_container).expect("policy");
    assert_eq!(
        p2.lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
            .replace("c-", "learner-")
            .replace("name: \"c\"", "name: \"learner\""),
        policy.lines().skip(1).collect::<Vec<_>>().join("\n"),
        "learn by container differs from learn by agent"
    );
    let test = agentguard(&["policy", "test", pol2.to_str().expect("utf-8")]);
    assert!(test.status.success(), "policy test: {}", text(&test));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn learn_says_what_is_wrong_with_its_input() {
    let dir = std::env::temp_dir().join(format!("agtest-learn-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let ev = dir.join("ev.jsonl");
    std::fs::write(&ev, "not json\n").expect("write");
    let out_file = dir.join("p.yaml");
    let o = agentguard(&[
        "learn",
        "--from",
        ev.to_str().expect("utf-8"),
        "--agent",
        "nobody",
        "--out",
        out_file.to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("ev.jsonl:1: skipped"), "{t}");
    assert!(t.contains("no events of agent \"nobody\""), "{t}");
    assert!(!out_file.exists());
    let o = agentguard(&["learn", "--from", "x", "--out", "p.yaml"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--agent"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
