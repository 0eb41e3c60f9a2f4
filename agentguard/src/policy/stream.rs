//! What the kernel streams, derived from the loaded policy: which
//! processes (every one, or only the ones a rule can select), which kinds,
//! which records may stay in the kernel because no rule could match them,
//! and which must wake the daemon at once because a rule decided in
//! userspace may kill or deny on them.
//!
//! A prefilter is only ever a superset check: a record it keeps in the
//! kernel is one no loaded rule can match. When that can't be shown for a
//! kind (a Rego policy about it, a glob the kernel can't test, an audit-mode
//! rule whose files have no kernel entries), the kind streams in full.

use agentguard_common::filter::{kind_bit, URGENT_UNIX};

use crate::alert::{Action, Mode};
use crate::event::Kind;
use crate::policy::plan::{kernel_globs, Backend, KernelPart, Plan, SlotPlan};
use crate::policy::rules::Rule;
use crate::policy::spec::AgentSel;
use crate::policy::PolicySet;

/// The streaming half of the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamPlan {
    /// Every rule selects agents (`match: {agent: ...}`): other processes
    /// need stream only exec/fork/exit, which identity needs.
    pub agents_only: bool,
    /// Kinds some rule is about, plus exec/fork/exit.
    pub kinds: Vec<Kind>,
    /// `CONFIG[URGENT_KINDS]`: kind bits (and `URGENT_UNIX`).
    pub urgent: u32,
    /// `CONFIG[PREFILTER_KINDS]`: kind bits.
    pub prefilter: u32,
    /// File names for `BASENAMES`: (name, exact) — exact names match
    /// whole, the others as a prefix.
    pub basenames: Vec<(String, bool)>,
    /// Opens of guarded containers' processes are prefiltered too
    /// (`CONFIG[ROOTED_OPENS]`): every open rule's paths start with a plain
    /// component, held in `basenames` as `/name`.
    pub rooted_opens: bool,
    /// Why a kind streams in full for guarded processes.
    pub notes: Vec<String>,
}

/// Kinds the prefilter knows how to check.
const FILTERABLE: [Kind; 3] = [Kind::Open, Kind::Connect, Kind::Send];

