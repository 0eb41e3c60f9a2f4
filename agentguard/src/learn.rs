//! `agentguard learn`: a policy written from what an agent really did.
//!
//! Reads recorded events (the JSON lines of `agentguard events`), keeps
//! those of one agent or container, and writes a commented YAML policy
//! that allows what was seen (destinations, binaries, paths written or
//! removed) and alerts on or refuses everything else, plus `policy test`
//! cases built from the same events. Pure: no root, no kernel.
//!
//! Size: one pass (read events, generalise, write the policy and its test
//! cases) whose parts share the counts they comment on; about 945 lines of
//! code, the rest tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::event::{Detail, Event, Kind};

/// Whose events to learn from.
#[derive(Clone, Debug)]
pub enum Subject {
    /// `identity.agent.name`.
    Agent(String),
    /// Container name, full id or id prefix (at least 12 characters).
    Container(String),
}

/// What the learned policy does with what was not seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Strictness {
    /// Every rule alerts (start here: watch what would fire).
    Alert,
    /// Egress is denied, unseen binaries and writes or removals outside
    /// the learned paths kill the process.
    Enforce,
}

/// A directory with at least this many distinct files written or removed
/// is learned as `DIR/**` rather than file by file.
const DIR_GENERALISE: usize = 3;
/// Binaries: `DIR/*` from this many in one directory.
const EXEC_GENERALISE: usize = 8;
/// Domains: `*.PARENT` from this many names below one parent.
const DOMAIN_GENERALISE: usize = 2;

#[derive(Clone, Debug, Default)]
struct Seen {
    count: u64,
    first_ns: u64,
    /// Index of the first event (its case in the tests).
    first: usize,
    /// Extra words for the comment (ports, the name DNS gave).
    notes: BTreeSet<String>,
}

impl Seen {
    fn add(&mut self, ts: u64, idx: usize) {
        if self.count == 0 {
            self.first_ns = ts;
            self.first = idx;
        }
        self.count += 1;
    }

    fn add_by(&mut self, ts: u64, idx: usize, runtime: bool) {
        self.add(ts, idx);
        if runtime {
            self.notes
                .insert("the container runtime's set-up".to_owned());
        }
    }
}

/// Everything observed of the subject.
#[derive(Default)]
struct Observed {
    events: Vec<Event>,
    start_ns: u64,
    end_ns: u64,
    /// `identity.agent.name` of the subject (for the rules' selector).
    agent: Option<String>,
    image: Option<String>,
    container: Option<String>,
    domains: BTreeMap<String, Seen>,
    /// Addresses without a DNS name in the event.
    addrs: BTreeMap<String, Seen>,
    loopback: Seen,
    /// Resolvers (port 53 destinations that are not loopback).
    resolvers: BTreeMap<String, Seen>,
    /// Names DNS answers gave each address (for comments only).
    answered: BTreeMap<String, BTreeSet<String>>,
    execs: BTreeMap<String, Seen>,
    writes: BTreeMap<String, Seen>,
    removals: BTreeMap<String, Seen>,
    net_kinds: Option<usize>,
    exec_first: Option<usize>,
    write_first: Option<usize>,
    removal_first: Option<usize>,
}

fn selected(ev: &Event, who: &Subject) -> bool {
    let Some(id) = &ev.identity else {
        return false;
    };
    match who {
        Subject::Agent(name) => id.agent.as_ref().is_some_and(|a| &a.name == name),
        Subject::Container(c) => id.container.as_ref().is_some_and(|t| {
            let name = t.info.as_ref().map(|i| i.name.trim_start_matches('/'));
            name == Some(c.trim_start_matches('/'))
                || (c.len() >= 12 && t.id.starts_with(c.as_str()))
        }),
    }
}

