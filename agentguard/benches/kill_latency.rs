//! Kill latency: from the offending syscall's entry to the process being
//! dead (its pidfd turning readable), for the in-kernel path
//! (`bpf_send_signal` at execve entry) and the userspace path (event ->
//! policy -> pidfd kill). Needs root: `cargo bench -p agentguard --bench
//! kill_latency` (`KILL_TRIALS=N`, default 1000).
//!
//! Each trial forks a child that stamps CLOCK_BOOTTIME into a pipe right
//! before its execve of a program the policy kills; the parent waits on the
//! child's pidfd and stamps the clock when it fires. A baseline in the same
//! run measures the same fork/stamp/pidfd path with the child exiting by
//! itself at that point, so the ratio isolates what the kill adds.
//!
//! The pidfd view includes the exit teardown of a forked copy of this
//! process and the wake-up of the observer, which dwarf the kill itself.
//! So each trial is also timed on the kernel's own clock, from the probe's
//! timestamp at execve entry to the sched_process_exit record of the same
//! process (both `bpf_ktime_get_boot_ns`). Its baseline is a child that
//! execs a copy of `true` and exits by itself.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentguard::alert::Action;
use agentguard::enforcement::kernel::KernelEnforcer;
use agentguard::enforcement::{Capabilities, Enforcer};
use agentguard::event::{boot_ns, Detail, Event, Kind};
use agentguard::identity::model::{Agent, AgentSource, Identity};
use agentguard::policy::{LoadOptions, PolicySet};
use agentguard::sensor::{Sensor, SensorOptions};

