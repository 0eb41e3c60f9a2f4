//! Unit tests of the policy stage: format errors with locations, matching
//! semantics, Rego gating, reload.
//!
//! Size: tests only.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;
use crate::alert::{Action, KillScope, Mode, Severity};
use crate::event::Detail;

/// A scratch directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!(
            "agentguard-policy-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn pack_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// `text` as the one policy file of a scratch directory, loaded.
pub(crate) fn load_one(text: &str) -> Result<PolicySet, Vec<Diagnostic>> {
    let d = Dir::new("one");
    let f = d.write("p.yaml", text);
    PolicySet::load_files(&[f], &LoadOptions::default())
}

fn err_of(text: &str) -> Diagnostic {
    match load_one(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(mut d) => d.remove(0),
    }
}

fn agent_id() -> serde_json::Value {
    json!({
        "scope": "container",
        "container": {
            "id": "c0ffee",
            "info": {
                "id": "c0ffee", "name": "agent-1", "image": "ghcr.io/acme/agent:1.2",
                "runtime": "docker",
                "labels": {"agentguard.io/agent": "claude", "team": "infra"},
                "mounts": [
                    {"source": "/srv/p", "destination": "/workspace/", "read_only": false, "kind": "bind"},
                    {"source": "", "destination": "/scratch", "read_only": false, "kind": "tmpfs"}
                ],
                "pod": {"name": "p-1", "namespace": "agents-dev"}
            }
        },
        "agent": {"name": "claude", "source": "label"},
        "ancestry": [
            {"pid": 10, "exe": "/bin/sh", "argv": "sh"},
            {"pid": 9, "exe": "/usr/bin/curl", "argv": "curl"}
        ]
    })
}

fn event(kind: &str, detail: serde_json::Value, identity: Option<serde_json::Value>) -> Event {
    let mut v = json!({
        "ts_ns": 1, "kind": kind, "syscall": kind, "pid": 10, "tid": 10, "ppid": 9,
        "uid": 0, "gid": 0, "comm": "sh", "cgroup_id": 1, "ret": 0
    });
    let o = v.as_object_mut().unwrap();
    for (k, x) in detail.as_object().unwrap() {
        o.insert(k.clone(), x.clone());
    }
    if let Some(id) = identity {
        o.insert("identity".into(), id);
    }
    serde_json::from_value(v).unwrap()
}

fn file_ev(kind: &str, path: &str) -> Event {
    event(
        kind,
        json!({"file": {"path": path, "resolution": "absolute", "flags": 0, "access": "read"}}),
        Some(agent_id()),
    )
}

fn connect(addr: &str, port: u16) -> Event {
    event(
        "connect",
        json!({"net": {"family": "inet", "addr": addr, "port": port, "fd": 3}}),
        Some(agent_id()),
    )
}

fn exec_ev(path: &str, argv: &[&str]) -> Event {
    event(
        "exec",
        json!({"exec": {"file": {"path": path, "resolution": "absolute"}, "argv": argv}}),
        Some(agent_id()),
    )
}

fn rules_hit(set: &PolicySet, ev: &Event) -> Vec<String> {
    let mut out = Vec::new();
    set.evaluate(ev, &mut out);
    out.iter().map(|d| d.rule.to_string()).collect()
}

fn rule(kinds: &str, body: &str) -> String {
    format!(
        "rules:\n  - name: r\n    kinds: {kinds}\n{body}    action: alert\n    severity: low\n    message: m\n"
    )
}

#[test]
fn unknown_field_names_line_and_column() {
    let d = err_of("name: x\nrules:\n  - name: a\n    kinds: [open]\n    colour: red\n");
    assert_eq!((d.line, d.column), (5, 5), "{d}");
    assert!(d.message.contains("unknown field `colour`"), "{d}");
    let d = err_of("rules: []\nmode: enforce\nextra: 1\n");
    assert_eq!(d.line, 3, "{d}");
}

#[test]
fn yaml_syntax_error_names_line() {
    let d = err_of("rules:\n  - name: a\n    kinds: [open\n");
    assert!(d.line >= 3, "{d}");
    assert!(
        !d.message.contains(" at line "),
        "location not repeated: {d}"
    );
}

