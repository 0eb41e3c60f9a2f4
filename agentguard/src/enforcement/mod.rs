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
use crate::alert::{ActionResult, Decision, Enforcer as By, KillScope, Mode, Outcome};
use crate::event::{Event, Kind};
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
    }
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

    /// The kernel slot that acted on `ev`, if it was this decision's rule.
    fn kernel_killed(&self, ev: &Event, d: &Decision) -> bool {
        let (Some(k), Some(a)) = (&self.kernel, &ev.kernel_action) else {
            return false;
        };
        a.killed
            && k.slot(a.slot)
                .is_some_and(|s| s.policy == d.policy && s.rule == d.rule)
    }

    /// Carries out `d` for `ev`. Never blocks: a container kill is handed
    /// to the runtime after the offending process itself is killed.
    pub fn act(&mut self, ev: &Event, d: &Decision) -> ActionResult {
        // Whether the syscall took effect (the event is reported at exit).
        let completed = Some(ev.ok());
        if d.mode == Mode::Audit {
            let would = match d.action {
                Action::Alert => Outcome::Alerted,
                Action::Kill => Outcome::WouldKill,
                Action::Deny => Outcome::WouldDeny,
            };
            return result(would, By::None, completed, None);
        }
        match d.action {
            Action::Alert => result(Outcome::Alerted, By::None, completed, None),
            Action::Kill => {
                if self.kernel_killed(ev, d) {
                    let why = (ev.ok() && !self.caps.lsm).then(|| {
                        format!(
                            "killed at {} entry; without BPF-LSM this one syscall still completed",
                            ev.syscall
                        )
                    });
                    let mut r = result(Outcome::Killed, By::Kernel, completed, why);
                    if d.kill_scope == KillScope::Container {
                        r.reason = Some(self.kill_container(ev, r.reason.take()));
                    }
                    return r;
                }
                let mut r = self.kill_process(ev, completed);
                if d.kill_scope == KillScope::Container {
                    r.reason = Some(self.kill_container(ev, r.reason.take()));
                }
                r
            }
            Action::Deny => {
                let net = matches!(ev.kind, Kind::Connect | Kind::Send);
                let compiled = self
                    .kernel
                    .as_ref()
                    .and_then(|k| k.compiled(&d.policy, &d.rule))
                    .is_some();
                if net && compiled && self.caps.network_deny {
                    if ev.ret == EPERM {
                        result(Outcome::Denied, By::Kernel, Some(false), None)
                    } else {
                        result(
                            Outcome::Failed,
                            By::Kernel,
                            completed,
                            Some("the kernel did not refuse it: the process was not yet covered by the deny maps".into()),
                        )
                    }
                } else {
                    let why = if net {
                        "this destination kind has no kernel deny hook here (e.g. unix sockets); alerted only"
                    } else {
                        "denying file operations needs BPF-LSM, which this kernel does not allow; alerted only (use action: kill to stop the process)"
                    };
                    result(Outcome::Unsupported, By::None, completed, Some(why.into()))
                }
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
