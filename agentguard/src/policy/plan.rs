//! The rule plan: each rule compiled once into what the kernel checks
//! (which hooks, which map entries) and what is left to userspace.
//!
//! Enforcement only writes maps from a plan; it never reads rule internals.
//! Two kernel backends use the same plan:
//! - `lsm`: BPF-LSM hooks decide on the kernel objects (inodes, sockets)
//!   and refuse before anything changes;
//! - `tracepoint`: syscall-entry probes decide on the argument strings and
//!   can only kill (the syscall in flight completes), plus the cgroup
//!   sock_addr hooks for network denies.
//!
//! Userspace always evaluates every rule on the events too: it catches
//! what the kernel part does not cover (and reports what the kernel did).

use std::sync::Arc;

use agentguard_common::enforce::{op, MAX_RULES};

use crate::alert::{Action, Mode};
use crate::event::Kind;
use crate::policy::rules::Rule;
use crate::policy::PolicySet;

/// Which kernel mechanism enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Lsm,
    Tracepoint,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Lsm => "lsm",
            Backend::Tracepoint => "tracepoint",
        }
    }
}

/// A file the kernel protects, given as an absolute glob the daemon
/// resolves on the filesystem (`/dir/**`: everything below `dir`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileTarget {
    pub pattern: String,
    /// `agentguard_common::enforce::op` bits.
    pub ops: u32,
}

/// What the kernel checks for one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelPart {
    /// Destination CIDRs/ports: sock_addr hooks (deny), connect/send
    /// tracepoints (kill), LSM socket hooks.
    Net,
    /// Raw and packet sockets refused at creation (cgroup sock_create, or
    /// the LSM socket_create hook).
    RawSockets,
    /// The container's bind mounts and volumes: by mount destination
    /// prefix (tracepoint) or by the mount source's inode (LSM).
    Mount { ops: u32 },
    /// Files by identity (LSM) or exec path prefixes (tracepoint).
    Files { targets: Vec<FileTarget> },
    /// Kill at io_uring_setup (tracepoint, both backends).
    IoUring,
    /// Kill at a 32-bit ABI syscall (raw_syscalls tracepoint).
    Compat,
    /// A reader (`exec`) whose stdin is the pipe a writer (`stdin_from`)
    /// writes into: program names, paired on the pipe at exec.
    Pipe {
        readers: Vec<String>,
        writers: Vec<String>,
    },
}

impl KernelPart {
    pub fn name(&self) -> &'static str {
        match self {
            KernelPart::Net => "net",
            KernelPart::RawSockets => "raw_sockets",
            KernelPart::Mount { .. } => "mount",
            KernelPart::Files { .. } => "files",
            KernelPart::IoUring => "io_uring",
            KernelPart::Compat => "compat_syscall",
            KernelPart::Pipe { .. } => "pipe",
        }
    }
}

/// One rule's kernel slot.
#[derive(Clone, Debug)]
pub struct SlotPlan {
    pub policy: Arc<str>,
    pub rule: Arc<str>,
    pub action: Action,
    /// Index in `PolicySet::rules()`.
    pub index: usize,
    pub kernel: KernelPart,
    /// Identity of the rule's content: a slot keeps its bit across a
    /// reload or a restart only while this stays the same.
    pub id: u32,
    /// What the kernel part leaves to userspace, if anything.
    pub partial: Option<String>,
    /// An in-kernel kill quarantines the whole container.
    pub contain_container: bool,
}

/// The plan of a whole policy set for one backend.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub slots: Vec<SlotPlan>,
    /// Rules the kernel cannot take (or only partly), for logs and status.
    pub notes: Vec<String>,
}