/// The glob a path is learned as: the path itself (glob characters
/// escaped), except for names that change from run to run for the same
/// thing: the process's own descriptors, its terminal, and the container's
/// root as the runtime sees it before entering it (the overlay's id).
fn volatile(path: &str) -> String {
    for dir in ["/proc/self/fd/", "/dev/pts/"] {
        if let Some(rest) = path.strip_prefix(dir) {
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                return format!("{dir}*");
            }
        }
    }
    const OVERLAY: &str = "/var/lib/docker/overlay2/";
    if let Some((id, rest)) = path
        .strip_prefix(OVERLAY)
        .and_then(|r| r.split_once("/merged/"))
    {
        if !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return format!("{OVERLAY}*/merged/{}", glob_escape(rest));
        }
    }
    glob_escape(path)
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<std::net::IpAddr>()
        .is_ok_and(|a| a.is_loopback())
}

impl Observed {
    fn read(path: &Path, who: &Subject) -> Result<Observed> {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut o = Observed::default();
        let mut bad = 0usize;
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Event>(&line) {
                Ok(ev) if selected(&ev, who) => o.add(ev),
                Ok(_) => {}
                Err(e) => {
                    if bad < 5 {
                        eprintln!("{}:{}: skipped: {e}", path.display(), i + 1);
                    }
                    bad += 1;
                }
            }
        }
        if bad > 0 {
            eprintln!("learn: {bad} unreadable line(s) skipped");
        }
        if o.events.is_empty() {
            bail!(
                "no events of {} in {}",
                match who {
                    Subject::Agent(a) => format!("agent {a:?}"),
                    Subject::Container(c) => format!("container {c:?}"),
                },
                path.display()
            );
        }
        Ok(o)
    }

    fn add(&mut self, ev: Event) {
        let idx = self.events.len();
        let ts = ev.ts_ns;
        if idx == 0 || ts < self.start_ns {
            self.start_ns = ts;
        }
        self.end_ns = self.end_ns.max(ts);
        if let Some(id) = &ev.identity {
            if let Some(a) = &id.agent {
                self.agent.get_or_insert_with(|| a.name.clone());
            }
            if let Some(info) = id.container.as_ref().and_then(|c| c.info.as_ref()) {
                self.image.get_or_insert_with(|| info.image.clone());
                self.container
                    .get_or_insert_with(|| info.name.trim_start_matches('/').to_owned());
            }
        }
        let failed = ev.ret < 0;
        // runc setting the container up before the entrypoint runs: the
        // same at every start, said so in the comment.
        let runtime = ev.comm.starts_with("runc");
        match (&ev.kind, &ev.detail) {
            (Kind::Connect | Kind::Send, Detail::Net(n)) => {
                if let (Some(addr), Some(port)) = (&n.addr, n.port) {
                    self.net_kinds.get_or_insert(idx);
                    if is_loopback(addr) {
                        self.loopback.add(ts, idx);
                        self.loopback.notes.insert(format!("{addr}:{port}"));
                    } else if port == 53 && n.domain.is_none() {
                        let s = self.resolvers.entry(addr.clone()).or_default();
                        s.add(ts, idx);
                    } else if let Some(d) = &n.domain {
                        let s = self.domains.entry(d.clone()).or_default();
                        s.add(ts, idx);
                        s.notes.insert(format!("port {port}"));
                    } else {
                        let s = self.addrs.entry(addr.clone()).or_default();
                        s.add(ts, idx);
                        s.notes.insert(format!("port {port}"));
                    }
                }
            }
            (Kind::Dns, Detail::Dns(d)) if d.direction == "answer" => {
                if let Some(name) = &d.name {
                    for a in &d.addrs {
                        self.answered
                            .entry(a.clone())
                            .or_default()
                            .insert(name.clone());
                    }
                }
            }
            (Kind::Exec, Detail::Exec(x)) if !failed => {
                self.exec_first.get_or_insert(idx);
                for name in x.names() {
                    self.execs.entry(volatile(name)).or_default().add(ts, idx);
                }
            }
            // Attempts count, failed or not: the rules judge attempts.
            (Kind::Open, Detail::File(f))
                if matches!(f.access.as_deref(), Some("write" | "read_write"))
                    && f.file.path.starts_with('/') =>
            {
                self.write_first.get_or_insert(idx);
                self.writes
                    .entry(volatile(&f.file.path))
                    .or_default()
                    .add_by(ts, idx, runtime);
            }
            (Kind::Truncate, Detail::File(f)) if f.file.path.starts_with('/') => {
                self.write_first.get_or_insert(idx);
                self.writes
                    .entry(volatile(&f.file.path))
                    .or_default()
                    .add_by(ts, idx, runtime);
            }
            (Kind::Unlink | Kind::Rmdir, Detail::File(f)) if f.file.path.starts_with('/') => {
                self.removal_first.get_or_insert(idx);
                self.removals
                    .entry(volatile(&f.file.path))
                    .or_default()
                    .add_by(ts, idx, runtime);
            }
            (Kind::Rename, Detail::Rename(r)) if r.from.path.starts_with('/') => {
                self.removal_first.get_or_insert(idx);
                self.removals
                    .entry(volatile(&r.from.path))
                    .or_default()
                    .add_by(ts, idx, runtime);
            }
            _ => {}
        }
        self.events.push(ev);
    }

    fn when(&self, s: &Seen) -> String {
        let secs = s.first_ns.saturating_sub(self.start_ns) as f64 / 1e9;
        let mut t = format!("seen {}x, first at +{secs:.1} s", s.count);
        if !s.notes.is_empty() {
            let notes: Vec<&str> = s.notes.iter().take(6).map(String::as_str).collect();
            let _ = write!(t, " ({}", notes.join(", "));
            if s.notes.len() > 6 {
                let _ = write!(t, ", +{} more", s.notes.len() - 6);
            }
            t.push(')');
        }
        t
    }
}

