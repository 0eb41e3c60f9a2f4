//! Shared helpers for the privileged integration tests.
#![allow(dead_code)]

pub mod daemon;
pub mod dns;
pub mod evade;
pub mod model;
pub mod ready;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// True when the test may run; panics under CI=true when it can't, so a
/// privileged test never skips silently in CI.
pub fn require(what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {what} is unavailable: this test must run, not skip");
    }
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let binary = std::env::args()
        .next()
        .and_then(|a| {
            let stem = std::path::Path::new(&a)
                .file_stem()?
                .to_string_lossy()
                .into_owned();
            // cargo names test binaries NAME-HASH.
            Some(
                stem.rsplit_once('-')
                    .map_or(stem.clone(), |(n, _)| n.to_owned()),
            )
        })
        .unwrap_or_default();
    eprintln!("SKIPPED {binary}::{test}: needs {what}");
    // `cargo xtask test` counts the skips of the whole run from this ledger
    // and refuses to call a run with skips green unless asked to.
    if let Some(ledger) = std::env::var_os("AGENTGUARD_SKIP_LEDGER") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(ledger)
        {
            let _ = writeln!(f, "{binary}::{test}: needs {what}");
        }
    }
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn docker_up() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub const TEST_IMAGE: &str = "agentguard-test/busybox:1";

/// Builds the test image with `docker import` from the host's static busybox
/// (no registry is reachable here). Idempotent.
pub fn ensure_test_image() {
    // Tests of one binary run in threads: one import at a time, or two
    // would share (and delete) the same root directory mid-import.
    static IMPORT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = IMPORT.lock().unwrap_or_else(|e| e.into_inner());
    let have = Command::new("docker")
        .args(["image", "inspect", TEST_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if have {
        return;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("busybox-static must be installed (cargo xtask setup --docker installs it)");
    let root = std::env::temp_dir().join(format!("agentguard-rootfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "tmp", "data", "etc"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir rootfs");
    }
    std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    for applet in [
        "sh", "sleep", "cat", "rm", "ls", "touch", "wget", "nc", "echo", "mkdir", "true",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
            .expect("symlink applet");
    }
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -c . | docker import - {TEST_IMAGE}",
            root.display()
        ))
        .stdout(Stdio::null())
        .status()
        .expect("run docker import");
    assert!(st.success(), "docker import failed");
    let _ = std::fs::remove_dir_all(&root);
}

/// `docker ARGS`, panicking with its stderr on failure; returns stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes a container when dropped, even if the test panics.
pub struct ContainerGuard(pub String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Events as JSON lines, for assertion messages.
pub fn dump(events: &[agentguard::event::Event]) -> String {
    events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Root is needed; under CI=true its absence fails the test.
pub fn privileged() -> bool {
    require("root (to load eBPF programs)", is_root())
}

/// Root and a running Docker engine (each required as `require` says),
/// with the test image built.
pub fn docker_ready() -> bool {
    if !privileged() || !require("a running Docker engine", docker_up()) {
        return false;
    }
    ensure_test_image();
    true
}

/// The container metadata `ev` was tagged with; panics with `missing` and
/// the dump `all` when it has none.
pub fn container_info<'a>(
    ev: &'a agentguard::event::Event,
    missing: &str,
    all: &str,
) -> &'a agentguard::identity::docker::ContainerInfo {
    ev.identity
        .as_ref()
        .and_then(|i| i.container.as_ref())
        .and_then(|c| c.info.as_deref())
        .unwrap_or_else(|| panic!("{missing}:\n{all}"))
}

/// Streams tagged events through the identity stage until `done` holds or
/// `secs` pass; returns the events of container `id`.
pub async fn container_events(
    sensor: &mut agentguard::sensor::Sensor,
    stage: &mut agentguard::identity::stage::IdentityStage,
    id: &str,
    secs: u64,
    done: impl Fn(&[agentguard::event::Event]) -> bool,
) -> Vec<agentguard::event::Event> {
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let keep = |events: &mut Vec<agentguard::event::Event>, e: agentguard::event::Event| {
        if e.identity
            .as_ref()
            .and_then(|i| i.container.as_ref())
            .is_some_and(|c| &*c.id == id)
        {
            events.push(e);
        }
    };
    while Instant::now() < deadline && !done(&events) {
        let _ = tokio::time::timeout(
            Duration::from_millis(20),
            sensor.read(&mut |e: agentguard::event::Event| {
                stage.push(e, Instant::now(), &mut |x| keep(&mut events, x))
            }),
        )
        .await;
        stage.drain(Instant::now(), &mut |x| keep(&mut events, x));
    }
    stage.flush(&mut |x| keep(&mut events, x));
    events
}

/// The Docker bridge's gateway address (this machine's end of the bridge).
pub fn bridge_gateway() -> String {
    let gw = docker(&[
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
    ]);
    if !gw.is_empty() {
        return gw;
    }
    // Docker may leave the gateway out of the IPAM config when it picked the
    // subnet itself: the bridge then holds the subnet's first address.
    let subnet = docker(&[
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{(index .IPAM.Config 0).Subnet}}",
    ]);
    let net: std::net::Ipv4Addr = subnet
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no bridge gateway or subnet: {subnet:?}"));
    std::net::Ipv4Addr::from(u32::from(net) + 1).to_string()
}

