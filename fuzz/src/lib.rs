//! What the fuzz targets share: a scratch directory for the policy files
//! they write, the default policy pack (plus a Rego policy that applies
//! builtins to the event's strings), sample events, and the daemon's steps
//! after a policy loads or an event arrives, with the invariants checked
//! there (a broken invariant panics, which libFuzzer reports as a crash).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use agentguard::enforcement::kernel::{dns_key, net_entries};
use agentguard::event::Event;
use agentguard::policy::plan::{self, Backend};
use agentguard::policy::rego_input::{to_value, InputBuilder};
use agentguard::policy::{stream, LoadOptions, PolicySet};

/// The resolver the pack's tests use (`except: {dns_resolver: true}`).
const RESOLVER: &str = "10.0.0.2";

/// Fuzzing only: Rego builtins on strings that come from the event (paths,
/// argv, addresses, names, labels), and decision objects built from them.
const BUILTINS_REGO: &str = r#"# kinds: all
#
# Fuzzing only (fuzz/src/lib.rs): builtins on the event's untrusted strings.
package agentguard

import rego.v1

decision(rule, msg) := {"rule": rule, "action": "alert", "severity": "low", "message": msg}

decisions contains d if {
	glob.match("/home/*/.ssh/**", ["/"], input.file.path)
	d := decision("glob", input.file.path)
}

decisions contains d if {
	net.cidr_contains("10.0.0.0/8", input.net.addr)
	d := decision("cidr4", input.net.addr)
}

decisions contains d if {
	net.cidr_contains("fd00::/8", input.net.addr)
	d := decision("cidr6", sprintf("%s:%d", [input.net.addr, input.net.port]))
}

decisions contains d if {
	regex.match(`(^|/)\.env(\..*)?$`, input.exec.file.path)
	d := decision("regex", input.exec.file.path)
}

decisions contains d if {
	some a in input.exec.argv
	contains(lower(a), "curl")
	d := decision("argv", concat(" ", input.exec.argv))
}

decisions contains d if {
	parts := split(input.dns.name, ".")
	count(parts) > 2
	d := decision("dns", sprintf("%s has %d labels", [input.dns.name, count(parts)]))
}

decisions contains d if {
	endswith(input.net.domain, ".example.com")
	d := decision("domain", upper(input.net.domain))
}

decisions contains d if {
	img := input.identity.container.info.image
	startswith(img, "ghcr.io/")
	d := {
		"rule": input.comm,
		"action": object.get(input.identity.container.info.labels, "action", "alert"),
		"severity": "low",
		"message": trim_space(img),
	}
}

# Every field from the event: most of these are malformed decisions,
# which are counted, never fatal.
decisions contains d if {
	input.ret < 0
	d := {
		"rule": input.comm,
		"action": input.syscall,
		"severity": input.error,
		"message": input.comm,
		"kill_scope": input.comm,
		"taint": input.ret == -1,
	}
}
"#;

/// Fuzzing only: what the pack lacks, rules whose conditions take the
/// event's strings apart (`*.` domain suffixes, globs, argv).
const EXTRA_YAML: &str = r#"name: fuzz_extra
mode: audit
rules:
  - name: egress-suffixes
    kinds: [connect, send]
    when:
      dest: { cidrs: [0.0.0.0/0, "::/0"] }
      except:
        domains: ["*.example.com", "*.io", "*.b", api.example.org]
    action: alert
    severity: low
    message: "{comm} ({agent}) connected to {addr}:{port} of {container} ({image})"
  - name: dns-suffixes
    kinds: [connect]
    when:
      dest: { cidrs: [10.0.0.0/8] }
      except:
        domains: ["*.internal.example"]
    action: alert
    severity: low
    message: "{comm} {path} {argv}"
"#;

/// A directory of this process's own (under `TMPDIR`) for the files the
/// targets write; `cargo xtask fuzz` points `TMPDIR` into fuzz/target.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("agentguard-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the fuzz scratch directory");
        dir
    })
}

/// Load options as the daemon's (a DNS resolver from resolv.conf), except
/// that the files need not be root's: they are the fuzzer's.
pub fn options() -> LoadOptions {
    LoadOptions {
        dns_resolvers: vec![RESOLVER.parse().expect("resolver address")],
        trusted_only: false,
    }
}