/// `plan`: the kernel rule plan in force (None: nothing is enforced in the
/// kernel, so nothing can be prefiltered).
pub fn stream_plan(set: &PolicySet, plan: Option<(&Plan, Backend)>) -> StreamPlan {
    let mut kinds: Vec<Kind> = vec![Kind::Exec, Kind::Fork, Kind::Exit];
    let mut agents_only = true;
    let mut urgent = 0u32;
    let mut blocked = 0u32;
    let mut basenames: Vec<(String, bool)> = Vec::new();
    let mut notes = Vec::new();
    let mut rooted_opens = true;
    let add_kinds = |ks: &[Kind], kinds: &mut Vec<Kind>| {
        for k in ks {
            if !kinds.contains(k) {
                kinds.push(*k);
            }
        }
    };
    for (index, r) in set.rules().iter().enumerate() {
        add_kinds(r.kinds(), &mut kinds);
        if r.spec().taint && r.mode() == Mode::Enforce {
            // The connects a taint refuses are reported (a tainted
            // subject's records pass the kernel's prefilter), and a match
            // userspace decides taints at once, not after a batch.
            add_kinds(&[Kind::Connect, Kind::Send], &mut kinds);
            for k in r.kinds() {
                urgent |= bit(*k);
            }
        }
        if !matches!(
            r.spec().selector.agent,
            Some(AgentSel::Any | AgentSel::Names(_))
        ) {
            agents_only = false;
        }
        let slot = plan.and_then(|(p, _)| p.slots.iter().find(|s| s.index == index));
        let backend = plan.map(|(_, b)| b);
        // Userspace may have to kill or deny for this rule.
        let acts = r.mode() == Mode::Enforce && matches!(r.action(), Action::Kill | Action::Deny);
        if r.kinds().contains(&Kind::Open) && rooted_opens {
            match top_components(r) {
                Ok(tops) => basenames.extend(tops),
                Err(why) => {
                    notes.push(format!(
                        "open: streamed in full for guarded containers: rule {}/{} {why}",
                        r.policy(),
                        r.name()
                    ));
                    rooted_opens = false;
                }
            }
        }
        for k in r.kinds() {
            if FILTERABLE.contains(k) {
                match checkable(r, *k, slot, &mut basenames) {
                    Ok(()) => {}
                    Err(why) => {
                        if blocked & bit(*k) == 0 {
                            notes.push(format!(
                                "{k}: streamed in full for guarded processes: rule {}/{} {why}",
                                r.policy(),
                                r.name()
                            ));
                        }
                        blocked |= bit(*k);
                    }
                }
            }
            // A connect rule about unix sockets only: URGENT_UNIX below.
            let unix_only = *k == Kind::Connect
                && r.spec().when.dest.is_none()
                && !r.spec().when.unix_path.is_empty();
            if acts && !unix_only && !kernel_decides(r, *k, slot, backend) {
                urgent |= bit(*k);
            }
        }
        if acts
            && r.kinds().contains(&Kind::Connect)
            && !r.spec().when.unix_path.is_empty()
            && backend != Some(Backend::Lsm)
        {
            // No unix-connect hook without BPF-LSM: userspace kills.
            urgent |= URGENT_UNIX;
        }
    }
    for p in set.rego_policies() {
        add_kinds(p.kinds(), &mut kinds);
        // A Rego policy may select any process: beyond what every process
        // streams anyway (exec, fork, exit), its kinds stream for all.
        if p.kinds()
            .iter()
            .any(|k| !matches!(k, Kind::Exec | Kind::Fork | Kind::Exit))
        {
            agents_only = false;
        }
        if p.kinds().contains(&Kind::Open) {
            rooted_opens = false;
        }
        for k in p.kinds() {
            if FILTERABLE.contains(k) && blocked & bit(*k) == 0 {
                notes.push(format!(
                    "{k}: streamed in full for guarded processes: Rego policy {} is about it",
                    p.name()
                ));
            }
            blocked |= bit(*k);
            if p.mode() == Mode::Enforce {
                urgent |= bit(*k);
            }
        }
        if p.mode() == Mode::Enforce && p.kinds().contains(&Kind::Connect) {
            urgent |= URGENT_UNIX;
        }
    }
    let prefilter = if plan.is_some() {
        FILTERABLE.iter().fold(0, |m, k| m | bit(*k)) & !blocked
    } else {
        0
    };
    basenames.sort();
    basenames.dedup();
    let rooted_opens = rooted_opens && prefilter & bit(Kind::Open) != 0;
    StreamPlan {
        rooted_opens,
        agents_only,
        kinds,
        urgent,
        prefilter,
        basenames,
        notes,
    }
}

fn bit(k: Kind) -> u32 {
    kind_bit(k.wire())
}

/// Can the kernel tell, for kind `k`, that rule `r` can't match a record?
fn checkable(
    r: &Rule,
    k: Kind,
    slot: Option<&SlotPlan>,
    basenames: &mut Vec<(String, bool)>,
) -> Result<(), String> {
    let w = &r.spec().when;
    match k {
        Kind::Open => {
            if w.path.is_empty() && w.path_prefix.is_empty() {
                return Err("has no path condition".into());
            }
            let files = slot.is_some_and(|s| {
                matches!(&s.kernel, KernelPart::Files { targets }
                    if targets.iter().any(|t| t.ops & agentguard_common::enforce::op::OPEN != 0))
            });
            let mut names = Vec::new();
            for g in &w.path {
                if !g.0.contains('/') {
                    names.push(basename(&g.0).ok_or_else(|| {
                        format!("names files by {:?}, which the kernel can't test", g.0)
                    })?);
                } else if !files || kernel_globs(&g.0).is_none() {
                    return Err(format!("has path {:?} without kernel entries", g.0));
                }
            }
            if !w.path_prefix.is_empty() && !files {
                return Err("has path_prefix without kernel entries".into());
            }
            basenames.extend(names);
            Ok(())
        }
        Kind::Connect | Kind::Send => {
            if w.dest.is_some() {
                let net = slot.is_some_and(|s| matches!(s.kernel, KernelPart::Net));
                return if net {
                    Ok(())
                } else {
                    Err("has a destination the kernel doesn't hold (alert, audit or exceptions by path)".into())
                };
            }
            // Unix-socket records always stream.
            if !w.unix_path.is_empty() {
                return Ok(());
            }
            Err("has no destination condition".into())
        }
        _ => Err("is about a kind the kernel doesn't prefilter".into()),
    }
}

