//! Policy unit tests (`agentguard policy test DIR`).
//!
//! YAML test files (`DIR/tests/**/*.yaml` and `DIR/*_test.yaml`) hold cases:
//! an event (the JSON shape of `agentguard events`, identity included) and
//! the decisions expected from the whole pack of DIR. Rego test files
//! (`*_test.rego` in DIR or DIR/tests/) run their `test_*` rules together
//! with the policy of the same stem (`foo_test.rego` → `foo.rego`).
//! Format: docs/policy.md.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value as Json;

use super::{locate_name, rego, yaml_diag, Diagnostic, LoadOptions, PolicySet};
use crate::alert::{Action, Decision, Severity};
use crate::event::Event;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// Load options for this file's cases (the daemon's settings).
    #[serde(default)]
    options: TestOptions,
    /// Fields merged into every case's event (the case's own win).
    #[serde(default)]
    base: Option<Json>,
    /// Named identities a case can refer to.
    #[serde(default)]
    identities: BTreeMap<String, Json>,
    cases: Vec<Case>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestOptions {
    #[serde(default)]
    dns_resolvers: Vec<std::net::IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// A name from `identities`.
    #[serde(default)]
    identity: Option<String>,
    event: Json,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Expect {
    /// `none`
    Word(String),
    List(Vec<Expected>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    rule: String,
    action: Action,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    severity: Option<Severity>,
    /// Exact rendered message, when given.
    #[serde(default)]
    message: Option<String>,
    /// Whether the match takes the subject's network away, when given.
    #[serde(default)]
    taint: Option<bool>,
}

impl Expected {
    fn hits(&self, d: &Decision) -> bool {
        *d.rule == *self.rule
            && d.action == self.action
            && self.policy.as_deref().is_none_or(|p| *d.policy == *p)
            && self.severity.is_none_or(|s| d.severity == s)
            && self.message.as_deref().is_none_or(|m| d.message == m)
            && self.taint.is_none_or(|t| d.taint == t)
    }

    fn show(&self) -> String {
        let mut s = format!("{} {}", self.action.as_str(), self.rule);
        if let Some(p) = &self.policy {
            let _ = write!(s, " (policy {p})");
        }
        if let Some(v) = self.severity {
            let _ = write!(s, " severity={}", v.as_str());
        }
        if let Some(m) = &self.message {
            let _ = write!(s, " message={m:?}");
        }
        s
    }
}

fn show_decision(d: &Decision) -> String {
    format!(
        "{} {} (policy {}) severity={} message={:?}",
        d.action.as_str(),
        d.rule,
        d.policy,
        d.severity.as_str(),
        d.message
    )
}

/// Outcome of a test run.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    /// Human-readable failures and errors, in order.
    pub text: String,
}

impl Report {
    fn fail(&mut self, what: &str, body: &str) {
        self.failed += 1;
        let _ = writeln!(self.text, "FAIL {what}");
        for l in body.lines() {
            let _ = writeln!(self.text, "    {l}");
        }
    }
}

/// `a` merged into `b`: objects key by key, anything else replaced.
fn merge(base: &Json, over: &Json) -> Json {
    match (base, over) {
        (Json::Object(b), Json::Object(o)) => {
            let mut out = b.clone();
            for (k, v) in o {
                let merged = match out.get(k) {
                    Some(bv) => merge(bv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Json::Object(out)
        }
        (_, o) => o.clone(),
    }
}

fn test_files(dir: &Path) -> std::io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut yaml, mut rego) = (Vec::new(), Vec::new());
    let mut visit = |p: PathBuf, in_tests: bool| {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        match p.extension().and_then(|s| s.to_str()) {
            Some("yaml" | "yml") if in_tests || stem.ends_with("_test") => yaml.push(p),
            Some("rego") if stem.ends_with("_test") => rego.push(p),
            _ => {}
        }
    };
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_file() {
            visit(p, false);
        }
    }
    let tests = dir.join("tests");
    if tests.is_dir() {
        let mut stack = vec![tests];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d)? {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.is_file() {
                    visit(p, true);
                }
            }
        }
    }
    yaml.sort();
    rego.sort();
    Ok((yaml, rego))
}

/// Runs every test of `dir` against the policies of `dir`.
pub fn run(dir: &Path) -> Result<Report, Vec<Diagnostic>> {
    let (yaml, rego_tests) = test_files(dir)
        .map_err(|e| vec![Diagnostic::new(dir, 1, 1, format!("reading tests: {e}"))])?;
    let mut report = Report::default();
    // Sets per load options: most files share the default.
    let mut sets: HashMap<LoadOptions, PolicySet> = HashMap::new();
    for file in &yaml {
        run_yaml(dir, file, &mut sets, &mut report)?;
    }
    for file in &rego_tests {
        run_rego(dir, file, &mut report);
    }
    if yaml.is_empty() && rego_tests.is_empty() {
        let _ = writeln!(report.text, "no tests found in {}", dir.display());
    }
    Ok(report)
}