/// FNV-1a: stable across builds and Rust versions, unlike `DefaultHasher`.
fn fnv(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

fn rule_id(r: &Rule, backend: Backend) -> u32 {
    fnv(&format!(
        "{}\0{}\0{:?}\0{:?}\0{}",
        r.policy(),
        r.name(),
        r.spec(),
        r.mode(),
        backend.as_str()
    ))
}

/// Plans `set` for `backend`, in rule order (the same policy gives the
/// same plan, so a restarted daemon finds its slots in the pinned maps).
pub fn plan(set: &PolicySet, backend: Backend) -> Plan {
    let mut p = Plan::default();
    for (index, r) in set.rules().iter().enumerate() {
        if r.mode() != Mode::Enforce {
            continue;
        }
        let Some((kernel, partial)) = kernel_part(r, backend) else {
            continue;
        };
        let name = format!("{}/{}", r.policy(), r.name());
        if p.slots.len() as u32 >= MAX_RULES {
            p.notes.push(format!(
                "rule {name}: more than {MAX_RULES} kernel rules; enforced from userspace"
            ));
            continue;
        }
        if let Some(why) = &partial {
            p.notes.push(format!("rule {name}: {why}"));
        }
        p.slots.push(SlotPlan {
            policy: Arc::from(r.policy()),
            rule: Arc::from(r.name()),
            action: r.action(),
            index,
            kernel,
            id: rule_id(r, backend),
            partial,
            contain_container: r.kill_scope() == crate::alert::KillScope::Container,
        });
    }
    p
}

/// `{a,b}` alternatives spelled out (nested braces too): `{/x,/y}/z`
/// gives `/x/z` and `/y/z`.
pub fn expand_braces(g: &str) -> Vec<String> {
    let Some(open) = g.find('{') else {
        return vec![g.to_owned()];
    };
    let mut depth = 0;
    let mut close = None;
    let mut commas = Vec::new();
    for (i, c) in g[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(open + i),
            _ => {}
        }
    }
    let Some(close) = close else {
        return vec![g.to_owned()];
    };
    let (head, tail) = (&g[..open], &g[close + 1..]);
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let alt = &g[w[0] + 1..w[1]];
        out.extend(expand_braces(&format!("{head}{alt}{tail}")));
    }
    out
}

/// One brace-free glob the kernel can take: absolute, with `**` only as
/// the whole last component. `*`, `?` and `[..]` within components are
/// expanded on the filesystem by the daemon.
fn simple_kernel_glob(g: &str) -> bool {
    if !g.starts_with('/') {
        return false;
    }
    let parts: Vec<&str> = g.split('/').collect();
    parts
        .iter()
        .enumerate()
        .all(|(i, c)| !c.contains("**") || (*c == "**" && i == parts.len() - 1))
}

/// The kernel forms of a glob, or None when any alternative can't be one.
pub fn kernel_globs(g: &str) -> Option<Vec<String>> {
    let alts = expand_braces(g);
    alts.iter().all(|a| simple_kernel_glob(a)).then_some(alts)
}

fn kernel_glob(g: &str) -> bool {
    kernel_globs(g).is_some()
}

/// Exec globs that are plain directory prefixes: `/tmp/**` -> `/tmp/`
/// (what the tracepoint's path trie can hold).
pub fn exec_prefix(g: &str, max_len: usize) -> Option<String> {
    let p = g.strip_suffix("**")?;
    let plain = p.starts_with('/')
        && p.ends_with('/')
        && !p.contains(['*', '?', '[', '{'])
        && p.len() <= max_len;
    plain.then(|| p.to_owned())
}

fn file_op(k: Kind) -> Option<u32> {
    Some(match k {
        // A hard link is a second name to open the file by.
        Kind::Open => op::OPEN | op::LINK,
        Kind::Unlink => op::UNLINK,
        Kind::Rmdir => op::RMDIR,
        Kind::Rename => op::RENAME,
        Kind::Truncate => op::TRUNCATE,
        _ => return None,
    })
}

/// A rule without `except`: the kernel checks no exceptions.
fn no_exceptions(ex: &crate::policy::spec::Exceptions) -> bool {
    ex.cidrs.is_empty()
        && ex.ports.is_empty()
        && !ex.loopback
        && !ex.dns_resolver
        && ex.domains.is_empty()
        && ex.paths.is_empty()
        && ex.exec.is_empty()
}

