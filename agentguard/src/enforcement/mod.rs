//! Enforcement: carries out a policy decision and says exactly what was done.
//!
//! Kills and denies the kernel can decide itself are compiled into maps by
//! [`kernel::KernelEnforcer`] and happen at the syscall, before userspace
//! hears of it; the event then carries `kernel_action` (kill) or the EPERM
//! the cgroup hook returned (deny). The rest is done here, after the event:
//! a pidfd kill (never a recycled pid), or a container kill through Docker.
//! Audit mode matches the same way and reports what it would have done.

pub mod kernel;
pub mod kill;
pub mod untaint;

use crate::alert::Action;
use crate::alert::{ActionResult, Decision, Enforcer as By, KillScope, Mechanism, Mode, Outcome};
use crate::event::{Event, KernelAction, KernelHook, Kind};
use crate::identity::docker::DockerClient;

/// What this host lets the daemon do (for `check` and the alerts).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Capabilities {
    /// bpf_send_signal from the probes.
    pub kernel_kill: bool,
    /// cgroup sock_addr hooks attached (network deny before any packet).
    pub network_deny: bool,
    /// BPF-LSM (deny file operations before they happen).
    pub lsm: bool,
    /// cgroup skb programs reading DNS (egress by domain name).
    pub dns: bool,
}

/// Rules of `set` whose action this host cannot carry out as written, with
/// why: "policy/rule: reason". They still alert (see `act`'s outcomes);
/// said at load so nobody learns it from the first alert. `backend`: the
/// kernel backend `set` is planned for (None: nothing in the kernel); the
/// set's own plan says which rules the kernel takes, so a set can be judged
/// before it is installed.
pub fn degraded_rules(
    set: &crate::policy::PolicySet,
    caps: &Capabilities,
    backend: Option<crate::policy::plan::Backend>,
) -> Vec<String> {
    let plan = backend.map(|b| crate::policy::plan::plan(set, b));
    let mut out = Vec::new();
    for (index, r) in set.rules().iter().enumerate() {
        if r.mode() != Mode::Enforce || r.action() != Action::Deny {
            continue;
        }
        let net = |k: &Kind| matches!(k, Kind::Connect | Kind::Send | Kind::Socket);
        let compiled = plan
            .as_ref()
            .is_some_and(|p| p.slots.iter().any(|s| s.index == index));
        let mut why = Vec::new();
        let other: Vec<&str> = r
            .kinds()
            .iter()
            .filter(|k| !net(k))
            .map(|k| k.as_str())
            .collect();
        if !other.is_empty() {
            if !caps.lsm {
                why.push(format!(
                    "denying {} needs BPF-LSM, which this host does not run: alerts only (action: kill stops the process)",
                    other.join(",")
                ));
            } else if !compiled {
                why.push(format!(
                    "{}: conditions the BPF-LSM hooks do not check: alerts only",
                    other.join(",")
                ));
            }
        }
        if r.kinds().iter().any(net) {
            if !caps.network_deny {
                why.push(
                    "network deny unavailable (no cgroup sock_addr hooks): alerts only".into(),
                );
            } else if !r.spec().when.unix_path.is_empty() && !caps.lsm {
                why.push(
                    "unix socket connects have no deny hook without BPF-LSM: alerts only".into(),
                );
            }
        }
        if !why.is_empty() {
            out.push(format!("{}/{}: {}", r.policy(), r.name(), why.join("; ")));
        }
    }
    out
}

pub struct Enforcer {
    pub kernel: Option<kernel::KernelEnforcer>,
    pub caps: Capabilities,
    docker_socket: Option<String>,
    /// Tainted subjects by `TAINTS` key, with why (for alerts and status).
    taints: std::collections::HashMap<u64, TaintInfo>,
}