fn run_yaml(
    dir: &Path,
    file: &Path,
    sets: &mut HashMap<LoadOptions, PolicySet>,
    report: &mut Report,
) -> Result<(), Vec<Diagnostic>> {
    let src = std::fs::read_to_string(file)
        .map_err(|e| vec![Diagnostic::new(file, 1, 1, format!("reading: {e}"))])?;
    let tf: TestFile = serde_norway::from_str(&src).map_err(|e| vec![yaml_diag(file, &src, &e)])?;
    let opts = LoadOptions {
        dns_resolvers: tf.options.dns_resolvers.clone(),
        ..LoadOptions::default()
    };
    if !sets.contains_key(&opts) {
        let set = PolicySet::load_dir_with(dir, &opts)?;
        sets.insert(opts.clone(), set);
    }
    let Some(set) = sets.get(&opts) else {
        return Ok(());
    };
    let mut got = Vec::new();
    for case in &tf.cases {
        let (line, _) = locate_name(&src, &case.name);
        let what = format!("{}:{line}: {}", file.display(), case.name);
        // base, then the named identity, then the case's own fields (which
        // may override parts of the identity, e.g. its ancestry).
        let mut ev = tf
            .base
            .clone()
            .unwrap_or_else(|| Json::Object(Default::default()));
        if let Some(name) = &case.identity {
            let Some(id) = tf.identities.get(name) else {
                report.fail(&what, &format!("unknown identity {name:?}"));
                continue;
            };
            if let Json::Object(o) = &mut ev {
                o.insert("identity".into(), id.clone());
            }
        }
        let ev = merge(&ev, &case.event);
        let ev: Event = match serde_json::from_value(ev) {
            Ok(e) => e,
            Err(e) => {
                report.fail(&what, &format!("bad event: {e}"));
                continue;
            }
        };
        let expected: &[Expected] = match &case.expect {
            Expect::Word(w) if w == "none" => &[],
            Expect::Word(w) => {
                report.fail(
                    &what,
                    &format!("bad expect {w:?}: `none` or a list of {{rule, action}}"),
                );
                continue;
            }
            Expect::List(l) => l,
        };
        got.clear();
        set.evaluate(&ev, &mut got);
        // Pair each expectation with a distinct decision; leftovers on
        // either side are the diff.
        let mut used = vec![false; got.len()];
        let mut missing = Vec::new();
        for x in expected {
            match (0..got.len()).find(|i| !used[*i] && x.hits(&got[*i])) {
                Some(i) => used[i] = true,
                None => missing.push(x),
            }
        }
        let extra: Vec<&Decision> = got
            .iter()
            .zip(&used)
            .filter(|(_, u)| !**u)
            .map(|(d, _)| d)
            .collect();
        if missing.is_empty() && extra.is_empty() {
            report.passed += 1;
            continue;
        }
        let mut body = String::from("--- expected\n+++ got\n");
        if expected.is_empty() {
            body.push_str("- (no decision)\n");
        }
        for x in &missing {
            let _ = writeln!(body, "- {}", x.show());
        }
        for (d, u) in got.iter().zip(&used) {
            if *u {
                let _ = writeln!(body, "  {}", show_decision(d));
            }
        }
        for d in &extra {
            let _ = writeln!(body, "+ {}", show_decision(d));
        }
        if got.is_empty() {
            body.push_str("+ (no decision)\n");
        }
        report.fail(&what, &body);
    }
    Ok(())
}

fn run_rego(dir: &Path, file: &Path, report: &mut Report) {
    let src = match std::fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) => {
            report.fail(&file.display().to_string(), &format!("reading: {e}"));
            return;
        }
    };
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.strip_suffix("_test"))
        .unwrap_or("");
    let policy = dir.join(format!("{stem}.rego"));
    let policy_src = if policy.is_file() {
        match std::fs::read_to_string(&policy) {
            Ok(s) => Some(s),
            Err(e) => {
                report.fail(&policy.display().to_string(), &format!("reading: {e}"));
                return;
            }
        }
    } else {
        None
    };
    let mut files: Vec<(&Path, &str)> = Vec::new();
    if let Some(p) = &policy_src {
        files.push((&policy, p));
    }
    files.push((file, &src));
    let mut engine = match rego::engine_for(&files) {
        Ok(e) => e,
        Err(d) => {
            let body: Vec<String> = d.iter().map(ToString::to_string).collect();
            report.fail(&file.display().to_string(), &body.join("\n"));
            return;
        }
    };
    let package = src
        .lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .map(|p| p.trim().to_owned())
        .unwrap_or_default();
    let mut names: Vec<(usize, String)> = Vec::new();
    for (i, line) in src.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("test_") {
            let name: String = t
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !names.iter().any(|(_, n)| *n == name) {
                names.push((i + 1, name));
            }
        }
    }
    for (line, name) in names {
        let what = format!("{}:{line}: {name}", file.display());
        match engine.eval_rule(format!("data.{package}.{name}")) {
            Ok(regorus::Value::Bool(true)) => report.passed += 1,
            Ok(regorus::Value::Undefined) => {
                report.fail(&what, "--- expected\n+++ got\n- true\n+ undefined")
            }
            Ok(v) => report.fail(&what, &format!("--- expected\n+++ got\n- true\n+ {v}")),
            Err(e) => report.fail(&what, &format!("error: {e:#}")),
        }
    }
}