/// An entry of a learned list: the glob and its comment.
struct Entry {
    glob: String,
    comment: String,
}

/// Paths generalised: a directory with [`DIR_GENERALISE`] or more distinct
/// paths becomes `DIR/**`, and whatever such a glob covers is folded in.
fn generalise_paths(o: &Observed, seen: &BTreeMap<String, Seen>) -> Vec<Entry> {
    let mut by_dir: BTreeMap<String, Vec<(&String, &Seen)>> = BTreeMap::new();
    for (p, s) in seen {
        let dir = Path::new(p)
            .parent()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".to_owned());
        by_dir.entry(dir).or_default().push((p, s));
    }
    let mut trees: Vec<String> = by_dir
        .iter()
        .filter(|(d, v)| v.len() >= DIR_GENERALISE && d.as_str() != "/")
        .map(|(d, _)| d.clone())
        .collect();
    // A tree inside another learned tree adds nothing.
    trees.sort();
    let mut kept: Vec<String> = Vec::new();
    for t in trees {
        if !kept.iter().any(|k| t.starts_with(&format!("{k}/"))) {
            kept.push(t);
        }
    }
    let under = |p: &str| kept.iter().find(|k| p.starts_with(&format!("{k}/")));
    let mut out = Vec::new();
    for k in &kept {
        let inside: Vec<&Seen> = seen
            .iter()
            .filter(|(p, _)| p.starts_with(&format!("{k}/")))
            .map(|(_, s)| s)
            .collect();
        let count: u64 = inside.iter().map(|s| s.count).sum();
        let first = inside.iter().map(|s| s.first_ns).min().unwrap_or(0);
        let secs = first.saturating_sub(o.start_ns) as f64 / 1e9;
        out.push(Entry {
            glob: format!("{k}/**"),
            comment: format!(
                "{} paths below, {count} operations, first at +{secs:.1} s (generalised: {DIR_GENERALISE} or more files in one directory)",
                inside.len()
            ),
        });
    }
    for (p, s) in seen {
        if under(p).is_none() {
            out.push(Entry {
                glob: p.clone(),
                comment: o.when(s),
            });
        }
    }
    out
}