/// Why a subject lost its network.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaintInfo {
    /// `container <name>` or `pid <n>`.
    pub subject: String,
    pub policy: std::sync::Arc<str>,
    pub rule: std::sync::Arc<str>,
    /// When the taint rule matched (RFC 3339).
    pub since: String,
    /// What was read (the event's path), when it was a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub what: Option<String>,
    /// false: this host could not enforce it (no kernel maps).
    pub enforced: bool,
}

/// Bound on the userspace record of taints (the kernel's map is an LRU).
const TAINTS_KEPT: usize = 8192;

const EPERM: i64 = -(libc::EPERM as i64);

fn result(
    outcome: Outcome,
    by: By,
    completed: Option<bool>,
    reason: Option<String>,
) -> ActionResult {
    ActionResult {
        outcome,
        by,
        syscall_completed: completed,
        reason,
        mechanism: match by {
            By::Userspace => Some(Mechanism::Userspace),
            _ => None,
        },
    }
}

fn with(mut r: ActionResult, m: Mechanism) -> ActionResult {
    r.mechanism = Some(m);
    r
}

impl Enforcer {
    pub fn new(
        kernel: Option<kernel::KernelEnforcer>,
        caps: Capabilities,
        docker_socket: Option<String>,
    ) -> Enforcer {
        Enforcer {
            kernel,
            caps,
            docker_socket,
            taints: Default::default(),
        }
    }

    /// A taint rule matched `ev`: its subject loses the network (in the
    /// kernel's map, which the sock_addr hooks read, even when the kernel
    /// already wrote it itself). Returns the reason for the alert.
    pub fn taint(&mut self, ev: &Event, d: &Decision, time: &str) -> String {
        let (keys, enforced) = match self.kernel.as_mut() {
            Some(k) if self.caps.network_deny => (k.taint(ev, &d.rule), true),
            _ => (kernel::taint_keys(ev, None), false),
        };
        let subject = match ev
            .identity
            .as_ref()
            .and_then(|i| i.container.as_ref())
            .filter(|_| {
                keys.first()
                    .is_some_and(|k| k & agentguard_common::enforce::TAINT_CGROUP != 0)
            }) {
            Some(c) => format!(
                "container {}",
                c.info.as_ref().map_or(c.id.as_ref(), |i| i.name.as_str())
            ),
            None => format!("pid {}", keys.last().copied().unwrap_or(u64::from(ev.pid))),
        };
        if self.taints.len() >= TAINTS_KEPT {
            self.taints.clear();
        }
        for k in &keys {
            self.taints.insert(
                *k,
                TaintInfo {
                    subject: subject.clone(),
                    policy: d.policy.clone(),
                    rule: d.rule.clone(),
                    since: time.to_string(),
                    what: ev.path().map(str::to_string),
                    enforced,
                },
            );
        }
        if enforced {
            format!("network taken away from {subject}: every later connect or send is refused in the kernel")
        } else {
            format!("taint of {subject} not enforced: no cgroup sock_addr hooks on this host")
        }
    }

    /// The taint `ev`'s process is under, if any (its own, its container's
    /// or an ancestor's: children inherit it in the kernel).
    pub fn tainted(&self, ev: &Event) -> Option<&TaintInfo> {
        use agentguard_common::enforce::TAINT_CGROUP;
        if self.taints.is_empty() {
            return None;
        }
        if let Some(t) = self.taints.get(&(TAINT_CGROUP | ev.cgroup_id)) {
            return Some(t);
        }
        let ancestry = ev
            .identity
            .as_ref()
            .map(|i| &i.ancestry[..])
            .unwrap_or_default();
        std::iter::once(ev.pid)
            .chain(ancestry.iter().map(|a| a.pid))
            .find_map(|p| self.taints.get(&u64::from(p)))
    }

    /// A process exited: the kernel dropped its taint, so does this record.
    pub fn forget(&mut self, pid: u32) {
        if !self.taints.is_empty() {
            self.taints.remove(&u64::from(pid));
        }
    }