/// Files under `dir`, at any depth.
pub fn count_tree(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                count_tree(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// Facts of the running kernel read without agentguard, to hold `check`'s
/// verdicts against (on the host and in the guests alike).
#[derive(Debug)]
pub struct KernelFacts {
    /// `/sys/kernel/security/lsm`: the active LSMs.
    pub lsm: String,
    /// `/sys/kernel/security/lockdown`, e.g. `none [integrity] confidentiality`.
    pub lockdown: String,
    /// The PMUs in `/sys/bus/event_source/devices`.
    pub pmus: Vec<String>,
    /// `/sys/kernel/btf/vmlinux` exists.
    pub btf: bool,
    /// A cgroup2 mount is in `/proc/self/mountinfo`.
    pub cgroup2: bool,
}

impl KernelFacts {
    /// Read here (securityfs is mounted first if it is not).
    pub fn of_this_host() -> KernelFacts {
        if !std::path::Path::new("/sys/kernel/security/lsm").exists() {
            let _ = Command::new("mount")
                .args(["-t", "securityfs", "securityfs", "/sys/kernel/security"])
                .status();
        }
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        KernelFacts {
            lsm: read("/sys/kernel/security/lsm"),
            lockdown: read("/sys/kernel/security/lockdown"),
            pmus: std::fs::read_dir("/sys/bus/event_source/devices")
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default(),
            btf: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
            cgroup2: std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains(" - cgroup2 ")),
        }
    }

    /// Shell lines printing the same facts as `AG-RESULT fact-NAME VALUE`
    /// (for a guest script with a `say` function).
    pub const SHELL: &'static str = r#"say "fact-lsm $(cat /sys/kernel/security/lsm)"
say "fact-lockdown $(cat /sys/kernel/security/lockdown)"
say "fact-pmus $(ls /sys/bus/event_source/devices | tr '\n' ' ')"
say "fact-btf $(test -e /sys/kernel/btf/vmlinux && echo 1 || echo 0)"
say "fact-cgroup2 $(grep -c ' - cgroup2 ' /proc/self/mountinfo)"
"#;

    /// From the `fact-*` results of [`KernelFacts::SHELL`]; `result` looks
    /// one up by key.
    pub fn from_results(result: impl Fn(&str) -> String) -> KernelFacts {
        KernelFacts {
            lsm: result("fact-lsm"),
            lockdown: result("fact-lockdown"),
            pmus: result("fact-pmus")
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            btf: result("fact-btf") == "1",
            cgroup2: result("fact-cgroup2").parse::<u32>().unwrap_or(0) > 0,
        }
    }

    /// Holds each verdict of `check --json` against these facts, whatever
    /// the kernel: what must follow from them, both ways where the fact
    /// decides, one way where the kernel may still refuse (BPF-LSM active
    /// but program loads refused, as on this kind of host).
    pub fn agree_with(&self, check: &serde_json::Value) {
        let probes = check["probes"].as_array().expect("probes array");
        let status = |name: &str| -> String {
            probes
                .iter()
                .find(|p| p["name"] == name)
                .and_then(|p| p["status"].as_str())
                .unwrap_or_else(|| panic!("probe {name} missing: {check}"))
                .to_owned()
        };
        let supported = |name: &str| status(name) == "supported";
        let said = |name: &str| format!("{name}: {} (facts: {self:?})", status(name));
        assert_eq!(supported("btf"), self.btf, "{}", said("btf"));
        assert_eq!(
            supported("cgroup_v2"),
            self.cgroup2,
            "{}",
            said("cgroup_v2")
        );
        assert_eq!(
            supported("kprobes"),
            self.pmus.iter().any(|p| p == "kprobe"),
            "{}",
            said("kprobes")
        );
        let bpf_lsm_active = self.lsm.split(',').any(|l| l == "bpf");
        if !bpf_lsm_active {
            assert!(!supported("bpf_lsm"), "{}", said("bpf_lsm"));
        }
        if supported("bpf_lsm") {
            assert!(bpf_lsm_active, "{}", said("bpf_lsm"));
        }
        if supported("fentry") || supported("tp_btf") {
            assert!(self.btf, "BTF programs without BTF: {check}");
        }
        if supported("sock_addr") || supported("cgroup_skb") {
            assert!(self.cgroup2, "cgroup hooks without cgroup2: {check}");
        }
        // The lockdown mode in force is the one `check` names.
        if let Some(mode) = self
            .lockdown
            .split_whitespace()
            .find(|m| m.starts_with('['))
            .map(|m| m.trim_matches(|c| c == '[' || c == ']'))
        {
            let detail = probes
                .iter()
                .find(|p| p["name"] == "lockdown")
                .and_then(|p| p["detail"].as_str())
                .unwrap_or("");
            if mode == "none" {
                assert_ne!(status("lockdown"), "unsupported", "{}", said("lockdown"));
            } else {
                assert!(detail.contains(mode), "lockdown {mode}: {detail}");
            }
        }
    }
}