/// The first path components (`/root`, exact) an open of rule `r` can
/// have below a container's root, besides the names `checkable` lists: a
/// path glob's or path prefix's first component, which must be plain.
fn top_components(r: &Rule) -> Result<Vec<(String, bool)>, String> {
    const META: [char; 6] = ['*', '?', '[', ']', '{', '\\'];
    let w = &r.spec().when;
    if w.path.is_empty() && w.path_prefix.is_empty() {
        return Err("has no path condition".into());
    }
    let max = agentguard_common::filter::BASENAME_LEN - 2;
    let first = |p: &str| -> Result<(String, bool), String> {
        let top = p
            .strip_prefix('/')
            .map(|rest| rest.split('/').next().unwrap_or(""))
            .filter(|t| !t.is_empty() && !t.contains(META) && t.len() <= max)
            .ok_or_else(|| {
                format!("has path {p:?}, whose first component the kernel can't test")
            })?;
        Ok((format!("/{top}"), true))
    };
    let mut out = Vec::new();
    for g in &w.path {
        // Names without a `/` are matched wherever they are (basenames).
        if g.0.contains('/') {
            for alt in crate::policy::plan::expand_braces(&g.0) {
                out.push(first(&alt)?);
            }
        }
    }
    for p in &w.path_prefix {
        out.push(first(&p.0)?);
    }
    Ok(out)
}

/// A glob over a file name the kernel can test: a plain name, or a plain
/// prefix followed by one `*` (`.env.*`).
fn basename(g: &str) -> Option<(String, bool)> {
    const META: [char; 6] = ['*', '?', '[', ']', '{', '\\'];
    let max = agentguard_common::filter::BASENAME_LEN - 1;
    if g.is_empty() || g.len() > max {
        return None;
    }
    if !g.contains(META) {
        return Some((g.to_owned(), true));
    }
    let p = g.strip_suffix('*')?;
    (!p.is_empty() && !p.contains(META)).then(|| (p.to_owned(), false))
}