fn generalise_execs(o: &Observed) -> Vec<Entry> {
    let mut by_dir: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for p in o.execs.keys() {
        let dir = Path::new(p)
            .parent()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        by_dir.entry(dir).or_default().push(p);
    }
    let mut out = Vec::new();
    for (dir, names) in by_dir {
        if names.len() >= EXEC_GENERALISE && dir.len() > 1 {
            out.push(Entry {
                glob: format!("{dir}/*"),
                comment: format!(
                    "{} binaries run from here (generalised: {EXEC_GENERALISE} or more in one directory)",
                    names.len()
                ),
            });
        } else {
            for p in names {
                out.push(Entry {
                    glob: p.clone(),
                    comment: o.when(&o.execs[p]),
                });
            }
        }
    }
    out
}

/// Domains: [`DOMAIN_GENERALISE`] or more names below one parent (at least
/// two labels, e.g. `npmjs.org`) become `*.PARENT`.
fn generalise_domains(o: &Observed) -> Vec<Entry> {
    let parent = |d: &str| -> Option<String> {
        let (_, rest) = d.split_once('.')?;
        rest.contains('.').then(|| rest.to_owned())
    };
    let mut by_parent: BTreeMap<String, Vec<&String>> = BTreeMap::new();
    for d in o.domains.keys() {
        if let Some(p) = parent(d) {
            by_parent.entry(p).or_default().push(d);
        }
    }
    let wild: BTreeSet<String> = by_parent
        .iter()
        .filter(|(_, v)| v.len() >= DOMAIN_GENERALISE)
        .map(|(p, _)| p.clone())
        .collect();
    let mut out = Vec::new();
    for p in &wild {
        out.push(Entry {
            glob: format!("*.{p}"),
            comment: format!(
                "{} names below {p} (generalised: {DOMAIN_GENERALISE} or more)",
                by_parent[p].len()
            ),
        });
    }
    for (d, s) in &o.domains {
        if parent(d).is_some_and(|p| wild.contains(&p)) {
            continue;
        }
        out.push(Entry {
            glob: d.clone(),
            comment: o.when(s),
        });
    }
    out
}

/// A path as a glob that matches only itself.
fn glob_escape(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset of it).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

fn list(out: &mut String, indent: &str, key: &str, entries: &[Entry]) {
    if entries.is_empty() {
        return;
    }
    let _ = writeln!(out, "{indent}{key}:");
    for e in entries {
        let _ = writeln!(out, "{indent}  - {}  # {}", q(&e.glob), e.comment);
    }
}

/// The learned policy and its tests.
pub struct Learned {
    pub policy: String,
    pub tests: String,
    pub summary: String,
}

/// Names of the learned rules, from the policy name.
fn rule(name: &str, what: &str) -> String {
    format!("{name}-{what}")
}