fn kernel_part(r: &Rule, backend: Backend) -> Option<(KernelPart, Option<String>)> {
    // Whether the agent process itself acted is known from the ancestry
    // userspace resolves. The per-task rule bits leave the agent process
    // out, but its child holds the agent's bits from fork to its exec: a
    // kill there would be missed, so only alerts (which userspace raises
    // anyway) go to the kernel.
    if r.spec().selector.actor.is_some() && r.action() != Action::Alert {
        return None;
    }
    let w = &r.spec().when;
    let kinds = r.kinds();
    let ex = &w.except;
    let no_except = no_exceptions(ex);
    let only = |n: usize| w.count() == n && w.result.is_none() && no_except;
    let lsm = backend == Backend::Lsm;
    if !lsm
        && kinds.contains(&Kind::Open)
        && kinds
            .iter()
            .all(|k| matches!(k, Kind::Open | Kind::Connect))
    {
        // Opens by identity at syscall exit (a hard link is the same file):
        // an alert marks the event, a deny or kill kills before the task
        // can read. Unix connects have no hook without BPF-LSM: userspace
        // decides them.
        let (part, note) = file_part(r)?;
        let KernelPart::Files { targets } = part else {
            return None;
        };
        let targets: Vec<FileTarget> = targets
            .into_iter()
            .filter(|t| t.ops & (op::OPEN | op::LINK) != 0)
            .collect();
        return (!targets.is_empty()).then_some((KernelPart::Files { targets }, note));
    }
    let acts = match r.action() {
        Action::Deny | Action::Kill => true,
        // An alert-only rule matched in an LSM hook is still reported
        // however the object was reached.
        Action::Alert => lsm,
    };
    if !acts {
        return None;
    }
    let net_kinds = kinds
        .iter()
        .all(|k| matches!(k, Kind::Connect | Kind::Send));
    if w.dest.is_some()
        && w.count() == 1
        && w.result.is_none()
        && net_kinds
        && ex.paths.is_empty()
        && ex.exec.is_empty()
        && r.action() != Action::Alert
    {
        return Some((KernelPart::Net, None));
    }
    if kinds == [Kind::Socket] && only(0) && r.action() != Action::Alert {
        return Some((KernelPart::RawSockets, None));
    }
    // The tracepoint backend can only kill at entry for files.
    if !lsm && r.action() != Action::Kill {
        return None;
    }
    if w.under_mount && only(1) {
        let mut ops = 0;
        for k in kinds {
            ops |= match k {
                Kind::Unlink => op::UNLINK,
                Kind::Rmdir => op::RMDIR,
                Kind::Rename => op::RENAME_AWAY,
                Kind::Truncate if lsm => op::TRUNCATE,
                _ => return None,
            };
        }
        return Some((KernelPart::Mount { ops }, None));
    }
    if kinds == [Kind::IoUringSetup] && only(0) && r.action() == Action::Kill {
        return Some((KernelPart::IoUring, None));
    }
    if kinds == [Kind::CompatSyscall] && only(0) && r.action() == Action::Kill {
        return Some((KernelPart::Compat, None));
    }
    if kinds == [Kind::Exec] && !w.exec.is_empty() && !w.stdin_from.is_empty() && only(2) {
        // The kernel pairs the two ends by program name (the exec path's
        // last component): plain names only.
        let names = |globs: &[crate::policy::spec::PathGlob]| -> Option<Vec<String>> {
            globs
                .iter()
                .map(|g| {
                    let n = g.0.as_str();
                    let plain = !n.is_empty()
                        && n.len() < agentguard_common::enforce::PIPE_PROG_LEN
                        && !n.contains(['/', '*', '?', '[', '{']);
                    plain.then(|| n.to_owned())
                })
                .collect()
        };
        return Some((
            KernelPart::Pipe {
                readers: names(&w.exec)?,
                writers: names(&w.stdin_from)?,
            },
            None,
        ));
    }
    if kinds == [Kind::Exec] && !w.exec.is_empty() && only(1) {
        if lsm {
            let (targets, left): (Vec<_>, Vec<_>) = w
                .exec
                .iter()
                .map(|g| g.0.as_str())
                .partition(|g| kernel_glob(g));
            if targets.is_empty() {
                return None;
            }
            let targets = targets
                .into_iter()
                .flat_map(|g| kernel_globs(g).unwrap_or_default())
                .map(|g| FileTarget {
                    pattern: g,
                    ops: op::EXEC,
                })
                .collect();
            return Some((KernelPart::Files { targets }, partial_note(&left)));
        }
        let max = agentguard_common::enforce::KILL_PATH_LEN;
        let all: Option<Vec<String>> = w.exec.iter().map(|g| exec_prefix(&g.0, max)).collect();
        return all.map(|prefixes| {
            (
                KernelPart::Files {
                    targets: prefixes
                        .into_iter()
                        .map(|p| FileTarget {
                            pattern: format!("{p}**"),
                            ops: op::EXEC,
                        })
                        .collect(),
                },
                None,
            )
        });
    }
    if !lsm {
        return removal_prefix_part(r);
    }
    file_part(r)
}

