//! The daemon under test: `agentguard run` started with a policy
//! directory, its alerts file, status socket and log in a directory of its
//! own; started only once its ready file exists.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_agentguard");

/// The daemon pins its state in one bpffs directory: one at a time per
/// test binary (cargo runs the binaries one after another).
pub static ONE_DAEMON: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes the one-daemon lock (a test that panicked holding it poisons it,
/// which says nothing about the next one).
pub fn one_daemon() -> std::sync::MutexGuard<'static, ()> {
    ONE_DAEMON.lock().unwrap_or_else(|p| p.into_inner())
}

/// The default policy pack.
pub fn pack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// `agentguard run --cleanup`: no pinned state left from a test before.
pub fn cleanup() {
    let st = Command::new(BIN)
        .args(["run", "--cleanup"])
        .stderr(Stdio::null())
        .status()
        .expect("run --cleanup");
    assert!(st.success());
}

/// Spawns `cmd` (an agentguard subcommand that takes `--ready-file`) and
/// waits until it is ready; panics saying why not, with `log` (its stderr
/// file) if given. The one way the tests start a daemon.
pub fn spawn_ready(cmd: &mut Command, ready: &Path, log: Option<&Path>) -> Child {
    super::ready::ready_file_arg(cmd, ready);
    let mut child = cmd.spawn().expect("spawn agentguard");
    let looked = super::ready::wait_ready(&mut child, Duration::from_secs(60), || {
        if ready.exists() {
            super::ready::Look::Ready
        } else {
            super::ready::Look::NotYet
        }
    });
    if let Err(why) = looked {
        let _ = child.kill();
        let _ = child.wait();
        let log = log
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default();
        panic!("{cmd:?}: {why}\n{log}");
    }
    child
}

pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
}

impl Daemon {
    pub fn start(policies: &Path, tag: &str) -> Daemon {
        Self::start_with(policies, tag, None)
    }

    /// With a configuration file holding `config` (YAML).
    pub fn start_with(policies: &Path, tag: &str, config: Option<&str>) -> Daemon {
        Self::start_args(policies, tag, config, &[])
    }

    /// With `config` and extra `run` flags.
    pub fn start_args(policies: &Path, tag: &str, config: Option<&str>, extra: &[&str]) -> Daemon {
        Self::start_env(policies, tag, config, extra, &[])
    }

    /// With `config`, extra `run` flags and environment variables.
    pub fn start_env(
        policies: &Path,
        tag: &str,
        config: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = std::env::temp_dir().join(format!("agentguard-enf-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let ready = dir.join("ready");
        let mut cmd = Command::new(BIN);
        cmd.envs(env.iter().copied());
        cmd.args(["run", "--policies"]).arg(policies);
        if let Some(c) = config {
            std::fs::write(dir.join("config.yaml"), c).expect("write config");
            cmd.arg("--config").arg(dir.join("config.yaml"));
        }
        cmd.args(extra)
            .arg("--alerts-file")
            .arg(dir.join("alerts.jsonl"))
            .arg("--status-socket")
            .arg(dir.join("status.sock"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).expect("log"));
        let child = spawn_ready(&mut cmd, &ready, Some(&dir.join("daemon.log")));
        Daemon { child, dir }
    }

    /// The daemon's status counters (`agentguard status --json`).
    pub fn counters(&self) -> serde_json::Value {
        self.status()["counters"].clone()
    }

    /// `agentguard status --json`, whole.
    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(BIN)
            .args(["status", "--json", "--socket"])
            .arg(self.dir.join("status.sock"))
            .output()
            .expect("agentguard status");
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn alerts(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("alerts.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (bounded) for an alert of `rule` matching `pred`.
    pub fn wait_alert(
        &self,
        rule: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(a) = self
                .alerts()
                .into_iter()
                .find(|a| a["decision"]["rule"] == rule && pred(a))
            {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "no {rule} alert; alerts: {:?}\ncounters: {}\nlog:\n{}",
                self.alerts(),
                self.counters(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