/// Learns from `events` (JSON lines) what `who` did.
pub fn learn(events: &Path, who: &Subject, strict: Strictness, name: &str) -> Result<Learned> {
    let o = Observed::read(events, who)?;
    let selector = match (&o.agent, who) {
        (Some(a), _) => format!("{{ agent: {} }}", q(a)),
        (None, Subject::Container(_)) => match &o.image {
            Some(img) => format!("{{ scope: container, image: {} }}", q(img)),
            None => bail!("the container's events carry neither an agent nor an image"),
        },
        (None, Subject::Agent(a)) => format!("{{ agent: {} }}", q(a)),
    };
    let (egress_action, act) = match strict {
        Strictness::Alert => ("alert", "alert"),
        Strictness::Enforce => ("deny", "kill"),
    };
    let secs = o.end_ns.saturating_sub(o.start_ns) as f64 / 1e9;
    let mut p = String::new();
    let _ = writeln!(
        p,
        "# Learned by `agentguard learn` from {} ({} events of {} over {secs:.1} s).",
        events.display(),
        o.events.len(),
        match who {
            Subject::Agent(a) => format!("agent {a}"),
            Subject::Container(c) => format!("container {c}"),
        }
    );
    let _ = writeln!(
        p,
        "# Review before use: each entry says how often and when it was first seen.\n\
         # What was not seen: {}.\n\
         # Not learned: reads (the pack's credential rules judge those), unix sockets.",
        match strict {
            Strictness::Alert => "alerted",
            Strictness::Enforce => "egress denied, binaries, writes and removals killed",
        }
    );
    let _ = writeln!(p, "name: {}", q(name));
    let _ = writeln!(p, "mode: enforce");
    let resolvers: Vec<Entry> = o
        .resolvers
        .iter()
        .map(|(a, s)| Entry {
            glob: a.clone(),
            comment: o.when(s),
        })
        .collect();
    list(&mut p, "", "dns_resolvers", &resolvers);
    let _ = writeln!(p, "rules:");

    // Egress.
    let domains = generalise_domains(&o);
    let addrs: Vec<Entry> = o
        .addrs
        .iter()
        .map(|(a, s)| {
            let mut comment = o.when(s);
            if let Some(names) = o.answered.get(a) {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let _ = write!(
                    comment,
                    "; DNS answered {} for it: consider `domains` instead",
                    names.join(", ")
                );
            } else {
                comment.push_str("; no DNS name seen");
            }
            let cidr = if a.contains(':') {
                format!("{a}/128")
            } else {
                format!("{a}/32")
            };
            Entry {
                glob: cidr,
                comment,
            }
        })
        .collect();
    let _ = writeln!(p, "  - name: {}", rule(name, "egress"));
    let _ = writeln!(
        p,
        "    description: destinations seen while learning; anything else is {}",
        if egress_action == "deny" {
            "denied"
        } else {
            "alerted"
        }
    );
    let _ = writeln!(p, "    kinds: [connect, send]");
    let _ = writeln!(p, "    match: {selector}");
    let _ = writeln!(p, "    when:");
    let _ = writeln!(p, "      dest: {{ cidrs: [0.0.0.0/0, \"::/0\"] }}");
    let _ = writeln!(p, "      except:");
    if o.loopback.count > 0 {
        let _ = writeln!(p, "        loopback: true  # {}", o.when(&o.loopback));
    }
    if !o.resolvers.is_empty() {
        let _ = writeln!(p, "        dns_resolver: true  # the dns_resolvers above");
    }
    list(&mut p, "        ", "domains", &domains);
    list(&mut p, "        ", "cidrs", &addrs);
    if o.loopback.count == 0 && o.resolvers.is_empty() && domains.is_empty() && addrs.is_empty() {
        let _ = writeln!(p, "        loopback: false  # no destination seen");
    }
    let _ = writeln!(p, "    action: {egress_action}");
    let _ = writeln!(p, "    severity: high");
    let _ = writeln!(
        p,
        "    message: \"{{comm}} ({{agent}}) reached {{target}}, not seen while learning\""
    );

    // Binaries.
    let execs = generalise_execs(&o);
    let _ = writeln!(p, "  - name: {}", rule(name, "exec"));
    let _ = writeln!(p, "    description: binaries seen while learning");
    let _ = writeln!(p, "    kinds: [exec]");
    let _ = writeln!(p, "    match: {selector}");
    let _ = writeln!(p, "    when:");
    let _ = writeln!(
        p,
        "      result: success  # a failed exec (a PATH search) ran nothing"
    );
    let _ = writeln!(p, "      exec: [\"/**\"]");
    if !execs.is_empty() {
        let _ = writeln!(p, "      except:");
        list(&mut p, "        ", "exec", &execs);
    }
    let _ = writeln!(p, "    action: {act}");
    let _ = writeln!(p, "    severity: high");
    let _ = writeln!(
        p,
        "    message: \"{{comm}} ({{agent}}) ran {{path}}, not seen while learning\""
    );

    // Writes and removals.
    let writes = generalise_paths(&o, &o.writes);
    let removals = generalise_paths(&o, &o.removals);
    for (what, kinds, cond, entries, verb) in [
        (
            "writes",
            "[open, truncate]",
            "      access: [write, read_write]\n",
            &writes,
            "wrote",
        ),
        (
            "removals",
            "[unlink, rmdir, rename]",
            "",
            &removals,
            "removed",
        ),
    ] {
        let _ = writeln!(p, "  - name: {}", rule(name, what));
        let _ = writeln!(
            p,
            "    description: paths {} while learning",
            if what == "writes" {
                "written"
            } else {
                "removed"
            }
        );
        let _ = writeln!(p, "    kinds: {kinds}");
        let _ = writeln!(p, "    match: {selector}");
        let _ = writeln!(p, "    when:");
        let _ = writeln!(p, "      path: [\"/**\"]");
        p.push_str(cond);
        if !entries.is_empty() {
            let _ = writeln!(p, "      except:");
            list(&mut p, "        ", "paths", entries);
        }
        let _ = writeln!(p, "    action: {act}");
        let _ = writeln!(p, "    severity: high");
        let _ = writeln!(
            p,
            "    message: \"{{comm}} ({{agent}}) {verb} {{path}}, not seen while learning\""
        );
    }

    let tests = tests(&o, name, egress_action, act)?;
    let summary = format!(
        "learned from {} events: {} domains, {} addresses, {} binaries, {} write paths, {} removal paths",
        o.events.len(),
        domains.len(),
        addrs.len(),
        execs.len(),
        writes.len(),
        removals.len()
    );
    Ok(Learned {
        policy: p,
        tests,
        summary,
    })
}

