//! The deployment manifests carry what the daemon needs: privileges, host
//! paths, the config and policies, and a command line that `run` accepts.

use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::Value;

use agentguard::config::Config;

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every document of a multi-document YAML file, as JSON values.
fn yaml_docs(p: &Path) -> Vec<Value> {
    let src = read(p);
    serde_norway::Deserializer::from_str(&src)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn daemonset_has_privileges_host_paths_and_config() {
    let docs = yaml_docs(&deploy("kubernetes/daemonset.yaml"));
    let ds = kind(&docs, "DaemonSet", "agentguard");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert!(
        !pod["tolerations"]
            .as_array()
            .expect("tolerations")
            .is_empty(),
        "runs on tainted nodes too"
    );
    let c = &pod["containers"][0];
    // Root with the capabilities the daemon uses, not privileged (tests/dist.rs
    // runs the image with exactly these and watches it guard the host).
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let caps = sc["capabilities"]["add"]
        .as_array()
        .expect("capabilities.add");
    for cap in ["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "KILL"] {
        assert!(caps.iter().any(|c| c == cap), "{cap} missing: {caps:?}");
    }
    assert_eq!(sc["seccompProfile"]["type"], "Unconfined");

    let volumes = pod["volumes"].as_array().expect("volumes");
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    let mount_of = |volume: &str| -> &str {
        mounts
            .iter()
            .find(|m| m["name"] == volume)
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("volume {volume} is not mounted"))
    };
    // Each host path the daemon reads is a volume and is mounted.
    for host in [
        "/sys",
        "/sys/fs/bpf",
        "/sys/kernel/tracing",
        "/run/containerd/containerd.sock",
        "/var/run/docker.sock",
    ] {
        let v = volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == host)
            .unwrap_or_else(|| panic!("no hostPath volume for {host}"));
        let name = v["name"].as_str().expect("volume name");
        let at = mount_of(name);
        // Mounted where the daemon looks by default.
        assert_eq!(at, host, "{host} mounted at {at}");
    }
    // Nothing the daemon does not read: with hostPID the container's own
    // /proc is the host's.
    assert!(
        volumes.iter().all(|v| v["hostPath"]["path"] != "/proc"),
        "/proc needs no volume"
    );

    // Config and policies come from ConfigMaps.
    let cm_volume = |cm: &str| -> &str {
        volumes
            .iter()
            .find(|v| v["configMap"]["name"] == cm)
            .and_then(|v| v["name"].as_str())
            .unwrap_or_else(|| panic!("no volume for ConfigMap {cm}"))
    };
    let config_at = mount_of(cm_volume("agentguard-config"));
    let policies_at = mount_of(cm_volume("agentguard-policies"));
    kind(&docs, "ConfigMap", "agentguard-policies");

    // The command is `agentguard run` naming the mounted config and policies.
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect();
    assert_eq!(args.first(), Some(&"run"));
    let after = |flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .and_then(|i| args.get(i + 1))
            .copied()
            .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
    };
    assert_eq!(after("--policies"), policies_at);
    assert_eq!(after("--config"), config_at);
    assert!(c["command"][0]
        .as_str()
        .expect("command")
        .ends_with("/agentguard"));

    // The ConfigMap's config is valid for this daemon and agrees with the pod.
    let cm = kind(&docs, "ConfigMap", "agentguard-config");
    let file = Path::new(config_at).file_name().expect("config file name");
    let src = cm["data"][file.to_str().expect("utf8")]
        .as_str()
        .expect("config.yaml in the ConfigMap");
    let cfg = Config::parse(Path::new("daemonset.yaml:agentguard-config"), src)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.policies, Path::new(policies_at));
    let metrics = cfg.metrics_addr.expect("metrics_addr set");
    assert!(
        metrics.ip().is_unspecified(),
        "reachable from outside the pod"
    );
    let port = c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("metrics port");
    assert_eq!(port["containerPort"], metrics.port());
    // The status socket's directory is writable and on the host.
    let run = cfg.status_socket.parent().expect("dir");
    assert!(mounts
        .iter()
        .any(|m| m["mountPath"] == run.to_str().expect("utf8")));
}

#[test]
fn systemd_unit_runs_the_daemon() {
    let unit = read(&deploy("systemd/agentguard.service"));
    let value = |key: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    };
    let exec = value("ExecStart");
    assert_eq!(exec.len(), 1, "{exec:?}");
    let argv: Vec<&str> = exec[0].split_whitespace().collect();
    assert!(argv[0].ends_with("/agentguard"), "{argv:?}");
    assert_eq!(argv[1], "run", "ExecStart runs `agentguard run`");
    let config = argv
        .iter()
        .position(|a| *a == "--config")
        .map(|i| argv[i + 1])
        .expect("--config");
    assert_eq!(config, agentguard::config::DEFAULT_PATH);
    // The daemon says when it is ready (sd_notify; daemon_ops tests it).
    assert_eq!(value("Type"), ["notify"]);
    assert_eq!(value("LimitMEMLOCK"), ["infinity"]);
    assert_eq!(value("User"), ["root"]);
    let caps = value("CapabilityBoundingSet").join(" ");
    for cap in ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_KILL"] {
        assert!(caps.contains(cap), "{cap} missing");
    }
    assert_eq!(value("WantedBy"), ["multi-user.target"]);
}

#[test]
fn dockerfile_builds_from_source_in_two_stages() {
    let d = read(&deploy("Dockerfile"));
    let froms: Vec<&str> = d.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(froms[0].contains("rust:") && froms[0].contains(" AS build"));
    assert!(d.contains("rust-src") && d.contains("bpf-linker"));
    assert!(d.contains("cargo build --release -p agentguard"));
    assert!(d.contains("COPY --from=build"));
    assert!(d.contains(r#"ENTRYPOINT ["/usr/local/bin/agentguard"]"#));
}

#[test]
fn example_config_loads() {
    let cfg = Config::load(&deploy("config.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.policies,
        Path::new(agentguard::config::DEFAULT_POLICIES)
    );
}
