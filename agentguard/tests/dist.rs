//! What users install, installed and run as they would: the `.deb` of
//! `cargo xtask dist` in a clean Debian system made the same way as the
//! image's, and the image started with exactly the DaemonSet's privileges
//! and mounts, guarding this host. `cargo xtask test` builds the artefacts
//! before the tests run.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize as _;
use serde_json::Value;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const BASE_IMAGE: &str = "agentguard-test/debian:bookworm";
const PIN_DIR: &str = "/sys/fs/bpf/agentguard";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dist() -> PathBuf {
    std::env::var_os("AGENTGUARD_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/dist"))
}

fn deb() -> PathBuf {
    dist().join(format!("agentguard_{VERSION}_amd64.deb"))
}

fn dbgsym() -> PathBuf {
    dist().join(format!("agentguard-dbgsym_{VERSION}_amd64.deb"))
}

fn image_archive() -> PathBuf {
    dist().join(format!("agentguard-image_{VERSION}_amd64.tar.gz"))
}

fn base_rootfs() -> PathBuf {
    dist().join("cache/debian-bookworm-minbase.tar")
}

/// Root, Docker, and the artefacts of `cargo xtask dist`.
fn ready() -> bool {
    if !common::docker_ready() {
        return false;
    }
    let have = [deb(), dbgsym(), image_archive(), base_rootfs()]
        .iter()
        .all(|p| p.exists());
    common::require(
        "the artefacts of `cargo xtask dist` in target/dist (cargo xtask test builds them)",
        have,
    )
}

