//! Policy: turns a tagged [`Event`] into [`Decision`]s.
//!
//! A policy directory holds YAML policies (`*.yaml`, `*.yml`, format in
//! docs/policy.md) and Rego policies (`*.rego`, evaluated with regorus).
//! Files named `*_test.*` and the `tests/` subdirectory are policy unit
//! tests (see [`suite`]), not policies.
//!
//! Everything is compiled at load: YAML rules are indexed by event kind
//! with their globs, regexes and CIDRs pre-built, and Rego policies are
//! compiled once and evaluated only for the kinds they declare.
//! [`PolicySet::evaluate`] appends to the caller's vector and allocates
//! nothing when no YAML rule matches and no Rego policy handles the kind.

pub mod cli;
pub mod plan;
pub mod rego;
pub mod rego_input;
mod reload;
pub mod rules;
pub mod spec;
pub mod stream;
pub mod suite;
pub mod template;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use rego::RegoPolicy;
pub use reload::{Check, Reload, Reloader};
pub use rules::Rule;

use crate::alert::{Action, Decision};
use crate::event::{Event, Kind};
use spec::PolicySpec;

/// A load error: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    pub message: String,
}

impl Diagnostic {
    pub fn new(file: &Path, line: usize, column: usize, message: String) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            line,
            column,
            message,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Settings from the daemon's side of a load.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LoadOptions {
    /// DNS resolvers that `except: {dns_resolver: true}` lets through (port
    /// 53), in addition to each policy file's own `dns_resolvers`.
    pub dns_resolvers: Vec<IpAddr>,
    /// The daemon's load: refuse a directory or file that anyone but root
    /// can write (see `crate::trust`). `policy lint`/`test` leave it off.
    pub trusted_only: bool,
}

impl LoadOptions {
    /// Resolvers named by /etc/resolv.conf (`nameserver` lines); empty when
    /// it can't be read.
    pub fn system() -> LoadOptions {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        LoadOptions {
            dns_resolvers: parse_resolv_conf(&text),
            trusted_only: false,
        }
    }
}

/// The `nameserver` addresses of a resolv.conf.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        // A scoped IPv6 address ("fe80::1%eth0") keeps its address part.
        .filter_map(|a| a.split('%').next().and_then(|a| a.parse().ok()))
        .collect()
}

const KINDS: usize = Kind::ALL.len();

fn kind_index(k: Kind) -> usize {
    k as usize
}

/// Every policy of a directory, compiled.
pub struct PolicySet {
    rules: Vec<Rule>,
    by_kind: [Box<[u32]>; KINDS],
    rego: Vec<RegoPolicy>,
    rego_by_kind: [Box<[u32]>; KINDS],
    files: Vec<PathBuf>,
    rego_errors: AtomicU64,
    inputs: rego_input::InputBuilder,
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySet")
            .field("files", &self.files)
            .field("rules", &self.rules.len())
            .field("rego", &self.rego.len())
            .finish()
    }
}

/// Policy files of `dir` (top level, sorted): `*.yaml`, `*.yml`, `*.rego`,
/// without the `*_test.*` files.
pub fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if matches!(ext, "yaml" | "yml" | "rego") && !stem.ends_with("_test") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Where the rule named `name` starts in `src` (its `name:` line), for
/// errors found after parsing.
pub(crate) fn locate_name(src: &str, name: &str) -> (usize, usize) {
    for (i, line) in src.lines().enumerate() {
        let t = line.trim_start().trim_start_matches("- ").trim_start();
        if let Some(v) = t.strip_prefix("name:") {
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
            if v == name {
                return (i + 1, line.len() - line.trim_start().len() + 1);
            }
        }
    }
    (1, 1)
}

/// serde_norway error → diagnostic (its location, its message without the
/// trailing " at line N column M").
pub(crate) fn yaml_diag(file: &Path, src: &str, e: &serde_norway::Error) -> Diagnostic {
    // The location is reported on its own; drop it from the text.
    let mut msg = e.to_string();
    while let Some(i) = msg.find(" at line ") {
        let rest = &msg[i + " at line ".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == ' ' || "column".contains(c)))
            .unwrap_or(rest.len());
        msg.replace_range(i..i + " at line ".len() + end, "");
    }
    let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    let (line, col) = refine(src, &msg, line).unwrap_or((line, col));
    Diagnostic::new(file, line, col, msg)
}