/// `policy test` cases: the first event of each learned entry (no
/// decision), and one event outside each rule (its decision).
fn tests(o: &Observed, name: &str, egress: &str, act: &str) -> Result<String> {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Cases written by `agentguard learn` for {name}.yaml: what was seen passes,\n\
         # what was not is caught. Run with `agentguard policy test DIR` on a\n\
         # directory holding that policy alone (cases expect its decisions only)."
    );
    let _ = writeln!(t, "cases:");
    let mut firsts: BTreeSet<usize> = BTreeSet::new();
    for m in [
        &o.domains,
        &o.addrs,
        &o.resolvers,
        &o.execs,
        &o.writes,
        &o.removals,
    ] {
        firsts.extend(m.values().map(|s| s.first));
    }
    if o.loopback.count > 0 {
        firsts.insert(o.loopback.first);
    }
    for i in firsts {
        let ev = &o.events[i];
        let _ = writeln!(
            t,
            "  - name: {}\n    event: {}\n    expect: none",
            q(&format!("seen: {} {}", ev.kind.as_str(), target(ev))),
            serde_json::to_string(ev)?
        );
    }
    // One unseen target per rule, on a copy of a real event of its kind.
    let probe = "/nonexistent/agentguard-learn-probe";
    let mut outside = |idx: Option<usize>, what: &str, action: &str, f: &dyn Fn(&mut Event)| {
        let Some(i) = idx else {
            return Ok::<(), anyhow::Error>(());
        };
        let mut ev = o.events[i].clone();
        f(&mut ev);
        let _ = writeln!(
            t,
            "  - name: {}\n    event: {}\n    expect: [{{ rule: {}, action: {action} }}]",
            q(&format!("not seen: {} {}", ev.kind.as_str(), target(&ev))),
            serde_json::to_string(&ev)?,
            rule(name, what)
        );
        Ok(())
    };
    // 192.0.2.0/24 is TEST-NET-1: documentation only, never routed.
    let net_first = o
        .net_kinds
        .filter(|i| matches!(&o.events[*i].detail, Detail::Net(n) if n.addr.is_some()));
    outside(net_first, "egress", egress, &|ev| {
        if let Detail::Net(n) = &mut ev.detail {
            n.addr = Some("192.0.2.1".to_owned());
            n.port = Some(443);
            n.domain = None;
            n.v4_mapped = false;
            n.family = "inet".to_owned();
        }
    })?;
    outside(o.exec_first, "exec", act, &|ev| {
        if let Detail::Exec(x) = &mut ev.detail {
            x.file.path = probe.to_owned();
            x.file.raw = None;
            x.binary = None;
            x.argv = vec![probe.to_owned()];
        }
    })?;
    let open_first = o.write_first.filter(|i| o.events[*i].kind == Kind::Open);
    outside(open_first, "writes", act, &|ev| {
        if let Detail::File(f) = &mut ev.detail {
            f.file.path = probe.to_owned();
            f.file.raw = None;
        }
    })?;
    let rm_first = o
        .removal_first
        .filter(|i| o.events[*i].kind != Kind::Rename);
    outside(rm_first, "removals", act, &|ev| {
        if let Detail::File(f) = &mut ev.detail {
            f.file.path = probe.to_owned();
            f.file.raw = None;
        }
    })?;
    Ok(t)
}