/// The repository's policies/ plus [`BUILTINS_REGO`] and [`EXTRA_YAML`],
/// loaded once.
pub fn pack() -> &'static PolicySet {
    static SET: OnceLock<PolicySet> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let mut files = agentguard::policy::policy_files(&dir).expect("reading policies/");
        let extra = scratch().join("pack");
        std::fs::create_dir_all(&extra).expect("mkdir");
        let builtins = extra.join("fuzz_builtins.rego");
        std::fs::write(&builtins, BUILTINS_REGO).expect("writing the builtins policy");
        files.push(builtins);
        let yaml = extra.join("fuzz_extra.yaml");
        std::fs::write(&yaml, EXTRA_YAML).expect("writing the extra policy");
        files.push(yaml);
        PolicySet::load_files(&files, &options()).unwrap_or_else(|d| {
            let d: Vec<String> = d.iter().map(ToString::to_string).collect();
            panic!("the pack does not load:\n{}", d.join("\n"))
        })
    })
}

/// The sample events: the JSON seeds of the `rego` target
/// (fuzz/seeds/rego/*.json, one event each).
pub fn events() -> &'static [Event] {
    static EVENTS: OnceLock<Vec<Event>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/rego");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("reading fuzz/seeds/rego")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        let events: Vec<Event> = paths
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).expect("reading a sample event");
                serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: not an event: {e}", p.display()))
            })
            .collect();
        assert!(!events.is_empty(), "no sample events in {}", dir.display());
        events
    })
}

/// Writes `data` as the only policy file `name` of a directory and loads
/// the directory as the daemon does (`load_dir_with`); a set that loads is
/// planned for both backends, turned into kernel map entries and evaluated
/// on the sample events; the errors of one that doesn't are formatted as
/// `policy lint` prints them.
pub fn load_policy_text(name: &str, data: &[u8]) {
    let dir = scratch().join("policy");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(name), data).expect("writing the policy file");
    match PolicySet::load_dir_with(&dir, &options()) {
        Ok(set) => exercise_set(&set),
        Err(diags) => {
            assert!(!diags.is_empty(), "a failed load without a diagnostic");
            for d in &diags {
                let line = d.to_string();
                assert!(d.line >= 1 && d.column >= 1, "{line}");
            }
        }
    }
}

/// What the daemon does with a set that loaded: the kernel plan for both
/// backends, what streams, the map entries of each kernel rule; then the
/// sample events through it.
pub fn exercise_set(set: &PolicySet) {
    for backend in [Backend::Lsm, Backend::Tracepoint] {
        let p = plan::plan(set, backend);
        let _ = stream::stream_plan(set, Some((&p, backend)));
        for (slot, s) in p.slots.iter().enumerate() {
            let rule = &set.rules()[s.index];
            let slot = u32::try_from(slot).expect("slot");
            let _ = net_entries(slot, rule);
            for d in &rule.spec().when.except.domains {
                let _ = dns_key(slot, d);
            }
        }
    }
    let _ = stream::stream_plan(set, None);
    // Every loaded Rego policy runs on the VM (a policy only regorus's
    // tree interpreter could run is refused at load): a recursive function
    // ends in the VM's instruction limit, never in a stack overflow.
    let mut out = Vec::new();
    for ev in events() {
        set.evaluate(ev, &mut out);
    }
    for d in &out {
        serde_json::to_string(d).expect("a decision serializes");
    }
}

/// What happens to an event once it is an `Event`: its JSON line (what
/// `events`, the alert sinks and `replay` read) reads back as the same
/// line; its Rego input is the value of that JSON (built directly, and
/// through the identity cache); the pack judges it.
pub fn exercise_event(ev: &Event) {
    let json = serde_json::to_string(ev).expect("an event serializes");
    let back: Event = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("an event's JSON does not read back ({e}): {json}"));
    let again = serde_json::to_string(&back).expect("serializes");
    assert_eq!(again, json, "JSON round trip changed the event");

    let value = to_value(ev).expect("the Rego input of an event");
    let from_json = regorus::Value::from_json_str(&json).expect("regorus reads the event's JSON");
    assert_eq!(
        value, from_json,
        "Rego input differs from the JSON form: {json}"
    );
    let inputs = InputBuilder::default();
    for _ in 0..2 {
        let built = inputs.build(ev).expect("the cached Rego input of an event");
        assert_eq!(built, value, "cached Rego input differs: {json}");
    }

    let mut out = Vec::new();
    pack().evaluate(ev, &mut out);
    for d in &out {
        serde_json::to_string(d).expect("a decision serializes");
    }
}
