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
}

pub struct Enforcer {
    pub kernel: Option<kernel::KernelEnforcer>,
    pub caps: Capabilities,
    docker_socket: Option<String>,
}

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
        }
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