#[test]
fn bad_values_are_located() {
    let d = err_of(&rule(
        "[connect]",
        "    when:\n      dest: {cidrs: [10.0.0.1/8]}\n",
    ));
    assert_eq!(d.line, 5, "{d}");
    assert!(d.message.contains("host bits"), "{d}");
    let d = err_of(&rule(
        "[connect]",
        "    when:\n      dest: {cidrs: [10.0.0.0/33]}\n",
    ));
    assert!(d.message.contains("prefix"), "{d}");
    let d = err_of(&rule("[open]", "    when:\n      path: [\"/a/[b\"]\n"));
    assert_eq!(d.line, 5, "{d}");
    assert!(d.message.contains("bad glob"), "{d}");
    let d = err_of(&rule("[exec]", "    when:\n      argv: [\"(\"]\n"));
    assert!(d.message.contains("bad regex"), "{d}");
    let d = err_of(&rule(
        "[connect]",
        "    when:\n      dest: {cidrs: [0.0.0.0/0], ports: [\"9-1\"]}\n",
    ));
    assert!(d.message.contains("bad port"), "{d}");
    let d = err_of(&rule("[opn]", ""));
    assert_eq!(d.line, 3, "{d}");
    let d = err_of("rules:\n  - name: r\n    kinds: open\n    action: alert\n    severity: low\n    message: \"{bogus}\"\n");
    assert_eq!(d.line, 6, "{d}");
    assert!(d.message.contains("unknown placeholder {bogus}"), "{d}");
    let d = err_of(&rule("open", "    when:\n      path_prefix: relative/x\n"));
    assert!(d.message.contains("absolute"), "{d}");
}

#[test]
fn semantic_errors_point_at_the_rule() {
    let text = "rules:\n  - name: ok\n    kinds: open\n    action: alert\n    severity: low\n    message: m\n  - name: bad\n    kinds: open\n    action: alert\n    kill_scope: container\n    severity: low\n    message: m\n";
    let d = err_of(text);
    assert_eq!(d.line, 7, "{d}");
    assert!(d.message.contains("kill_scope"), "{d}");
    let d = err_of(&rule(
        "[open, connect]",
        "    when:\n      path: [/etc/**]\n",
    ));
    assert!(
        d.message.contains("no condition applies to kind connect"),
        "{d}"
    );
    let dup = "rules:\n  - name: a\n    kinds: open\n    action: alert\n    severity: low\n    message: m\n  - name: a\n    kinds: exec\n    action: alert\n    severity: low\n    message: m\n";
    assert!(err_of(dup).message.contains("duplicate rule name"));
}

#[test]
fn every_file_error_is_reported_and_policy_names_are_unique() {
    let d = Dir::new("multi");
    d.write("a.yaml", "rules: []\nbogus: 1\n");
    d.write("b.yaml", "rules:\n - name: x\n");
    d.write("c.yaml", "name: same\nrules: []\n");
    d.write("d.yaml", "name: same\nrules: []\n");
    d.write("notes.txt", "not a policy");
    d.write("e_test.yaml", "cases: []\n");
    let errs = PolicySet::load_dir(&d.0).unwrap_err();
    let files: Vec<String> = errs
        .iter()
        .map(|e| e.file.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["a.yaml", "b.yaml", "d.yaml"], "{errs:?}");
    assert!(errs[2].message.contains("also used by"));
}

#[test]
fn cidr_semantics() {
    let c = spec::Cidr::parse("10.0.0.0/8").unwrap();
    assert!(c.contains("10.1.2.3".parse().unwrap()));
    assert!(!c.contains("11.0.0.1".parse().unwrap()));
    assert!(c.contains("::ffff:10.9.9.9".parse().unwrap()), "v4-mapped");
    let all = spec::Cidr::parse("0.0.0.0/0").unwrap();
    assert!(all.contains("1.2.3.4".parse().unwrap()));
    assert!(!all.contains("2001:db8::1".parse().unwrap()));
    let v6 = spec::Cidr::parse("2001:db8::/32").unwrap();
    assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
    assert!(spec::Cidr::parse("::/0")
        .unwrap()
        .contains("::1".parse().unwrap()));
    assert_eq!(spec::Cidr::parse("1.2.3.4").unwrap().prefix(), 32);
    assert!(spec::Cidr::parse("1.2.3.4/24").is_err());
    assert!(spec::Cidr::parse("nope").is_err());
}