    /// Drops the record of taints whose kernel entry is gone (cleared by
    /// `agentguard untaint`, or evicted).
    pub fn sync_taints(&mut self) {
        if self.taints.is_empty() {
            return;
        }
        if let Some(live) = self.kernel.as_ref().map(|k| k.taint_keys_live()) {
            self.taints.retain(|k, t| !t.enforced || live.contains(k));
        }
    }

    /// Tainted subjects now, one per subject (for `status`).
    pub fn taints(&self) -> Vec<TaintInfo> {
        let mut v: Vec<TaintInfo> = self.taints.values().cloned().collect();
        v.sort_by(|a, b| a.subject.cmp(&b.subject));
        v.dedup_by(|a, b| a.subject == b.subject);
        v
    }

    /// What the kernel did about `ev`, if it did it for this decision's rule.
    fn kernel_verdict(&self, ev: &Event, d: &Decision) -> Option<KernelAction> {
        let (Some(k), Some(a)) = (&self.kernel, &ev.kernel_action) else {
            return None;
        };
        k.slot(a.slot)
            .is_some_and(|s| s.policy() == &*d.policy && s.rule() == &*d.rule)
            .then_some(*a)
    }

    /// The rule (index in the policy set) behind a kernel verdict on `ev`:
    /// every kernel verdict is reported, even when the event as userspace
    /// sees it (a string path through a symlink, say) would not match.
    pub fn kernel_rule(&self, ev: &Event) -> Option<usize> {
        let (k, a) = (self.kernel.as_ref()?, ev.kernel_action.as_ref()?);
        k.slot(a.slot).map(|s| s.plan.index)
    }

    /// Carries out `d` for `ev`. Never blocks: a container kill is handed
    /// to the runtime after the offending process itself is killed.
    pub fn act(&mut self, ev: &Event, d: &Decision) -> ActionResult {
        // Whether the syscall took effect (the event is reported at exit).
        let completed = Some(ev.ok());
        let kv = self.kernel_verdict(ev, d);
        let hook = |a: &KernelAction| match a.hook {
            KernelHook::Lsm => Mechanism::Lsm,
            KernelHook::Tracepoint => Mechanism::Tracepoint,
        };
        if d.mode == Mode::Audit {
            let would = match d.action {
                Action::Alert => Outcome::Alerted,
                Action::Kill => Outcome::WouldKill,
                Action::Deny => Outcome::WouldDeny,
            };
            return result(would, By::None, completed, None);
        }
        match d.action {
            Action::Alert => {
                let r = result(Outcome::Alerted, By::None, completed, None);
                match kv {
                    Some(a) => with(r, hook(&a)),
                    None => r,
                }
            }
            Action::Kill => {
                if let Some(a) = kv.filter(|a| a.killed) {
                    let r = if a.denied {
                        // Refused before it took effect, then killed.
                        result(Outcome::Killed, By::Kernel, Some(false), None)
                    } else {
                        let why = ev.ok().then(|| {
                            format!(
                                "killed at {} entry; without BPF-LSM this one syscall still completed",
                                ev.syscall
                            )
                        });
                        result(Outcome::Killed, By::Kernel, completed, why)
                    };
                    let mut r = with(r, hook(&a));
                    if d.kill_scope == KillScope::Container {
                        r.reason = Some(self.kill_container(ev, r.reason.take()));
                    }
                    return r;
                }
                let mut r = self.kill_process(ev, completed);
                if kv.is_some_and(|a| a.kill_failed) {
                    // The kernel matched but could not send the signal.
                    let why = "the kernel's bpf_send_signal failed; killed from userspace after the event";
                    r.reason = Some(match r.reason.take() {
                        Some(x) => format!("{why}; {x}"),
                        None => why.into(),
                    });
                }
                // Contain what started it, as an in-kernel kill does.
                if let (Some(k), true) = (self.kernel.as_mut(), r.outcome == Outcome::Killed) {
                    let slot = k.compiled(&d.policy, &d.rule).map_or(0, |s| s.bit);
                    k.quarantine(ev.pid, ev.ppid, slot);
                }
                if d.kill_scope == KillScope::Container {
                    r.reason = Some(self.kill_container(ev, r.reason.take()));
                }
                r
            }
            Action::Deny => {
                if let Some(a) = kv.filter(|a| a.denied) {
                    return with(
                        result(Outcome::Denied, By::Kernel, Some(false), None),
                        hook(&a),
                    );
                }
                if let Some(a) = kv.filter(|a| a.killed) {
                    // No deny hook for it here (a packet socket without
                    // BPF-LSM): killed at syscall entry instead.
                    return with(
                        result(
                            Outcome::Killed,
                            By::Kernel,
                            completed,
                            Some(format!(
                                "no kernel deny hook for this on this host: killed at {} entry instead, before it could be used",
                                ev.syscall
                            )),
                        ),
                        hook(&a),
                    );
                }
                if let crate::event::Detail::Dns(dns) = &ev.detail {
                    if dns.dropped {
                        return with(
                            result(Outcome::Denied, By::Kernel, Some(false), None),
                            Mechanism::CgroupSkb,
                        );
                    }
                }
                let net = matches!(ev.kind, Kind::Connect | Kind::Send | Kind::Socket);
                let compiled = self
                    .kernel
                    .as_ref()
                    .and_then(|k| k.compiled(&d.policy, &d.rule))
                    .is_some();
                if net && compiled && self.caps.network_deny && ev.ret == EPERM {
                    let m = if ev.kind == Kind::Socket {
                        Mechanism::SockCreate
                    } else {
                        Mechanism::SockAddr
                    };
                    return with(result(Outcome::Denied, By::Kernel, Some(false), None), m);
                }
                if compiled && (net && self.caps.network_deny || self.caps.lsm) {
                    return result(
                        Outcome::Failed,
                        By::Kernel,
                        completed,
                        Some("the kernel did not refuse it: the process was not yet covered by the deny maps".into()),
                    );
                }
                let why = if net {
                    "this destination kind has no kernel deny hook here (e.g. unix sockets without BPF-LSM); alerted only"
                } else if self.caps.lsm {
                    "this rule has conditions the LSM hooks do not check; alerted only (use action: kill to stop the process)"
                } else {
                    "denying file operations needs BPF-LSM, which this kernel does not allow; alerted only (use action: kill to stop the process)"
                };
                result(Outcome::Unsupported, By::None, completed, Some(why.into()))
            }
        }
    }