/// `sh -c script` in container `name`: (success, stdout + stderr).
fn exec(name: &str, script: &str) -> (bool, String) {
    let out = Command::new("docker")
        .args(["exec", name, "sh", "-c", script])
        .output()
        .expect("docker exec");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn exec_ok(name: &str, script: &str) -> String {
    let (ok, out) = exec(name, script);
    assert!(ok, "`{script}` failed in {name}:\n{out}");
    out
}

/// The Debian base the image is made of, as a local image (no registry).
fn base_image() {
    let have = Command::new("docker")
        .args(["image", "inspect", BASE_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        common::docker(&[
            "import",
            base_rootfs().to_str().expect("utf8 path"),
            BASE_IMAGE,
        ]);
    }
}

/// A file's ELF section names (`readelf -S`).
fn sections(file: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-SW")
        .arg(file)
        .output()
        .expect("readelf");
    assert!(out.status.success(), "readelf -S {}", file.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_package_installs_runs_and_purges_in_a_clean_debian() {
    if !ready() {
        return;
    }
    // The split: the packaged binary has no DWARF; the -dbgsym package has
    // it under the binary's build id.
    let x = std::env::temp_dir().join(format!("agentguard-debx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&x);
    for p in [deb(), dbgsym()] {
        let st = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&p)
            .arg(&x)
            .status()
            .expect("dpkg-deb -x");
        assert!(st.success());
    }
    let bin = x.join("usr/bin/agentguard");
    assert!(
        !sections(&bin).contains(".debug_info"),
        "the packaged binary carries DWARF"
    );
    let notes = Command::new("readelf")
        .arg("-n")
        .arg(&bin)
        .output()
        .expect("readelf -n");
    let notes = String::from_utf8_lossy(&notes.stdout).into_owned();
    let id = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("build id")
        .trim()
        .to_owned();
    let debug = x.join(format!(
        "usr/lib/debug/.build-id/{}/{}.debug",
        &id[..2],
        &id[2..]
    ));
    assert!(
        sections(&debug).contains(".debug_info"),
        "{} has no DWARF",
        debug.display()
    );
    let _ = std::fs::remove_dir_all(&x);

    base_image();
    let name = format!("agtest-deb-{}", std::process::id());
    let _c = common::ContainerGuard(name.clone());
    let dist = format!("{}:/dist:ro", dist().display());
    // No network: the install needs nothing but the package and Debian's
    // libc, already in the base.
    common::docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "-v",
        &dist,
        BASE_IMAGE,
        "sleep",
        "600",
    ]);

    let deb_in = format!("/dist/{}", deb().file_name().unwrap().to_string_lossy());
    let dbg_in = format!("/dist/{}", dbgsym().file_name().unwrap().to_string_lossy());
    let out = exec_ok(&name, &format!("apt-get install -y {deb_in} {dbg_in}"));
    assert!(
        out.contains("enabled for the next boot"),
        "postinst said nothing about the unit: {out}"
    );
    // Files in place, root's, not writable by others (the daemon refuses
    // anything else for its config and policies).
    let owners = exec_ok(
        &name,
        "stat -c '%U:%G %a %n' /usr/bin/agentguard /lib/systemd/system/agentguard.service \
         /etc/agentguard/config.yaml /etc/agentguard/policies /etc/agentguard/policies/*.yaml",
    );
    for line in owners.lines() {
        assert!(line.starts_with("root:root "), "{line}");
        let mode = line.split_whitespace().nth(1).expect("mode");
        let mode = u32::from_str_radix(mode, 8).expect("octal mode");
        assert_eq!(mode & 0o022, 0, "writable by group or others: {line}");
    }
    assert!(owners.contains("755 /usr/bin/agentguard"), "{owners}");
    let link = exec_ok(
        &name,
        "readlink /etc/systemd/system/multi-user.target.wants/agentguard.service",
    );
    assert_eq!(link.trim(), "/lib/systemd/system/agentguard.service");
    let unit = exec_ok(&name, "cat /lib/systemd/system/agentguard.service");
    assert!(
        unit.contains("ExecStart=/usr/bin/agentguard run --config /etc/agentguard/config.yaml"),
        "{unit}"
    );
    let conffiles = exec_ok(&name, "cat /var/lib/dpkg/info/agentguard.conffiles");
    for f in [
        "/etc/agentguard/config.yaml",
        "/etc/agentguard/policies/files.yaml",
        "/etc/agentguard/policies/tests/files.yaml",
    ] {
        assert!(conffiles.lines().any(|l| l == f), "{f} not a conffile");
    }
    let gdb_path = exec_ok(&name, "ls /usr/lib/debug/.build-id/*/*.debug");
    assert!(gdb_path.contains(&id[2..]), "{gdb_path}");

    // The installed binary runs: it reports this kernel (unprivileged in
    // this container, so honestly without the probes), and the installed
    // pack passes its own tests with the installed config.
    let check = exec_ok(&name, "agentguard check");
    assert!(
        check.contains("enforcement backend:") && check.contains("event sensor"),
        "{check}"
    );
    let tests = exec_ok(&name, "agentguard policy test /etc/agentguard/policies");
    assert!(
        tests.contains(" passed, 0 failed"),
        "the installed pack fails its tests: {tests}"
    );
    let lint = exec_ok(
        &name,
        "agentguard policy lint /etc/agentguard/policies && \
         agentguard run --config /etc/agentguard/config.yaml --help >/dev/null",
    );
    assert!(!lint.contains("error"), "{lint}");

    // Purge takes everything but the alerts it wrote.
    exec_ok(&name, "apt-get purge -y agentguard-dbgsym agentguard");
    let (_, left) = exec(
        &name,
        "ls -d /usr/bin/agentguard /etc/agentguard /lib/systemd/system/agentguard.service \
         /etc/systemd/system/multi-user.target.wants/agentguard.service \
         /usr/lib/debug/.build-id/*/*.debug 2>/dev/null; true",
    );
    assert_eq!(left.trim(), "", "left after purge: {left}");
}

/// Every document of a multi-document YAML file, as JSON values.
fn yaml_docs(p: &Path) -> Vec<Value> {
    let src = std::fs::read_to_string(p).expect("read daemonset.yaml");
    serde_norway::Deserializer::from_str(&src)
        .map(|d| Value::deserialize(d).expect("yaml"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `docker run` arguments giving the image exactly what the DaemonSet's
/// pod gives it: its security context (capabilities, seccomp, AppArmor,
/// user, privileged or not), host PID namespace, each hostPath volume at
/// its mount path (read-only and propagation as declared), the config
/// from its ConfigMap, the default pack as the policies ConfigMap, its env,
/// command and args. Returns the arguments (image and command excluded)
/// and the command line (entrypoint first).
fn daemonset_run_args(scratch: &Path) -> (Vec<String>, Vec<String>) {
    let docs = yaml_docs(&repo().join("deploy/kubernetes/daemonset.yaml"));
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let mut args: Vec<String> = vec![];
    let sc = &c["securityContext"];
    if sc["privileged"] == true {
        args.push("--privileged".into());
    }
    for cap in sc["capabilities"]["drop"].as_array().into_iter().flatten() {
        args.push(format!("--cap-drop={}", cap.as_str().expect("cap")));
    }
    for cap in sc["capabilities"]["add"].as_array().into_iter().flatten() {
        args.push(format!("--cap-add={}", cap.as_str().expect("cap")));
    }
    if sc["seccompProfile"]["type"] == "Unconfined" {
        args.push("--security-opt=seccomp=unconfined".into());
    }
    if sc["appArmorProfile"]["type"] == "Unconfined" {
        args.push("--security-opt=apparmor=unconfined".into());
    }
    if let Some(uid) = sc["runAsUser"].as_u64() {
        args.push(format!("--user={uid}"));
    }
    if pod["hostPID"] == true {
        args.push("--pid=host".into());
    }
    if pod["hostNetwork"] == true {
        args.push("--network=host".into());
    }
    for e in c["env"].as_array().into_iter().flatten() {
        args.push("-e".into());
        args.push(format!(
            "{}={}",
            e["name"].as_str().expect("env name"),
            e["value"].as_str().unwrap_or("")
        ));
    }
    let volumes = pod["volumes"].as_array().expect("volumes");
    for m in c["volumeMounts"].as_array().expect("volumeMounts") {
        let vname = m["name"].as_str().expect("mount name");
        let target = m["mountPath"].as_str().expect("mountPath");
        let v = volumes
            .iter()
            .find(|v| v["name"] == vname)
            .unwrap_or_else(|| panic!("no volume {vname}"));
        let source: PathBuf = if let Some(host) = v["hostPath"]["path"].as_str() {
            let host = PathBuf::from(host);
            match v["hostPath"]["type"].as_str().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&host).expect("mkdir hostPath"),
                // Type "": no check, and a runtime socket may be absent on
                // a node (this host runs Docker without a system containerd).
                _ if !host.exists() => {
                    eprintln!("hostPath {} absent here: not mounted", host.display());
                    continue;
                }
                _ => {}
            }
            host
        } else if let Some(cm) = v["configMap"]["name"].as_str() {
            let data = &docs
                .iter()
                .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == cm)
                .unwrap_or_else(|| panic!("no ConfigMap {cm}"))["data"];
            if cm == "agentguard-policies" {
                // What the manifest says to load into it: the pack.
                repo().join("policies")
            } else {
                let dir = scratch.join(cm);
                std::fs::create_dir_all(&dir).expect("mkdir");
                for (k, val) in data.as_object().expect("ConfigMap data") {
                    std::fs::write(dir.join(k), val.as_str().expect("string data"))
                        .expect("write ConfigMap file");
                }
                match m["subPath"].as_str() {
                    Some(sub) => dir.join(sub),
                    None => dir,
                }
            }
        } else {
            panic!("volume {vname}: neither hostPath nor configMap");
        };
        let mut spec = format!(
            "type=bind,source={},target={target}",
            source.canonicalize().expect("canonical source").display()
        );
        if m["readOnly"] == true {
            spec.push_str(",readonly");
        }
        match m["mountPropagation"].as_str() {
            Some("Bidirectional") => spec.push_str(",bind-propagation=rshared"),
            Some("HostToContainer") => spec.push_str(",bind-propagation=rslave"),
            _ => {}
        }
        args.push("--mount".into());
        args.push(spec);
    }
    let mut cmdline: Vec<String> = c["command"]
        .as_array()
        .expect("command")
        .iter()
        .map(|a| a.as_str().expect("string").to_owned())
        .collect();
    cmdline.extend(
        c["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("string").to_owned()),
    );
    (args, cmdline)
}

fn run_guard(name: &str, run: &[String], cmdline: &[String], detach: bool) -> String {
    let image = format!("agentguard:{VERSION}");
    let mut cmd = Command::new("docker");
    cmd.arg("run");
    if detach {
        cmd.arg("-d");
    } else {
        cmd.arg("--rm");
    }
    cmd.args(["--name", name])
        .args(run)
        .arg("--entrypoint")
        .arg(&cmdline[0])
        .arg(&image)
        .args(&cmdline[1..]);
    let out = cmd.output().expect("docker run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "docker run {image}: {text}");
    text
}

fn logs(name: &str) -> (String, String) {
    let out = Command::new("docker")
        .args(["logs", name])
        .output()
        .expect("docker logs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `GET path` on `addr`: the status line and body.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: agentguard\r\n\r\n").expect("send");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// The host's bpffs at /sys/fs/bpf, shared, as systemd leaves it on a
/// node (this host has no systemd): the pins must land in the host's
/// bpffs to outlive the pod, and the pod's HostToContainer mount of it
/// needs a shared source.
fn host_bpffs_shared() {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some("/sys/fs/bpf") && l.contains(" - bpf "));
    if !mounted {
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status()
            .expect("mount bpffs");
        assert!(st.success(), "mount -t bpf bpf /sys/fs/bpf");
    }
    let st = Command::new("mount")
        .args(["--make-shared", "/sys/fs/bpf"])
        .status()
        .expect("mount --make-shared");
    assert!(st.success(), "mount --make-shared /sys/fs/bpf");
}

#[test]
fn the_image_guards_the_host_with_the_daemonsets_privileges() {
    if !ready() {
        return;
    }
    let _one = common::daemon::one_daemon();
    common::daemon::cleanup();
    let image = format!("agentguard:{VERSION}");
    // The archive, not an image left by the build.
    let _ = Command::new("docker")
        .args(["rmi", "-f", &image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let loaded = common::docker(&["load", "-i", image_archive().to_str().expect("utf8")]);
    assert!(loaded.contains(&image), "{loaded}");
    host_bpffs_shared();

    let pid = std::process::id();
    let scratch = std::env::temp_dir().join(format!("agentguard-dist-{pid}"));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("mkdir");
    let (run, cmdline) = daemonset_run_args(&scratch);
    let guard = format!("agtest-guard-{pid}");
    let _g = common::ContainerGuard(guard.clone());
    run_guard(&guard, &run, &cmdline, true);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, err) = logs(&guard);
        if err.contains("agentguard: running with") {
            break;
        }
        let running = common::docker(&["inspect", "-f", "{{.State.Running}}", &guard]);
        assert!(
            running == "true" && Instant::now() < deadline,
            "the image's daemon did not start:\n{err}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // The liveness probe's endpoint answers on the declared port.
    let ip = common::docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &guard,
    ]);
    let metrics = http_get(&format!("{ip}:9477"), "/metrics");
    assert!(
        metrics.starts_with("HTTP/1.") && metrics.contains(" 200 "),
        "{metrics}"
    );
    assert!(metrics.contains("agentguard_build_info"), "{metrics}");

    // An agent container that stays up (its pinned deny is checked after
    // the guard stops), and one that wipes its volume.
    let gw = common::bridge_gateway();
    let idle = format!("agtest-idle-{pid}");
    let _i = common::ContainerGuard(idle.clone());
    common::docker(&[
        "run",
        "-d",
        "--name",
        &idle,
        "--label",
        "agentguard.io/agent=claude",
        common::TEST_IMAGE,
        "sleep",
        "600",
    ]);
    let vol = scratch.join("vol");
    std::fs::create_dir_all(&vol).expect("mkdir vol");
    for i in 0..50 {
        std::fs::write(vol.join(format!("f{i:03}")), b"data").expect("write");
    }
    let wiper = format!("agtest-wipe-{pid}");
    let _w = common::ContainerGuard(wiper.clone());
    let out = Command::new("docker")
        .args([
            "run",
            "--name",
            &wiper,
            "--label",
            "agentguard.io/agent=claude",
            "-v",
        ])
        .arg(format!("{}:/data", vol.display()))
        .args([
            common::TEST_IMAGE,
            "sh",
            "-c",
            "sleep 1; rm -rf /data/*; echo rm-exit=$?",
        ])
        .output()
        .expect("docker run");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let left = std::fs::read_dir(&vol).map(|d| d.count()).unwrap_or(0);
    assert!(left >= 49, "{} files lost: {out}", 50 - left);
    assert!(out.contains("rm-exit=137"), "rm was not killed: {out}");

    // The alert is in the image's output (stdout, JSON lines).
    let deadline = Instant::now() + Duration::from_secs(20);
    let alert = loop {
        let (stdout, _) = logs(&guard);
        let found = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|a| a["decision"]["rule"] == "volume-removal");
        if let Some(a) = found {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no volume-removal alert in the image's output:\n{stdout}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(alert["result"]["outcome"], "killed", "{alert}");
    assert_eq!(
        alert["event"]["identity"]["container"]["info"]["name"],
        wiper.as_str(),
        "{alert}"
    );
    assert_eq!(alert["event"]["identity"]["agent"]["name"], "claude");

    let connect = format!("nc -w 1 {gw} 9 </dev/null; echo nc-exit=$?");
    let denied = exec(&idle, &connect).1;
    assert!(
        denied.contains("Operation not permitted"),
        "agent egress not denied under the image: {denied}"
    );

    // Stopped, the guard leaves its denies pinned (documented: a restart
    // does not open a gap), and `run --cleanup` from the image lifts them.
    common::docker(&["stop", &guard]);
    assert!(
        Path::new(PIN_DIR).exists(),
        "no pinned state in the host's bpffs"
    );
    let still = exec(&idle, &connect).1;
    assert!(
        still.contains("Operation not permitted"),
        "the pinned deny went with the stopped guard: {still}"
    );
    let mut clean = cmdline[..1].to_vec();
    clean.extend(["run".to_owned(), "--cleanup".to_owned()]);
    run_guard(&format!("agtest-cleanup-{pid}"), &run, &clean, false);
    assert!(
        !Path::new(PIN_DIR).exists(),
        "{PIN_DIR} left after run --cleanup"
    );
    let open = exec(&idle, &connect).1;
    assert!(
        open.contains("Connection refused") && !open.contains("Operation not permitted"),
        "still denied after run --cleanup: {open}"
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