#[test]
fn selectors() {
    let yaml = r#"
rules:
  - name: by-name
    kinds: open
    match: { agent: [codex, claude] }
    action: alert
    severity: low
    message: m
  - name: other-agent
    kinds: open
    match: { agent: codex }
    action: alert
    severity: low
    message: m
  - name: no-agent
    kinds: open
    match: { agent: none }
    action: alert
    severity: low
    message: m
  - name: labels-image-ns
    kinds: open
    match:
      labels: { team: "inf*", agentguard.io/agent: "*" }
      image: "ghcr.io/acme/*"
      namespace: "agents-*"
      scope: container
    action: alert
    severity: low
    message: m
  - name: wrong-image
    kinds: open
    match: { image: "docker.io/*" }
    action: alert
    severity: low
    message: m
  - name: host-only
    kinds: open
    match: { scope: host }
    action: alert
    severity: low
    message: m
  - name: exe-comm-ancestor
    kinds: open
    match: { exe: sh, comm: "s?", ancestor: "/usr/bin/curl" }
    action: alert
    severity: low
    message: m
  - name: self-is-not-ancestor
    kinds: open
    match: { ancestor: sh }
    action: alert
    severity: low
    message: m
"#;
    let set = load_one(yaml).unwrap();
    let ev = file_ev("open", "/etc/hosts");
    assert_eq!(
        rules_hit(&set, &ev),
        ["by-name", "labels-image-ns", "exe-comm-ancestor"]
    );
    let mut host = ev.clone();
    host.identity = None;
    assert_eq!(rules_hit(&set, &host), ["no-agent", "host-only"]);
}

#[test]
fn file_conditions() {
    let yaml = r#"
rules:
  - name: mounts
    kinds: [unlink, rmdir, rename, truncate]
    when: { under_mount: true }
    action: kill
    kill_scope: container
    severity: critical
    message: "{comm} {path} -> {to} in {container}"
  - name: prefix-write
    kinds: open
    when: { path_prefix: /etc, access: [write, read_write], result: success }
    action: deny
    severity: high
    message: m
"#;
    let set = load_one(yaml).unwrap();
    assert_eq!(
        rules_hit(&set, &file_ev("unlink", "/workspace/a")),
        ["mounts"]
    );
    assert_eq!(
        rules_hit(&set, &file_ev("truncate", "/workspace")),
        ["mounts"]
    );
    assert!(rules_hit(&set, &file_ev("unlink", "/workspacex/a")).is_empty());
    assert!(
        rules_hit(&set, &file_ev("unlink", "/scratch/a")).is_empty(),
        "tmpfs"
    );
    assert!(
        rules_hit(&set, &file_ev("unlink", "/usr/a")).is_empty(),
        "image layer"
    );
    let rename = |from: &str, to: &str| {
        event(
            "rename",
            json!({"rename": {"from": {"path": from, "resolution": "absolute"}, "to": {"path": to, "resolution": "absolute"}}}),
            Some(agent_id()),
        )
    };
    let mut out = Vec::new();
    set.evaluate(&rename("/workspace/db", "/tmp/db"), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].action, Action::Kill);
    assert_eq!(out[0].kill_scope, KillScope::Container);
    assert_eq!(out[0].severity, Severity::Critical);
    assert_eq!(out[0].message, "sh /workspace/db -> /tmp/db in agent-1");
    assert_eq!(&*out[0].policy, "p");
    assert!(rules_hit(&set, &rename("/workspace/.x.swp", "/workspace/x")).is_empty());
    assert!(rules_hit(&set, &rename("/tmp/x", "/workspace/x")).is_empty());

    let mut w = event(
        "open",
        json!({"file": {"path": "/etc/passwd", "resolution": "absolute", "flags": 1, "access": "write"}}),
        None,
    );
    assert_eq!(rules_hit(&set, &w), ["prefix-write"]);
    w.ret = -13;
    assert!(rules_hit(&set, &w).is_empty(), "result: success");
    assert!(
        rules_hit(&set, &file_ev("open", "/etc/passwd")).is_empty(),
        "read"
    );
    assert!(rules_hit(&set, &file_ev("open", "/etcetera")).is_empty());
}