fn target(ev: &Event) -> String {
    match &ev.detail {
        Detail::Net(n) => match (&n.domain, &n.addr, n.port) {
            (Some(d), Some(a), Some(p)) => format!("{d} ({a}:{p})"),
            (None, Some(a), Some(p)) => format!("{a}:{p}"),
            _ => n.unix_path.clone().unwrap_or_default(),
        },
        Detail::Exec(x) => x.file.path.clone(),
        Detail::File(f) => f.file.path.clone(),
        Detail::Rename(r) => r.from.path.clone(),
        _ => String::new(),
    }
}

/// Writes the policy to `out` and its tests next to it (`STEM_test.yaml`);
/// returns the tests' path.
pub fn write(out: &Path, learned: &Learned) -> Result<PathBuf> {
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("--out {}: needs a file name", out.display()))?;
    if !matches!(
        out.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    ) {
        bail!(
            "--out {}: a policy file ends in .yaml or .yml",
            out.display()
        );
    }
    let tests = out.with_file_name(format!("{stem}_test.yaml"));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, &learned.policy).with_context(|| format!("writing {}", out.display()))?;
    std::fs::write(&tests, &learned.tests)
        .with_context(|| format!("writing {}", tests.display()))?;
    Ok(tests)
}

/// `agentguard learn`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["agent", "container"])))]
pub struct LearnArgs {
    /// Learn from these recorded events (JSON lines of `agentguard events`;
    /// no root needed). Without it: watch now (root), until --for ends or Ctrl-C.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// The agent (label or ancestry name, e.g. claude).
    #[arg(long)]
    pub agent: Option<String>,
    /// The container (name, or id prefix of 12+ characters).
    #[arg(long)]
    pub container: Option<String>,
    /// How long to watch (e.g. 90s, 10m, 1h); without it, until Ctrl-C.
    #[arg(long = "for", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// The policy file to write (its tests go next to it, STEM_test.yaml).
    #[arg(long)]
    pub out: PathBuf,
    /// What the policy does with what was not seen.
    #[arg(long, value_enum, default_value_t = Strictness::Alert)]
    pub strictness: Strictness,
    /// Where the watched events are kept (default: next to --out, STEM.events.jsonl).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Write this file once watching has started (for scripts).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// `90s`, `10m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with s, m or h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: unit must be s, m or h")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

pub fn run(args: LearnArgs) -> Result<()> {
    let who = match (&args.agent, &args.container) {
        (Some(a), _) => Subject::Agent(a.clone()),
        (None, Some(c)) => Subject::Container(c.clone()),
        (None, None) => bail!("say whose policy to learn: --agent NAME or --container NAME"),
    };
    let name = args
        .out
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| anyhow!("--out {}: needs a file name", args.out.display()))?
        .to_owned();
    let events = match &args.from {
        Some(f) => f.clone(),
        None => {
            let rec = args
                .record
                .clone()
                .unwrap_or_else(|| args.out.with_file_name(format!("{name}.events.jsonl")));
            if let Some(dir) = rec.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            watch(&who, args.duration, &rec, args.ready_file.as_deref())?;
            rec
        }
    };
    let learned = learn(&events, &who, args.strictness, &name)?;
    let tests = write(&args.out, &learned)?;
    eprintln!(
        "learn: {}\nlearn: wrote {} and {}; review them, then `agentguard policy lint` and `agentguard policy test` their directory",
        learned.summary,
        args.out.display(),
        tests.display()
    );
    Ok(())
}