/// Does the kernel itself decide rule `r` for kind `k` (so userspace has
/// no kill or deny to make in a hurry)?
fn kernel_decides(r: &Rule, k: Kind, slot: Option<&SlotPlan>, backend: Option<Backend>) -> bool {
    let Some(s) = slot else { return false };
    if s.partial.is_some() {
        return false;
    }
    let lsm = backend == Some(Backend::Lsm);
    match &s.kernel {
        KernelPart::Net => {
            matches!(k, Kind::Connect | Kind::Send) && r.spec().when.unix_path.is_empty()
        }
        KernelPart::RawSockets => k == Kind::Socket,
        KernelPart::IoUring => k == Kind::IoUringSetup,
        KernelPart::Compat => k == Kind::CompatSyscall,
        KernelPart::Files { .. } => k == Kind::Open || (lsm && k != Kind::Connect),
        KernelPart::Mount { .. } => lsm,
        KernelPart::Pipe { .. } => k == Kind::Exec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::plan::plan;

    fn set_of(yaml: &str) -> PolicySet {
        crate::policy::tests::load_one(yaml).expect("policy loads")
    }

    #[test]
    fn names_kernel_can_test() {
        assert_eq!(basename(".env"), Some((".env".into(), true)));
        assert_eq!(basename(".env.*"), Some((".env.".into(), false)));
        assert_eq!(basename("*.pem"), None);
        assert_eq!(basename("id_?sa"), None);
    }

    #[test]
    fn the_default_pack_prefilters_opens_and_connects_of_agents() {
        let set = PolicySet::load_dir(&crate::policy::tests::pack_dir()).expect("pack loads");
        for backend in [Backend::Tracepoint, Backend::Lsm] {
            let p = plan(&set, backend);
            let s = stream_plan(&set, Some((&p, backend)));
            assert!(s.agents_only, "{backend:?}");
            for k in [Kind::Open, Kind::Connect, Kind::Send] {
                assert_ne!(s.prefilter & bit(k), 0, "{k} {backend:?}: {:?}", s.notes);
            }
            // Inet connects are decided in the kernel: they need not wake
            // the daemon. Opens that leave the kernel do (credential-read
            // taints: userspace sets it for container paths).
            for k in [Kind::Connect, Kind::Send] {
                assert_eq!(s.urgent & bit(k), 0, "{k} {backend:?}");
            }
            assert_ne!(s.urgent & bit(Kind::Open), 0, "{backend:?}");
            // Userspace decides execs (argv, ancestors).
            assert_ne!(s.urgent & bit(Kind::Exec), 0);
            assert!(
                s.basenames.contains(&(".env".into(), true)),
                "{:?}",
                s.basenames
            );
            assert!(s.basenames.contains(&(".env.".into(), false)));
            // Containers' opens: by the first component of each path.
            assert!(s.rooted_opens, "{:?}", s.notes);
            for top in ["/root", "/home", "/var", "/run"] {
                assert!(s.basenames.contains(&(top.into(), true)), "{top}");
            }
        }
        let tp = plan(&set, Backend::Tracepoint);
        let s = stream_plan(&set, Some((&tp, Backend::Tracepoint)));
        // The Docker socket's unix connect has no hook without BPF-LSM.
        assert_ne!(s.urgent & URGENT_UNIX, 0);
        // Volume removals through a symlink are resolved in userspace.
        assert_ne!(s.urgent & bit(Kind::Unlink), 0);
        // No kernel enforcement: nothing may stay in the kernel.
        assert_eq!(stream_plan(&set, None).prefilter, 0);
    }

    #[test]
    fn rules_the_kernel_cant_test_stream_their_kind_in_full() {
        let any_open = "name: t\nrules:\n  - name: r\n    kinds: [open]\n    match: { agent: any }\n    when: { path: [\"*.pem\"] }\n    action: alert\n    severity: high\n    message: m\n";
        let set = set_of(any_open);
        let p = plan(&set, Backend::Tracepoint);
        let s = stream_plan(&set, Some((&p, Backend::Tracepoint)));
        assert_eq!(s.prefilter & bit(Kind::Open), 0);
        assert!(!s.rooted_opens);
        assert!(s.notes.iter().any(|n| n.contains("*.pem")), "{:?}", s.notes);
        // A path whose first component is a glob: hosts' opens are still
        // checked by inode, containers' stream in full.
        let wild_top = "name: t\nrules:\n  - name: r\n    kinds: [open]\n    match: { agent: any }\n    when: { path: [\"/*/secrets/**\"] }\n    action: alert\n    severity: high\n    message: m\n";
        let set = set_of(wild_top);
        let p = plan(&set, Backend::Tracepoint);
        let s = stream_plan(&set, Some((&p, Backend::Tracepoint)));
        assert!(!s.rooted_opens);
        assert!(
            s.notes.iter().any(|n| n.contains("guarded containers")),
            "{:?}",
            s.notes
        );
        // An alert-only connect rule has no kernel entries.
        let alert_net = "name: t\nrules:\n  - name: r\n    kinds: [connect]\n    match: { comm: [curl] }\n    when: { dest: { cidrs: [10.0.0.0/8] } }\n    action: alert\n    severity: high\n    message: m\n";
        let set = set_of(alert_net);
        let p = plan(&set, Backend::Tracepoint);
        let s = stream_plan(&set, Some((&p, Backend::Tracepoint)));
        assert_eq!(s.prefilter & bit(Kind::Connect), 0);
        // It selects processes that are not agents: every process streams.
        assert!(!s.agents_only);
    }
}