/// serde_norway places an error in a mapping's value at the mapping's
/// start; the value itself is on a later line. Our value errors quote the
/// value ("bad glob \"x\"", "{placeholder}"): find it from there on.
fn refine(src: &str, msg: &str, from_line: usize) -> Option<(usize, usize)> {
    let needle = if let Some(i) = msg.find("placeholder {") {
        let rest = &msg[i + "placeholder ".len()..];
        &rest[..=rest.find('}')?]
    } else {
        let start = msg.find('"')? + 1;
        let len = msg[start..].find('"')?;
        &msg[start..start + len]
    };
    if needle.is_empty() || needle.contains('\\') {
        return None;
    }
    src.lines()
        .enumerate()
        .skip(from_line.saturating_sub(1))
        .find_map(|(i, l)| l.find(needle).map(|c| (i + 1, c + 1)))
}

/// A file that does not deserialize: its first error, then the errors of
/// every other rule, each rule read on its own (one bad rule hides none of
/// the others). A YAML syntax error stops there: nothing after it parses.
fn every_rule_error(file: &Path, src: &str, first: &serde_norway::Error) -> Vec<Diagnostic> {
    let mut diags = vec![yaml_diag(file, src, first)];
    let Ok(doc) = serde_norway::from_str::<serde_norway::Value>(src) else {
        return diags;
    };
    let Some(rules) = doc.get("rules").and_then(|r| r.as_sequence()) else {
        return diags;
    };
    for (i, r) in rules.iter().enumerate() {
        let Err(e) = serde_norway::from_value::<spec::RuleSpec>(r.clone()) else {
            continue;
        };
        let msg = e.to_string();
        // The first error, reported above with its exact place.
        if diags[0].message == format!("rules[{i}]: {msg}") || diags[0].message.ends_with(&msg) {
            continue;
        }
        let name = r.get("name").and_then(|n| n.as_str()).unwrap_or_default();
        let (line, col) = if name.is_empty() {
            (1, 1)
        } else {
            locate_name(src, name)
        };
        // The field or value named first in backticks, from the rule on.
        let quoted = msg
            .split('`')
            .nth(1)
            .filter(|q| !q.is_empty())
            .and_then(|q| {
                // A field as a key (`bogus:`) before a bare value (`opne`).
                let find = |needle: &str| {
                    src.lines()
                        .enumerate()
                        .skip(line.saturating_sub(1))
                        .find_map(|(n, l)| l.find(needle).map(|c| (n + 1, c + 1)))
                };
                find(&format!("{q}:")).or_else(|| find(q))
            });
        let (line, col) = quoted.unwrap_or((line, col));
        diags.push(Diagnostic::new(
            file,
            line,
            col,
            format!("rules[{i}]: {msg}"),
        ));
    }
    diags
}