/// Records the subject's events with `agentguard events` (this binary) into
/// `rec` until `duration` ends or Ctrl-C. Nothing is blocked meanwhile: it
/// only watches.
fn watch(
    who: &Subject,
    duration: Option<std::time::Duration>,
    rec: &Path,
    ready_file: Option<&Path>,
) -> Result<()> {
    let exe = std::env::current_exe().context("finding this program")?;
    let ready = rec.with_extension("ready");
    let _ = std::fs::remove_file(&ready);
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("events")
        .arg("-o")
        .arg(rec)
        .arg("--ready-file")
        .arg(&ready);
    match who {
        Subject::Agent(a) => cmd.args(["--agent", a]),
        Subject::Container(c) => cmd.args(["--container", c]),
    };
    let mut child = cmd.spawn().context("starting `agentguard events`")?;
    // Ctrl-C reaches the child (same process group), which stops and
    // flushes; this process waits for it rather than dying with it.
    // SAFETY: changes a disposition only; the child has its own handlers.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    // The time counts from when the probes are attached.
    while !ready.exists() {
        if let Some(st) = child
            .try_wait()
            .context("waiting for `agentguard events`")?
        {
            bail!("`agentguard events` ended before it was ready: {st}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&ready);
    if let Some(r) = ready_file {
        std::fs::write(r, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing ready file {}", r.display()))?;
    }
    eprintln!(
        "learn: watching{} (nothing is blocked while learning); Ctrl-C to stop",
        duration.map_or(String::new(), |d| format!(" for {} s", d.as_secs()))
    );
    let deadline = duration.map(|d| std::time::Instant::now() + d);
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .context("waiting for `agentguard events`")?
        {
            break st;
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            // SAFETY: signals our own child, alive (not yet reaped).
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            break child.wait().context("waiting for `agentguard events`")?;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    if !status.success() && status.code() != Some(130) {
        bail!("`agentguard events` ended with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(n: u64) -> Seen {
        Seen {
            count: n,
            ..Default::default()
        }
    }

    #[test]
    fn paths_generalise_by_directory_and_escape_glob_characters() {
        let o = Observed::default();
        let mut m = BTreeMap::new();
        for p in [
            "/w/a/1", "/w/a/2", "/w/a/b/3", "/w/a/b/4", "/w/a/b/5", "/x[1]/y",
        ] {
            m.insert(volatile(p), seen(1));
        }
        let got: Vec<String> = generalise_paths(&o, &m)
            .into_iter()
            .map(|e| e.glob)
            .collect();
        // /w/a holds 2 files of its own (kept one by one), /w/a/b holds 3.
        assert_eq!(got, ["/w/a/b/**", "/w/a/1", "/w/a/2", "/x\\[1\\]/y"]);
        assert_eq!(volatile("/proc/self/fd/12"), "/proc/self/fd/*");
        assert_eq!(volatile("/proc/self/fdinfo/1"), "/proc/self/fdinfo/1");
        assert_eq!(
            volatile("/var/lib/docker/overlay2/4b50a/merged/dev/ptmx"),
            "/var/lib/docker/overlay2/*/merged/dev/ptmx"
        );
        assert_eq!(volatile("/a*b"), "/a\\*b");
    }

    #[test]
    fn sibling_domains_become_a_suffix_and_lone_ones_stay() {
        let mut o = Observed::default();
        for d in [
            "registry.npmjs.org",
            "www.npmjs.org",
            "api.anthropic.com",
            "localhost",
        ] {
            o.domains.insert(d.to_owned(), seen(2));
        }
        let got: Vec<String> = generalise_domains(&o).into_iter().map(|e| e.glob).collect();
        assert_eq!(got, ["*.npmjs.org", "api.anthropic.com", "localhost"]);
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(
            parse_duration("90s"),
            Ok(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("10m"),
            Ok(std::time::Duration::from_secs(600))
        );
        assert_eq!(parse_duration("2"), Ok(std::time::Duration::from_secs(2)));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("m").is_err());
    }
}