    fn kill_process(&self, ev: &Event, completed: Option<bool>) -> ActionResult {
        match kill::kill_pid(ev.pid, ev.ts_ns) {
            Ok(kill::KillResult::Killed) => result(Outcome::Killed, By::Userspace, completed, None),
            Ok(kill::KillResult::Gone) => result(
                Outcome::AlreadyExited,
                By::Userspace,
                completed,
                Some("the process had exited before the kill".into()),
            ),
            Err(e) => result(
                Outcome::Failed,
                By::Userspace,
                completed,
                Some(format!("pidfd kill of {}: {e}", ev.pid)),
            ),
        }
    }

    /// Asks the container runtime to kill the event's container; returns
    /// the reason text for the alert.
    fn kill_container(&self, ev: &Event, prior: Option<String>) -> String {
        let Some(id) = ev
            .identity
            .as_ref()
            .and_then(|i| i.container.as_ref())
            .map(|c| c.id.to_string())
        else {
            return prior.unwrap_or_default() + "; no container to kill (host process)";
        };
        let socket = self.docker_socket.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return format!("container {id}: no runtime to ask Docker");
        };
        let short: String = id.chars().take(12).collect();
        rt.spawn(async move {
            let res = match DockerClient::connect(socket.as_deref()).await {
                Ok(c) => c.kill(&id).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => tracing::warn!(container = %id, "container killed by policy"),
                Err(e) => tracing::error!(container = %id, "container kill failed: {e:#}"),
            }
        });
        let head = prior.map(|p| format!("{p}; ")).unwrap_or_default();
        format!("{head}container {short} kill requested from Docker")
    }
}