fn load_yaml(
    file: &Path,
    src: &str,
    opts: &LoadOptions,
) -> Result<(String, Vec<Rule>), Vec<Diagnostic>> {
    let spec: PolicySpec =
        serde_norway::from_str(src).map_err(|e| every_rule_error(file, src, &e))?;
    let name = spec.name.clone().unwrap_or_else(|| {
        file.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let policy: Arc<str> = name.as_str().into();
    let mut resolvers = opts.dns_resolvers.clone();
    resolvers.extend(spec.dns_resolvers.iter().copied());
    let resolvers: Arc<[IpAddr]> = resolvers.into();
    let mut errs = Vec::new();
    let mut rules = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in spec.rules {
        let (line, col) = locate_name(src, &r.name);
        let mut err = |m: String| errs.push(Diagnostic::new(file, line, col, m));
        if r.name.trim().is_empty() {
            err("rule name is empty".into());
        }
        if !seen.insert(r.name.clone()) {
            err(format!(
                "duplicate rule name {:?} in policy {name:?}",
                r.name
            ));
        }
        if r.kinds.is_empty() {
            err(format!("rule {:?}: `kinds` is empty", r.name));
        }
        if !r.when.except.domains.is_empty()
            && (r.when.dest.is_none()
                || !r
                    .kinds
                    .iter()
                    .all(|k| matches!(k, Kind::Connect | Kind::Send)))
        {
            err(format!(
                "rule {:?}: `except.domains` needs kinds connect/send and a `dest` (e.g. dest: {{cidrs: [0.0.0.0/0, \"::/0\"]}})",
                r.name
            ));
        }
        if r.kill_scope.is_some() && r.action != Action::Kill {
            err(format!(
                "rule {:?}: `kill_scope` only applies to action kill",
                r.name
            ));
        }
        // A condition only constrains the kinds it applies to; a kind none
        // applies to would match every event of that kind.
        if r.when.count() > 0 {
            for k in &r.kinds {
                if r.when.applicable(*k) == 0 {
                    err(format!(
                        "rule {:?}: no condition applies to kind {k}, so it would match every {k} event (split the rule, or see the table in docs/policy.md)",
                        r.name
                    ));
                }
            }
        }
        let rname = r.name.clone();
        match Rule::compile(r, Arc::clone(&policy), spec.mode, Arc::clone(&resolvers)) {
            Ok(rule) => rules.push(rule),
            Err(m) => errs.push(Diagnostic::new(
                file,
                line,
                col,
                format!("rule {rname:?}: {m}"),
            )),
        }
    }
    if errs.is_empty() {
        Ok((name, rules))
    } else {
        Err(errs)
    }
}

impl PolicySet {
    /// Loads every policy of `dir` (see [`policy_files`]).
    pub fn load_dir(dir: &Path) -> Result<PolicySet, Vec<Diagnostic>> {
        PolicySet::load_dir_with(dir, &LoadOptions::default())
    }

    pub fn load_dir_with(dir: &Path, opts: &LoadOptions) -> Result<PolicySet, Vec<Diagnostic>> {
        let files = policy_files(dir).map_err(|e| {
            vec![Diagnostic::new(
                dir,
                1,
                1,
                format!("reading the policy directory: {e}"),
            )]
        })?;
        if opts.trusted_only {
            if let Err(why) = crate::trust::check(dir) {
                return Err(vec![Diagnostic::new(dir, 1, 1, why)]);
            }
        }
        PolicySet::load_files(&files, opts)
    }

    /// Loads these policy files; reports every error of every file.
    pub fn load_files(files: &[PathBuf], opts: &LoadOptions) -> Result<PolicySet, Vec<Diagnostic>> {
        let mut errs = Vec::new();
        let mut rules = Vec::new();
        let mut rego = Vec::new();
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        for file in files {
            if opts.trusted_only {
                if let Err(why) = crate::trust::check(file) {
                    errs.push(Diagnostic::new(file, 1, 1, why));
                    continue;
                }
            }
            let src = match std::fs::read_to_string(file) {
                Ok(s) => s,
                Err(e) => {
                    errs.push(Diagnostic::new(file, 1, 1, format!("reading: {e}")));
                    continue;
                }
            };
            let is_rego = file.extension().is_some_and(|e| e == "rego");
            let name = if is_rego {
                match RegoPolicy::load(file, &src) {
                    Ok(p) => {
                        let n = p.name().to_owned();
                        rego.push(p);
                        n
                    }
                    Err(d) => {
                        errs.extend(d);
                        continue;
                    }
                }
            } else {
                match load_yaml(file, &src, opts) {
                    Ok((n, r)) => {
                        rules.extend(r);
                        n
                    }
                    Err(d) => {
                        errs.extend(d);
                        continue;
                    }
                }
            };
            if let Some((_, other)) = names.iter().find(|(n, _)| *n == name) {
                errs.push(Diagnostic::new(
                    file,
                    1,
                    1,
                    format!("policy name {name:?} is also used by {}", other.display()),
                ));
            }
            names.push((name, file.clone()));
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let index = |kinds: &mut dyn Iterator<Item = (usize, &[Kind])>| {
            let mut by: [Vec<u32>; KINDS] = Default::default();
            for (i, ks) in kinds {
                for k in ks {
                    let slot = &mut by[kind_index(*k)];
                    // u32 indices keep the per-kind lists small; a set never
                    // holds 4 billion rules.
                    let i = u32::try_from(i).unwrap_or(u32::MAX);
                    if !slot.contains(&i) {
                        slot.push(i);
                    }
                }
            }
            by.map(Vec::into_boxed_slice)
        };
        // A rule with a domain list also judges the DNS queries of its
        // subjects (a name outside the list is dropped in the kernel).
        let with_dns: Vec<Vec<Kind>> = rules
            .iter()
            .map(|r| {
                let mut k = r.kinds().to_vec();
                if !r.spec().when.except.domains.is_empty() {
                    k.push(Kind::Dns);
                }
                k
            })
            .collect();
        let by_kind = index(&mut with_dns.iter().enumerate().map(|(i, k)| (i, k.as_slice())));
        let rego_by_kind = index(&mut rego.iter().enumerate().map(|(i, r)| (i, r.kinds())));
        Ok(PolicySet {
            rules,
            by_kind,
            rego,
            rego_by_kind,
            files: files.to_vec(),
            rego_errors: AtomicU64::new(0),
            inputs: rego_input::InputBuilder::default(),
        })
    }

    /// Appends the decisions of every rule that matches `ev` to `out`.
    pub fn evaluate(&self, ev: &Event, out: &mut Vec<Decision>) {
        let k = kind_index(ev.kind);
        for &i in self.by_kind[k].iter() {
            if let Some(r) = self.rules.get(i as usize) {
                if r.matches(ev) {
                    out.push(r.decide(ev));
                }
            }
        }
        let rego = &self.rego_by_kind[k];
        if rego.is_empty() {
            return;
        }
        // One input per event, shared by the Rego policies.
        let input = match self.inputs.build(ev) {
            Ok(v) => v,
            Err(e) => {
                self.rego_error(&e.to_string());
                return;
            }
        };
        for &i in rego.iter() {
            if let Some(p) = self.rego.get(i as usize) {
                match p.evaluate(&input, out) {
                    Ok(0) => {}
                    Ok(bad) => self.rego_error(&format!(
                        "{}: {bad} malformed decision object(s) (want {{rule, action, severity, message}})",
                        p.file().display()
                    )),
                    Err(e) => self.rego_error(&e),
                }
            }
        }
    }

    fn rego_error(&self, e: &str) {
        self.rego_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("rego evaluation: {e}");
    }

    /// Rego evaluations that failed or returned malformed decisions.
    pub fn rego_errors(&self) -> u64 {
        self.rego_errors.load(Ordering::Relaxed)
    }

    /// The files it was loaded from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// All YAML rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rego_policies(&self) -> &[RegoPolicy] {
        &self.rego
    }

    /// YAML rules evaluated for `kind`.
    pub fn rules_for(&self, kind: Kind) -> impl Iterator<Item = &Rule> {
        self.by_kind[kind_index(kind)]
            .iter()
            .filter_map(|i| self.rules.get(*i as usize))
    }

    /// Rego policies evaluated for `kind`.
    pub fn rego_for(&self, kind: Kind) -> impl Iterator<Item = &RegoPolicy> {
        self.rego_by_kind[kind_index(kind)]
            .iter()
            .filter_map(|i| self.rego.get(*i as usize))
    }

    /// Rules for the enforcement stage to put in kernel maps: network rules
    /// (connect/send only, with `dest` CIDRs/ports or `unix_path`) whose
    /// action is one of `actions`. Read the CIDRs, ports, exceptions and
    /// selectors from [`Rule::spec`].
    pub fn network_rules<'a>(&'a self, actions: &'a [Action]) -> impl Iterator<Item = &'a Rule> {
        self.rules.iter().filter(move |r| {
            let w = &r.spec().when;
            actions.contains(&r.action())
                && r.kinds()
                    .iter()
                    .all(|k| matches!(k, Kind::Connect | Kind::Send))
                && (w.dest.is_some() || !w.unix_path.is_empty())
        })
    }

    /// Exec rules with executable-path globs (`when.exec`) and one of
    /// `actions`.
    pub fn exec_rules<'a>(&'a self, actions: &'a [Action]) -> impl Iterator<Item = &'a Rule> {
        self.rules.iter().filter(move |r| {
            actions.contains(&r.action())
                && r.kinds().contains(&Kind::Exec)
                && !r.spec().when.exec.is_empty()
        })
    }

    /// File rules about paths under the container's volumes
    /// (`when.under_mount`) with one of `actions`: the mount destinations
    /// come from each container's metadata.
    pub fn mount_rules<'a>(&'a self, actions: &'a [Action]) -> impl Iterator<Item = &'a Rule> {
        self.rules
            .iter()
            .filter(move |r| actions.contains(&r.action()) && r.spec().when.under_mount)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.rego.is_empty()
    }
}

/// The set is shared between the event loop and the reloader.
#[allow(dead_code)]
fn assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<PolicySet>();
}

#[cfg(test)]
mod tests;