/// Tracepoint backend: a kill rule about unlink or rmdir of
/// directory trees (`/dir/**`, `path_prefix`) is checked by prefix on the
/// absolute path at syscall entry. Anything else (other globs, relative
/// paths at run time, renames) is left to userspace, which still sees it.
fn removal_prefix_part(r: &Rule) -> Option<(KernelPart, Option<String>)> {
    let kinds = r.kinds();
    if kinds.is_empty()
        || !kinds
            .iter()
            .all(|k| matches!(k, Kind::Unlink | Kind::Rmdir))
    {
        return None;
    }
    let (KernelPart::Files { targets }, _) = file_part(r)? else {
        return None;
    };
    let max = agentguard_common::enforce::KILL_PATH_LEN;
    let mut out = Vec::new();
    let mut left = Vec::new();
    for t in targets {
        match exec_prefix(&t.pattern, max) {
            Some(p) => out.push(FileTarget {
                pattern: format!("{p}**"),
                ops: t.ops,
            }),
            None => left.push(t.pattern),
        }
    }
    if out.is_empty() {
        return None;
    }
    let left: Vec<&str> = left.iter().map(String::as_str).collect();
    Some((KernelPart::Files { targets: out }, partial_note(&left)))
}

fn file_part(r: &Rule) -> Option<(KernelPart, Option<String>)> {
    let w = &r.spec().when;
    let kinds = r.kinds();
    let no_except = no_exceptions(&w.except);
    // File rules: `path`/`path_prefix` for file kinds,
    // `unix_path` for connect. Every other condition keeps the rule in
    // userspace, since the kernel would check less than the rule says.
    let plain = w.result.is_none()
        && no_except
        && w.access.is_empty()
        && !w.under_mount
        && w.exec.is_empty()
        && w.argv.is_empty()
        && w.cmdline.is_empty()
        && w.dest.is_none();
    if !plain || (w.path.is_empty() && w.path_prefix.is_empty() && w.unix_path.is_empty()) {
        return None;
    }
    let mut targets = Vec::new();
    let mut left = Vec::new();
    for k in kinds {
        if let Some(o) = file_op(*k) {
            for g in &w.path {
                if let Some(alts) = kernel_globs(&g.0) {
                    for a in alts {
                        targets.push(FileTarget { pattern: a, ops: o });
                    }
                } else {
                    left.push(g.0.as_str());
                }
            }
            for p in &w.path_prefix {
                let base = p.0.trim_end_matches('/');
                targets.push(FileTarget {
                    pattern: base.to_owned(),
                    ops: o,
                });
                targets.push(FileTarget {
                    pattern: format!("{base}/**"),
                    ops: o,
                });
            }
        } else if *k == Kind::Connect {
            for g in &w.unix_path {
                if let Some(alts) = kernel_globs(&g.0) {
                    for a in alts {
                        targets.push(FileTarget {
                            pattern: a,
                            ops: op::UNIX_CONNECT,
                        });
                    }
                } else {
                    left.push(g.0.as_str());
                }
            }
        } else {
            // A kind the file hooks don't see (send...): userspace only.
            return None;
        }
    }
    if targets.is_empty() {
        return None;
    }
    // The same pattern for several kinds is one target with all the ops.
    let mut merged: Vec<FileTarget> = Vec::new();
    for t in targets {
        match merged.iter_mut().find(|m| m.pattern == t.pattern) {
            Some(m) => m.ops |= t.ops,
            None => merged.push(t),
        }
    }
    left.sort_unstable();
    left.dedup();
    Some((KernelPart::Files { targets: merged }, partial_note(&left)))
}