#[test]
fn exec_conditions() {
    let yaml = r#"
rules:
  - name: argv
    kinds: exec
    when: { exec: [sh, "/usr/local/bin/*"], argv: '^--danger' }
    action: alert
    severity: low
    message: "{argv}"
  - name: cmdline
    kinds: exec
    when:
      cmdline: 'git push .*--force'
      except: { exec: /opt/ok/** }
    action: alert
    severity: low
    message: m
"#;
    let set = load_one(yaml).unwrap();
    assert_eq!(
        rules_hit(&set, &exec_ev("/bin/sh", &["sh", "--danger"])),
        ["argv"]
    );
    assert_eq!(
        rules_hit(&set, &exec_ev("/usr/local/bin/x", &["x", "--danger=1"])),
        ["argv"]
    );
    assert!(rules_hit(&set, &exec_ev("/usr/local/bin/sub/x", &["x", "--danger"])).is_empty());
    assert!(rules_hit(&set, &exec_ev("/bin/sh", &["sh", "-c", "x --danger"])).is_empty());
    assert_eq!(
        rules_hit(
            &set,
            &exec_ev("/usr/bin/git", &["git", "push", "origin", "--force"])
        ),
        ["cmdline"]
    );
    assert!(rules_hit(&set, &exec_ev("/opt/ok/git", &["git", "push", "--force"])).is_empty());
    assert!(rules_hit(&set, &exec_ev("/usr/bin/git", &["git", "push"])).is_empty());
    // The binary loaded counts too: busybox runs its applets through
    // /proc/self/exe, and a symlink can carry any name.
    let mut ev = exec_ev("/proc/self/exe", &["x", "--danger"]);
    assert!(rules_hit(&set, &ev).is_empty());
    if let Detail::Exec(x) = &mut ev.detail {
        x.binary = Some("/usr/local/bin/real".into());
    }
    assert_eq!(rules_hit(&set, &ev), ["argv"]);
}

#[test]
fn network_conditions_and_exceptions() {
    let yaml = r#"
dns_resolvers: [192.168.1.1]
rules:
  - name: egress
    kinds: [connect, send]
    when:
      dest: { cidrs: [0.0.0.0/0, "::/0"], ports: [80, "8000-8999", 443] }
      except: { loopback: true, dns_resolver: true, cidrs: [10.0.0.0/8], ports: [8443] }
    action: deny
    severity: high
    message: "{addr}:{port} {target}"
  - name: sock
    kinds: connect
    when: { unix_path: ["/var/run/*.sock", "@abstract*"] }
    action: deny
    severity: high
    message: "{target}"
"#;
    let set = load_one(yaml).unwrap();
    let mut out = Vec::new();
    set.evaluate(&connect("1.2.3.4", 443), &mut out);
    assert_eq!(out[0].message, "1.2.3.4:443 1.2.3.4:443");
    assert_eq!(rules_hit(&set, &connect("1.2.3.4", 8080)), ["egress"]);
    assert!(
        rules_hit(&set, &connect("1.2.3.4", 22)).is_empty(),
        "port not listed"
    );
    assert!(
        rules_hit(&set, &connect("127.0.0.53", 80)).is_empty(),
        "loopback"
    );
    assert!(
        rules_hit(&set, &connect("10.2.3.4", 80)).is_empty(),
        "except cidr"
    );
    // The resolver is exempt on port 53 only.
    assert_eq!(rules_hit(&set, &connect("192.168.1.1", 443)), ["egress"]);
    assert_eq!(rules_hit(&set, &connect("2001:db8::1", 443)), ["egress"]);
    assert!(rules_hit(&set, &connect("::1", 443)).is_empty());
    let unix = |p: &str| {
        event(
            "connect",
            json!({"net": {"family": "unix", "unix_path": p, "fd": 3}}),
            None,
        )
    };
    assert_eq!(rules_hit(&set, &unix("/var/run/docker.sock")), ["sock"]);
    assert_eq!(rules_hit(&set, &unix("@abstract-x")), ["sock"]);
    assert!(rules_hit(&set, &unix("/var/run/a/b.sock")).is_empty());
}

#[test]
fn dns_exception_uses_configured_resolvers_on_port_53() {
    let yaml = r#"
rules:
  - name: egress
    kinds: [send]
    when:
      dest: { cidrs: [0.0.0.0/0] }
      except: { dns_resolver: true }
    action: deny
    severity: high
    message: m
"#;
    let d = Dir::new("dns");
    let f = d.write("p.yaml", yaml);
    let send = |addr: &str, port: u16| {
        event(
            "send",
            json!({"net": {"family": "inet", "addr": addr, "port": port, "fd": 3, "len": 30}}),
            None,
        )
    };
    let none = PolicySet::load_files(std::slice::from_ref(&f), &LoadOptions::default()).unwrap();
    assert_eq!(rules_hit(&none, &send("9.9.9.9", 53)), ["egress"]);
    let opts = LoadOptions {
        dns_resolvers: vec!["9.9.9.9".parse().unwrap()],
        ..LoadOptions::default()
    };
    let set = PolicySet::load_files(&[f], &opts).unwrap();
    assert!(rules_hit(&set, &send("9.9.9.9", 53)).is_empty());
    assert_eq!(rules_hit(&set, &send("9.9.9.9", 54)), ["egress"]);
    assert_eq!(rules_hit(&set, &send("8.8.8.8", 53)), ["egress"]);
    assert_eq!(set.rules()[0].dns_resolvers().len(), 1);
}

#[test]
fn resolv_conf_parsing() {
    let r = parse_resolv_conf(
        "# x\nnameserver 10.0.0.2\nsearch lan\nnameserver fe80::1%eth0\nnameserver bogus\n",
    );
    assert_eq!(
        r,
        [
            "10.0.0.2".parse::<IpAddr>().unwrap(),
            "fe80::1".parse().unwrap()
        ]
    );
}

#[test]
fn rules_only_see_their_kinds_and_vec_is_reused() {
    let set = load_one(&rule("[exec]", "")).unwrap();
    let mut out = Vec::with_capacity(4);
    set.evaluate(&file_ev("open", "/x"), &mut out);
    assert!(out.is_empty());
    assert_eq!(set.rules_for(Kind::Open).count(), 0);
    assert_eq!(set.rules_for(Kind::Exec).count(), 1);
    set.evaluate(&exec_ev("/bin/true", &["true"]), &mut out);
    set.evaluate(&exec_ev("/bin/true", &["true"]), &mut out);
    assert_eq!(out.len(), 2, "appends");
}

#[test]
fn audit_mode_is_carried() {
    let set = load_one(&format!("mode: audit\n{}", rule("open", ""))).unwrap();
    let mut out = Vec::new();
    set.evaluate(&file_ev("open", "/x"), &mut out);
    assert_eq!(out[0].mode, Mode::Audit);
}

const REGO_ALL: &str = r#"# kinds: exec
# mode: audit
package agentguard

import rego.v1

decisions contains {"rule": "any-exec", "action": "kill", "kill_scope": "container", "severity": "low", "message": input.comm} if {
	input.kind == "exec"
}

decisions contains {"rule": "broken", "action": "explode", "severity": "low", "message": "x"} if {
	input.comm == "boom"
}
"#;

#[test]
fn rego_policy_gated_by_kinds() {
    let d = Dir::new("rego");
    d.write("r.rego", REGO_ALL);
    let set = PolicySet::load_dir(&d.0).unwrap();
    assert_eq!(set.rego_policies()[0].kinds(), [Kind::Exec]);
    assert_eq!(set.rego_for(Kind::Open).count(), 0);
    let mut out = Vec::new();
    set.evaluate(&file_ev("open", "/x"), &mut out);
    assert!(out.is_empty());
    let mut ev = exec_ev("/bin/x", &["x"]);
    set.evaluate(&ev, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(&*out[0].rule, "any-exec");
    assert_eq!(&*out[0].policy, "r");
    assert_eq!(out[0].action, Action::Kill);
    assert_eq!(out[0].kill_scope, KillScope::Container);
    assert_eq!(out[0].mode, Mode::Audit);
    assert_eq!(out[0].message, "sh");
    assert_eq!(set.rego_errors(), 0);
    ev.comm = "boom".into();
    out.clear();
    set.evaluate(&ev, &mut out);
    assert_eq!(out.len(), 1, "the malformed decision is dropped");
    assert_eq!(set.rego_errors(), 1);
}

#[test]
fn rego_load_errors() {
    let d = Dir::new("regoerr");
    let f = d.write("x.rego", "package agentguard\n");
    let e = PolicySet::load_files(&[f], &LoadOptions::default()).unwrap_err();
    assert!(e[0].message.contains("# kinds:"), "{e:?}");
    let f = d.write("y.rego", "# kinds: exec, opne\npackage agentguard\n");
    let e = PolicySet::load_files(&[f], &LoadOptions::default()).unwrap_err();
    assert_eq!((e[0].line, e[0].column), (1, 16), "{e:?}");
    let f = d.write("z.rego", "# kinds: exec\npackage agentguard\nimport rego.v1\n\ndecisions contains x if {\n  x := \n}\n");
    let e = PolicySet::load_files(&[f], &LoadOptions::default()).unwrap_err();
    assert!(e[0].line >= 6, "{e:?}");
    let f = d.write(
        "w.rego",
        "# kinds: exec\npackage other\nimport rego.v1\ndecisions := []\n",
    );
    let e = PolicySet::load_files(&[f], &LoadOptions::default()).unwrap_err();
    assert_eq!(e[0].line, 2, "{e:?}");
}

#[test]
fn default_pack_loads_and_lists_kernel_rules() {
    let set = PolicySet::load_dir(&pack_dir()).unwrap();
    let names = |it: &mut dyn Iterator<Item = &Rule>| -> Vec<String> {
        it.map(|r| r.name().to_owned()).collect()
    };
    let deny_kill = [Action::Deny, Action::Kill];
    assert_eq!(
        names(&mut set.network_rules(&deny_kill)),
        ["agent-egress", "cloud-metadata"]
    );
    let egress = set.network_rules(&[Action::Deny]).next().unwrap();
    let dest = egress.spec().when.dest.as_ref().unwrap();
    assert_eq!(dest.cidrs.len(), 2);
    assert!(egress.spec().when.except.loopback);
    assert_eq!(egress.spec().selector.agent, Some(spec::AgentSel::Any));
    assert_eq!(names(&mut set.mount_rules(&deny_kill)), ["volume-removal"]);
    assert_eq!(
        names(&mut set.exec_rules(&[Action::Alert])),
        ["exec-from-temp"]
    );
    assert_eq!(set.rego_policies().len(), 1);
}

#[test]
fn default_pack_tests_pass_and_a_wrong_expectation_fails() {
    let report = suite::run(&pack_dir()).unwrap();
    assert_eq!(report.failed, 0, "{}", report.text);
    assert!(report.passed >= 40);

    // A copy of the pack with one expectation turned wrong.
    let d = Dir::new("suite");
    for f in policy_files(&pack_dir()).unwrap() {
        std::fs::copy(&f, d.0.join(f.file_name().unwrap())).unwrap();
    }
    let tests = std::fs::read_to_string(pack_dir().join("tests/network.yaml")).unwrap();
    let wrong = tests.replacen(
        "expect: [{ rule: agent-egress, action: deny }]",
        "expect: [{ rule: agent-egress, action: alert }]",
        1,
    );
    assert_ne!(tests, wrong);
    d.write("net_test.yaml", &wrong);
    let report = suite::run(&d.0).unwrap();
    assert_eq!(report.failed, 1, "{}", report.text);
    assert!(
        report.text.contains("- alert agent-egress"),
        "{}",
        report.text
    );
    assert!(
        report.text.contains("+ deny agent-egress"),
        "{}",
        report.text
    );
}

#[test]
fn reloader_keeps_last_good_set() {
    let d = Dir::new("reload");
    d.write("p.yaml", &rule("open", ""));
    let mut r = Reloader::new(&d.0, LoadOptions::default()).unwrap();
    assert!(r.poll(&mut |_| Ok(())).is_none(), "unchanged");
    let first = r.current();
    let first_hash = r.hash().to_owned();
    assert_eq!(first_hash.len(), 64, "a SHA-256");
    assert_eq!(first.rules().len(), 1);

    d.write(
        "p.yaml",
        "rules:\n  - name: r\n    kinds: open\n    typo: 1\n",
    );
    let refused = r.poll(&mut |_| Ok(())).expect("changed");
    let errs = refused.result.unwrap_err();
    assert_eq!(errs[0].line, 4);
    // The refused attempt is on the record, and nothing changed in force.
    assert!(!refused.audit.applied);
    assert_eq!(refused.audit.old_hash, first_hash);
    assert_ne!(refused.audit.new_hash, first_hash);
    assert_eq!(refused.audit.files_changed, ["p.yaml"]);
    assert!(refused
        .audit
        .error
        .as_deref()
        .is_some_and(|e| e.contains("typo")));
    assert_eq!(r.hash(), first_hash);
    assert!(
        std::sync::Arc::ptr_eq(&first, &r.current()),
        "last good set kept"
    );
    assert!(
        r.poll(&mut |_| Ok(())).is_none(),
        "a broken change is reported once"
    );
    assert!(r.reload().result.is_err(), "explicit reload still fails");
    assert_eq!(r.current().rules().len(), 1);

    // A set the daemon's own check refuses (strict) stays out of force.
    d.write("q.yaml", &rule("exec", "").replace("name: r", "name: s"));
    d.write("p.yaml", &rule("open", ""));
    let vetoed = r
        .poll(&mut |_| {
            Err(vec![Diagnostic::new(
                Path::new("strict"),
                0,
                0,
                "no".into(),
            )])
        })
        .expect("changed");
    assert!(vetoed.result.is_err() && !vetoed.audit.applied);
    assert_eq!(r.current().rules().len(), 1);
    assert_eq!(r.hash(), first_hash);

    let applied = r.reload();
    let set = applied.result.unwrap();
    assert_eq!(set.rules().len(), 2);
    assert!(std::sync::Arc::ptr_eq(&set, &r.current()));
    // Compared with the last set in force, not with the refused attempt.
    let a = applied.audit;
    assert!(a.applied);
    assert_eq!(a.old_hash, first_hash);
    assert_eq!(a.new_hash, r.hash());
    assert_ne!(a.new_hash, first_hash);
    assert_eq!(a.files_added, ["q.yaml"]);
    assert!(
        a.files_changed.is_empty() && a.files_removed.is_empty(),
        "{a:?}"
    );
    assert_eq!(a.rules_added.len(), 1, "{a:?}");
    assert!(a.rules_added[0].ends_with("/s"), "{a:?}");
    assert!(a.rules_removed.is_empty());

    std::fs::remove_file(d.0.join("q.yaml")).unwrap();
    let a = r.poll(&mut |_| Ok(())).expect("changed").audit;
    assert_eq!(a.files_removed, ["q.yaml"]);
    assert_eq!(a.rules_removed.len(), 1);
    assert_eq!(r.hash(), first_hash, "same content, same hash");
}

#[test]
fn rego_input_equals_the_json_form() {
    let builder = rego_input::InputBuilder::default();
    let mut failed = event(
        "open",
        json!({"error": "ENOENT", "file": {"path": "/a/b", "raw": "b", "resolution": "cwd", "truncated": true, "flags": 65, "access": "write", "flag_names": ["O_CREAT"], "mode": 420}}),
        Some(agent_id()),
    );
    failed.ret = -2;
    let events = [
        failed,
        file_ev("unlink", "/workspace/x"),
        exec_ev("/bin/sh", &["sh", "-c", "echo \"hi\" ü"]),
        connect("::ffff:1.2.3.4", 443),
        event(
            "rename",
            json!({"rename": {"from": {"path": "/a", "resolution": "absolute"}, "to": {"path": "/b", "resolution": "dirfd"}, "flags": 1}}),
            None,
        ),
        event(
            "fork",
            json!({"fork": {"child_pid": 11, "clone_flags": 17}}),
            None,
        ),
        event("exit", json!({"exit": {"signal": 9}}), Some(agent_id())),
        event("io_uring_setup", json!({"io_uring": {"fd": 4}}), None),
        event(
            "send",
            json!({"net": {"family": "unix", "unix_path": "@x", "fd": 3, "len": 5, "addr_unreadable": true}}),
            None,
        ),
    ];
    for ev in &events {
        let want = regorus::Value::from_json_str(&serde_json::to_string(ev).unwrap()).unwrap();
        // Twice: the second build takes the container metadata from the cache.
        for _ in 0..2 {
            let got = builder.build(ev).unwrap();
            assert_eq!(got, want, "{}", serde_json::to_string(ev).unwrap());
        }
        assert_eq!(rego::input_for(ev).unwrap(), want);
    }
}

#[test]
fn domain_patterns_parse_and_match() {
    use crate::policy::spec::DomainPattern;
    let exact = DomainPattern::parse("API.Example.com.").expect("exact");
    assert!(exact.matches("api.example.com"));
    assert!(exact.matches("API.EXAMPLE.COM."));
    assert!(!exact.matches("x.api.example.com"));
    assert!(!exact.matches("example.com"));
    let suffix = DomainPattern::parse("*.npmjs.org").expect("suffix");
    assert!(suffix.matches("registry.npmjs.org"));
    assert!(suffix.matches("a.b.npmjs.org"));
    assert!(!suffix.matches("npmjs.org"));
    assert!(!suffix.matches("evilnpmjs.org"));
    for bad in [
        "",
        "*",
        "a..b",
        "*.",
        "a.*.b",
        "exa mple.com",
        "ex%ample.com",
    ] {
        assert!(DomainPattern::parse(bad).is_err(), "{bad:?}");
    }
    assert!(DomainPattern::parse(&"a".repeat(252)).is_err());
}

#[test]
fn domains_need_a_network_rule_with_dest() {
    let e = err_of(
        "rules:\n  - name: r\n    kinds: [open]\n    match: { agent: any }\n    when: { path: [/x], except: { domains: [a.example] } }\n    action: alert\n    severity: low\n    message: m\n",
    );
    assert!(e.message.contains("except.domains"), "{e}");
}

/// The name a DNS answer gave a connect's address is in the Rego input
/// (`input.net.domain`), and a YAML rule's `except.domains` sees it too.
#[test]
fn the_resolved_domain_reaches_rego_and_yaml_rules() {
    let d = Dir::new("regodomain");
    d.write(
        "r.rego",
        "# kinds: connect\npackage agentguard\nimport rego.v1\n\ndecisions contains {\"rule\": \"by-name\", \"action\": \"alert\", \"severity\": \"low\", \"message\": input.net.domain} if {\n\tendswith(input.net.domain, \".attacker.example\")\n}\n",
    );
    d.write(
        "n.yaml",
        "rules:\n  - name: egress\n    kinds: [connect]\n    match: { agent: any }\n    when:\n      dest: { cidrs: [0.0.0.0/0] }\n      except: { domains: [\"*.example.com\"] }\n    action: deny\n    severity: high\n    message: m\n",
    );
    let set = PolicySet::load_dir(&d.0).unwrap();
    let named = |domain: Option<&str>| {
        let mut ev = connect("203.0.113.9", 443);
        if let Detail::Net(n) = &mut ev.detail {
            n.domain = domain.map(str::to_owned);
        }
        let mut out = Vec::new();
        set.evaluate(&ev, &mut out);
        out.iter().map(|d| d.rule.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(named(Some("api.example.com")), Vec::<String>::new());
    assert_eq!(named(Some("x.attacker.example")), ["egress", "by-name"]);
    assert_eq!(named(None), ["egress"]);
    assert_eq!(set.rego_errors(), 0);
}