/// Forks a child that writes its pre-exec timestamp to a pipe and then
/// execs `prog` (or, with `None`, exits at once); returns (pid, pidfd, rfd).
fn spawn(prog: Option<&CString>, args: &[CString]) -> (i32, i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: valid array of two fds.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: the child only calls async-signal-safe functions (clock,
    // write, execve, _exit) before exec.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let t = boot_ns();
        // SAFETY: as above; writes 8 bytes from a local.
        unsafe {
            libc::write(fds[1], (&t as *const u64).cast(), 8);
            if let Some(p) = prog {
                libc::execve(p.as_ptr(), argv.as_ptr(), envp.as_ptr());
            }
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end; pidfd_open takes no memory.
    unsafe { libc::close(fds[1]) };
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    assert!(pidfd >= 0, "pidfd_open");
    (pid, pidfd, fds[0])
}

/// Waits for the child to die; returns (start stamp, death stamp, signal).
fn reap(pid: i32, pidfd: i32, rfd: i32, mut pump: impl FnMut()) -> (u64, u64, i32) {
    let mut start = 0u64;
    if rfd >= 0 {
        // SAFETY: reading 8 bytes into a local.
        let n = unsafe { libc::read(rfd, (&mut start as *mut u64).cast(), 8) };
        assert_eq!(n, 8);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let mut p = libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; zero timeout while we pump events.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        if r > 0 {
            break boot_ns();
        }
        pump();
        assert!(Instant::now() < deadline, "child {pid} never died");
    };
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
        libc::close(pidfd);
        if rfd >= 0 {
            libc::close(rfd);
        }
    }
    let sig = if libc::WIFSIGNALED(status) {
        libc::WTERMSIG(status)
    } else {
        0
    };
    (start, dead, sig)
}

/// Records the kernel timestamps of a child's exec entry and its exit.
fn stamp(stamps: &mut HashMap<u32, (u64, u64)>, e: &Event) {
    match e.kind {
        // An exec starts a fresh pair: a recycled pid's old exit is stale.
        Kind::Exec => {
            stamps.insert(e.pid, (e.ts_ns, 0));
        }
        Kind::Exit => stamps.entry(e.pid).or_default().1 = e.ts_ns,
        _ => {}
    }
}

/// Latencies on the kernel's clock: execve entry -> sched_process_exit.
#[derive(Default)]
struct KernelClock {
    baseline: Vec<u64>,
    kernel: Vec<u64>,
    user: Vec<u64>,
    missed: usize,
}

impl KernelClock {
    /// Reads events until both stamps of `pid` are in (bounded), then files
    /// the difference under the series `pick` selects.
    async fn wait(
        &mut self,
        sensor: &mut Sensor,
        stamps: &mut HashMap<u32, (u64, u64)>,
        pid: i32,
        pick: impl Fn(&mut Self) -> &mut Vec<u64>,
    ) {
        let pid = pid as u32;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(&(exec, exit)) = stamps.get(&pid) {
                if exec != 0 && exit != 0 {
                    stamps.remove(&pid);
                    pick(self).push(exit.saturating_sub(exec));
                    return;
                }
            }
            if Instant::now() > deadline {
                stamps.remove(&pid);
                self.missed += 1;
                return;
            }
            let mut on_event = |e: Event| stamp(stamps, &e);
            let _ =
                tokio::time::timeout(Duration::from_millis(5), sensor.read(&mut on_event)).await;
        }
    }

    fn report(&mut self) {
        if self.baseline.is_empty() {
            println!("kernel clock: no baseline trial completed");
            return;
        }
        let b = pct(&mut self.baseline, 0.5);
        println!("kernel clock (execve entry -> sched_process_exit, bpf_ktime_get_boot_ns):");
        report("baseline (exec true)", &mut self.baseline, b);
        if !self.kernel.is_empty() {
            report("in-kernel kill", &mut self.kernel, b);
        }
        if !self.user.is_empty() {
            report("userspace kill", &mut self.user, b);
        }
        if self.missed > 0 {
            println!("{} trials had no exec or exit record in 5 s", self.missed);
        }
    }
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn report(name: &str, v: &mut [u64], base: u64) {
    let p50 = pct(v, 0.50);
    let p99 = pct(v, 0.99);
    println!(
        "{name:<24} n={:<5} p50 {:>8.1} µs  p99 {:>8.1} µs  (p50 x{:.2} of baseline)",
        v.len(),
        p50 as f64 / 1e3,
        p99 as f64 / 1e3,
        p50 as f64 / base.max(1) as f64
    );
}

fn victim(dir: &Path, from: &str) -> CString {
    let p = dir.join("victim");
    std::fs::copy(from, &p).unwrap_or_else(|e| panic!("copy {from}: {e}"));
    CString::new(p.as_os_str().as_encoded_bytes()).expect("path")
}

fn write_policy(dir: &Path, kernel_dir: &Path, user_dir: &Path) -> PathBuf {
    let pol = dir.join("policies");
    std::fs::create_dir_all(&pol).expect("mkdir");
    let yaml = format!(
        r#"name: killbench
mode: enforce
rules:
  - name: kernel-kill
    kinds: [exec]
    when: {{ exec: "{k}/**" }}
    action: kill
    severity: high
    message: "exec of {{path}}"
  - name: user-kill
    kinds: [exec]
    # The argv condition keeps this rule out of the kernel maps.
    when: {{ exec: "{u}/**", argv: ["^60$"] }}
    action: kill
    severity: high
    message: "exec of {{path}}"
"#,
        k = kernel_dir.display(),
        u = user_dir.display()
    );
    let mut f = std::fs::File::create(pol.join("killbench.yaml")).expect("create");
    f.write_all(yaml.as_bytes()).expect("write");
    pol
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("kill_latency needs root (it loads the eBPF programs); skipped");
        return;
    }
    let trials: usize = std::env::var("KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let base = std::env::temp_dir().join(format!("agentguard-killbench-{}", std::process::id()));
    let kdir = base.join("k");
    let udir = base.join("u");
    std::fs::create_dir_all(&kdir).expect("mkdir");
    std::fs::create_dir_all(&udir).expect("mkdir");
    let tdir = base.join("t");
    std::fs::create_dir_all(&tdir).expect("mkdir");
    let kprog = victim(&kdir, "/bin/sleep");
    let uprog = victim(&udir, "/bin/sleep");
    let tprog = victim(&tdir, "/bin/true");
    let args = [
        CString::new("victim").unwrap_or_default(),
        CString::new("60").unwrap_or_default(),
    ];
    let pol = write_policy(&base, &kdir, &udir);
    let set = PolicySet::load_dir_with(&pol, &LoadOptions::default()).expect("policy");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut sensor = Sensor::start(&SensorOptions {
            kinds: vec![Kind::Exec, Kind::Fork, Kind::Exit],
            watch_all: false,
            ..SensorOptions::default()
        })
        .expect("sensor");
        let mut kernel =
            KernelEnforcer::new(&mut sensor, agentguard::policy::plan::Backend::Tracepoint)
                .expect("maps");
        kernel.install(&set, &mut sensor).expect("install");
        assert_eq!(kernel.slots().len(), 1, "only kernel-kill compiles");
        // The daemon's wake-ups: records a userspace kill rule needs wake
        // the reader at once, as `run` sets them from the same plan.
        let sp =
            agentguard::policy::stream::stream_plan(&set, Some((kernel.plan(), kernel.backend())));
        assert_ne!(sp.urgent, 0, "user-kill wakes the reader");
        sensor
            .set_config(agentguard_common::filter::config::URGENT_KINDS, sp.urgent)
            .expect("urgent kinds");
        // Cover this process: its children inherit the rule mask at fork.
        let me = std::process::id();
        let mut ev = Event {
            // Now: the enforcer writes a task entry only for an event no
            // older than the process (a pid reused since is another's).
            ts_ns: boot_ns(),
            kind: Kind::Exec,
            syscall: "execve".into(),
            pid: me,
            tid: me,
            ppid: 1,
            uid: 0,
            gid: 0,
            comm: "kill_latency".into(),
            cgroup_id: 0,
            ret: 0,
            error: None,
            kernel_action: None,
            detail: Detail::Fork(agentguard::event::ForkDetail {
                map_full: None,
                child_pid: 0,
                clone_flags: 0,
            }),
            // This process as the agent (as ancestry would name it): the
            // kernel then never quarantines it for a child's kill.
            identity: Some(Identity {
                agent: Some(std::sync::Arc::new(Agent {
                    name: "bench".into(),
                    session: None,
                    source: AgentSource::Ancestry,
                    pid: Some(me),
                    runner: None,
                })),
                ..Identity::host()
            }),
        };
        ev.kind = Kind::Fork;
        kernel.observe(&ev, &set);
        // Children stream their exec (userspace path) and exit (kernel-clock
        // timing) via the task filter, inherited at fork.
        sensor
            .set_filter(me, &[Kind::Exec, Kind::Exit])
            .expect("filter");
        let mut enforcer = Enforcer::new(
            Some(kernel),
            Capabilities {
                kernel_kill: true,
                network_deny: false,
                lsm: false,
                dns: false,
            },
            None,
        );

        let mut baseline = Vec::with_capacity(trials);
        let mut kernel_lat = Vec::with_capacity(trials);
        let mut user_lat = Vec::with_capacity(trials);
        let mut decisions = Vec::new();
        let mut failures = 0usize;
        // Kernel clock: pid -> (execve entry, sched_process_exit).
        let mut stamps: HashMap<u32, (u64, u64)> = HashMap::new();
        let mut kclock = KernelClock::default();
        for i in 0..trials * 4 {
            match i % 4 {
                0 => {
                    let (pid, fd, r) = spawn(None, &args);
                    let (s, d, _) = reap(pid, fd, r, || {});
                    baseline.push(d.saturating_sub(s));
                }
                1 => {
                    let (pid, fd, r) = spawn(Some(&kprog), &args);
                    let (s, d, sig) = reap(pid, fd, r, || {});
                    if sig == libc::SIGKILL {
                        kernel_lat.push(d.saturating_sub(s));
                        kclock
                            .wait(&mut sensor, &mut stamps, pid, |k| &mut k.kernel)
                            .await;
                    } else {
                        failures += 1;
                    }
                }
                2 => {
                    let (pid, fd, r) = spawn(Some(&tprog), &args[..1]);
                    let _ = reap(pid, fd, r, || {});
                    kclock
                        .wait(&mut sensor, &mut stamps, pid, |k| &mut k.baseline)
                        .await;
                }
                _ => {
                    let (pid, fd, r) = spawn(Some(&uprog), &args);
                    let mut start = 0u64;
                    // SAFETY: reading 8 bytes into a local.
                    let n = unsafe { libc::read(r, (&mut start as *mut u64).cast(), 8) };
                    assert_eq!(n, 8);
                    let deadline = Instant::now() + Duration::from_secs(10);
                    // The daemon's loop: read events, decide, act.
                    loop {
                        let mut killed = false;
                        let mut on_event = |e: Event| {
                            stamp(&mut stamps, &e);
                            decisions.clear();
                            set.evaluate(&e, &mut decisions);
                            for d in &decisions {
                                if d.action == Action::Kill {
                                    let _ = enforcer.act(&e, d);
                                    // Events of earlier (kernel-path) trials
                                    // also arrive here; only ours counts.
                                    killed |= e.pid == pid as u32;
                                }
                            }
                        };
                        let _ = tokio::time::timeout(
                            Duration::from_millis(5),
                            sensor.read(&mut on_event),
                        )
                        .await;
                        if killed || Instant::now() > deadline {
                            break;
                        }
                    }
                    let (_, d, sig) = reap(pid, fd, -1, || {});
                    if sig == libc::SIGKILL {
                        user_lat.push(d.saturating_sub(start));
                        kclock
                            .wait(&mut sensor, &mut stamps, pid, |k| &mut k.user)
                            .await;
                    } else {
                        failures += 1;
                    }
                    // SAFETY: closing the pipe's read end once.
                    unsafe { libc::close(r) };
                }
            }
        }
        let b = pct(&mut baseline, 0.5);
        println!("kill latency, {trials} trials each (syscall entry -> pidfd readable):");
        report("baseline (exit itself)", &mut baseline, b);
        if !kernel_lat.is_empty() {
            report("in-kernel kill", &mut kernel_lat, b);
        }
        if !user_lat.is_empty() {
            report("userspace kill", &mut user_lat, b);
        }
        kclock.report();
        if failures > 0 {
            println!("{failures} trials were not killed (see above)");
        }
    });
    let _ = std::fs::remove_dir_all(&base);
}