fn partial_note(left: &[&str]) -> Option<String> {
    (!left.is_empty()).then(|| {
        format!(
            "patterns {} are not absolute paths the kernel can resolve: userspace matches them on the reported path",
            left.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_globs() {
        assert!(kernel_glob("/root/.ssh/**"));
        assert!(kernel_glob("{/root,/home/*}/.ssh/**"));
        assert!(kernel_glob("/var/run/docker.sock"));
        assert!(!kernel_glob(".env"));
        assert!(!kernel_glob("/a/**/b"));
        assert!(!kernel_glob("/a/x**"));
    }

    #[test]
    fn braces() {
        assert_eq!(
            expand_braces("{/root,/home/*}/.ssh/**"),
            vec!["/root/.ssh/**", "/home/*/.ssh/**"]
        );
        assert_eq!(
            expand_braces("/a/{b,{c,d}}/e"),
            vec!["/a/b/e", "/a/c/e", "/a/d/e"]
        );
        assert_eq!(expand_braces("/plain"), vec!["/plain"]);
    }

    #[test]
    fn exec_prefixes() {
        assert_eq!(exec_prefix("/tmp/**", 64).as_deref(), Some("/tmp/"));
        assert_eq!(exec_prefix("/t*/**", 64), None);
        assert_eq!(exec_prefix("sh", 64), None);
    }

    fn plan_of(yaml: &str, backend: Backend) -> Plan {
        let set = crate::policy::tests::load_one(yaml).expect("policy loads");
        plan(&set, backend)
    }

    #[test]
    fn removal_kill_rules_on_trees_are_kernel_prefixes_on_tracepoints() {
        let yaml = "name: t\nrules:\n  - name: r\n    kinds: [unlink, rmdir]\n    match: { agent: any }\n    when: { path: [\"/srv/keep/**\", \"/srv/*.db\"] }\n    action: kill\n    severity: high\n    message: m\n";
        let p = plan_of(yaml, Backend::Tracepoint);
        assert_eq!(p.slots.len(), 1);
        let KernelPart::Files { targets } = &p.slots[0].kernel else {
            panic!("{:?}", p.slots[0].kernel);
        };
        let ops = targets.iter().fold(0, |o, t| o | t.ops);
        assert!(
            targets.iter().all(|t| t.pattern == "/srv/keep/**"),
            "{targets:?}"
        );
        assert_eq!(ops, op::UNLINK | op::RMDIR);
        // The glob the kernel can't take as a prefix stays in userspace,
        // and the plan says so.
        assert!(p.slots[0]
            .partial
            .as_deref()
            .is_some_and(|n| n.contains("/srv/*.db")));
        // An alert or a rename rule gets no kernel part on tracepoints.
        assert!(plan_of(
            &yaml.replace("action: kill", "action: alert"),
            Backend::Tracepoint
        )
        .slots
        .is_empty());
        assert!(plan_of(
            &yaml.replace("[unlink, rmdir]", "[rename]"),
            Backend::Tracepoint
        )
        .slots
        .is_empty());
    }

    #[test]
    fn pipe_rules_with_plain_names_go_to_the_kernel() {
        let yaml = "name: t\nrules:\n  - name: r\n    kinds: exec\n    match: { agent: any }\n    when: { exec: [sh, bash], stdin_from: [curl] }\n    action: kill\n    severity: high\n    message: m\n";
        for backend in [Backend::Tracepoint, Backend::Lsm] {
            let p = plan_of(yaml, backend);
            assert_eq!(
                p.slots.first().map(|s| &s.kernel),
                Some(&KernelPart::Pipe {
                    readers: vec!["sh".into(), "bash".into()],
                    writers: vec!["curl".into()],
                })
            );
        }
        // A path glob on either side: userspace only.
        for other in [
            yaml.replace("stdin_from: [curl]", "stdin_from: [\"/usr/bin/*\"]"),
            yaml.replace("exec: [sh, bash]", "exec: [\"/bin/sh\"]"),
            yaml.replace("action: kill", "action: alert"),
        ] {
            assert!(
                plan_of(&other, Backend::Tracepoint).slots.is_empty(),
                "{other}"
            );
        }
    }

    #[test]
    fn actor_rules_go_to_the_kernel_only_as_alerts() {
        let yaml = "name: t\nrules:\n  - name: r\n    kinds: exec\n    match: { agent: any, actor: tool }\n    when: { exec: [\"/tmp/**\"] }\n    action: alert\n    severity: high\n    message: m\n";
        assert_eq!(plan_of(yaml, Backend::Lsm).slots.len(), 1);
        let kill = yaml.replace("action: alert", "action: kill");
        assert_eq!(
            plan_of(&kill.replace(", actor: tool", ""), Backend::Lsm)
                .slots
                .len(),
            1
        );
        assert!(plan_of(&kill, Backend::Lsm).slots.is_empty());
        assert!(plan_of(&kill, Backend::Tracepoint).slots.is_empty());
    }

    #[test]
    fn ids_are_stable_and_nonzero() {
        assert_eq!(fnv("a"), fnv("a"));
        assert_ne!(fnv("a"), fnv("b"));
        assert_ne!(fnv(""), 0);
    }
}
