//! Container identity from cgroup paths (/proc/PID/cgroup).
//!
//! On this hybrid host Docker uses the cgroup v1 driver, yet runc also puts
//! a container's tasks in their own cgroup v2 directory (`0::/docker/<id>`,
//! `0::/k8s.io/<id>`), so `bpf_get_current_cgroup_id` does tell containers
//! apart here (the enforcement maps key on it). The *paths* name the
//! runtime's container id in well-known shapes, on v1, v2 and hybrid hosts.

pub use super::model::Runtime;

/// What a cgroup path says about its container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupIdentity {
    pub runtime: Option<Runtime>,
    /// Full container id (64 hex for docker/cri; the container name for
    /// plain containerd `/NAMESPACE/ID` paths).
    pub container_id: Option<String>,
    /// Kubernetes pod UID (dashes restored) from a kubepods path.
    pub pod_uid: Option<String>,
    /// containerd namespace for `/NAMESPACE/ID` paths (e.g. "k8s.io").
    pub namespace: Option<String>,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses one cgroup path. Only the runtimes' own cgroup parents count,
/// anchored at the top of the hierarchy (after any `..` of a cgroup
/// namespace): `/docker/<id>`, `/system.slice/docker-<id>.scope` (and
/// `crio-`, `cri-containerd-`), `/machine.slice/libpod-<id>.scope`,
/// `/libpod_parent/libpod-<id>`, `/kubepods[.slice]/.../pod<uid>/<id>`
/// (and the systemd `...-pod<uid>.slice/<runtime>-<id>.scope`),
/// `/<containerd namespace>/<id>`. The same shapes deeper down (a user's
/// delegated cgroup: `/user.slice/.../docker-<id>.scope`) name nothing: an
/// unprivileged user could mint them to stall identity or borrow a real
/// container's. Below a container's own cgroup (its init's sub-cgroups,
/// Docker in Docker) is still that container.
pub fn parse_path(path: &str) -> CgroupIdentity {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != "..")
        .collect();
    let mut out = CgroupIdentity::default();
    match parts.as_slice() {
        ["docker", id, ..] if is_hex64(id) => {
            out.runtime = Some(Runtime::Docker);
            out.container_id = Some((*id).to_owned());
        }
        ["system.slice", unit, ..] => {
            if let Some((rt, id)) =
                scope_id(unit, &[Runtime::Docker, Runtime::Crio, Runtime::Containerd])
            {
                out.runtime = Some(rt);
                out.container_id = Some(id.to_owned());
            }
        }
        ["machine.slice", unit, ..] | ["libpod_parent", unit, ..] => {
            if let Some((rt, id)) = scope_id(unit, &[Runtime::Podman]) {
                out.runtime = Some(rt);
                out.container_id = Some(id.to_owned());
            }
        }
        [first, ..] if first.starts_with("kubepods") => kube(&parts, &mut out),
        ["moby", id, ..] if is_hex64(id) => {
            // Docker's own containerd namespace.
            out.runtime = Some(Runtime::Docker);
            out.container_id = Some((*id).to_owned());
        }
        [ns, id, ..] if is_containerd_namespace(ns) => {
            out.runtime = Some(Runtime::Containerd);
            out.namespace = Some((*ns).to_owned());
            out.container_id = Some((*id).to_owned());
        }
        _ => {}
    }
    out
}

/// `<runtime prefix><64 hex>[.scope]` for one of `runtimes`.
fn scope_id<'a>(unit: &'a str, runtimes: &[Runtime]) -> Option<(Runtime, &'a str)> {
    let scope = unit.strip_suffix(".scope").unwrap_or(unit);
    [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::Crio),
        ("libpod-", Runtime::Podman),
    ]
    .into_iter()
    .filter(|(_, rt)| runtimes.contains(rt))
    .find_map(|(prefix, rt)| {
        let id = scope.strip_prefix(prefix)?;
        is_hex64(id).then_some((rt, id))
    })
}

/// The pod UID of a kubepods component: `pod<uid>` (cgroupfs) or
/// `...-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid(part: &str) -> Option<String> {
    let idx = part.rfind("pod")?;
    if !(idx == 0 || part[..idx].ends_with('-')) {
        return None;
    }
    let rest = &part[idx + 3..];
    let rest = rest.strip_suffix(".slice").unwrap_or(rest);
    let uid = rest.replace('_', "-");
    (uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(uid)
}

/// `/kubepods...`: the pod component, then the container's right below it.
fn kube(parts: &[&str], out: &mut CgroupIdentity) {
    let Some(at) = parts.iter().position(|p| pod_uid(p).is_some()) else {
        return;
    };
    out.pod_uid = pod_uid(parts[at]);
    let Some(next) = parts.get(at + 1) else {
        return;
    };
    if is_hex64(next) {
        out.runtime = Some(Runtime::Containerd);
        out.container_id = Some((*next).to_owned());
    } else if let Some((rt, id)) =
        scope_id(next, &[Runtime::Docker, Runtime::Containerd, Runtime::Crio])
    {
        out.runtime = Some(rt);
        out.container_id = Some(id.to_owned());
    }
}

/// containerd's usual namespaces ("moby" holds Docker's own containers).
fn is_containerd_namespace(s: &str) -> bool {
    matches!(s, "k8s.io" | "moby" | "default" | "buildkit")
}

/// Reads /proc/PID/cgroup and returns the first hierarchy naming a container.
pub fn for_pid(pid: u32) -> std::io::Result<CgroupIdentity> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    Ok(parse_file(&text))
}

/// Parses the content of a /proc/PID/cgroup file ("hier:controllers:path" lines).
pub fn parse_file(text: &str) -> CgroupIdentity {
    let mut best = CgroupIdentity::default();
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let id = parse_path(path);
        if id.container_id.is_some() {
            return id;
        }
        if best.pod_uid.is_none() && id.pod_uid.is_some() {
            best = id;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    #[test]
    fn docker_cgroupfs_and_systemd() {
        let c = parse_path(&format!("/docker/{ID}"));
        assert_eq!(c.runtime, Some(Runtime::Docker));
        assert_eq!(c.container_id.as_deref(), Some(ID));
        let c = parse_path(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(c.runtime, Some(Runtime::Docker));
        assert_eq!(c.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn kubepods_cgroupfs_and_systemd() {
        let uid = "0d3b1c2a-1111-2222-3333-444455556666";
        let c = parse_path(&format!("/kubepods/burstable/pod{uid}/{ID}"));
        assert_eq!(c.pod_uid.as_deref(), Some(uid));
        assert_eq!(c.container_id.as_deref(), Some(ID));
        let c = parse_path(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            uid.replace('-', "_")
        ));
        assert_eq!(c.pod_uid.as_deref(), Some(uid));
        assert_eq!(c.runtime, Some(Runtime::Containerd));
        assert_eq!(c.container_id.as_deref(), Some(ID));
        let c = parse_path(&format!(
            "/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope",
            uid.replace('-', "_")
        ));
        assert_eq!(c.runtime, Some(Runtime::Crio));
    }

    #[test]
    fn podman_and_containerd_namespace() {
        let c = parse_path(&format!("/machine.slice/libpod-{ID}.scope"));
        assert_eq!(c.runtime, Some(Runtime::Podman));
        let c = parse_path("/k8s.io/web-0");
        assert_eq!(c.runtime, Some(Runtime::Containerd));
        assert_eq!(c.namespace.as_deref(), Some("k8s.io"));
        assert_eq!(c.container_id.as_deref(), Some("web-0"));
        // A ctr/CRI container with a 64-hex id is containerd's, not Docker's.
        let c = parse_path(&format!("/k8s.io/{ID}"));
        assert_eq!(c.runtime, Some(Runtime::Containerd));
        assert_eq!(c.namespace.as_deref(), Some("k8s.io"));
        assert_eq!(c.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn host_paths_are_not_containers() {
        for p in [
            "/",
            "/user.slice/user-1000.slice/session-2.scope",
            "/system.slice/ssh.service",
            "/process_api/0318c5c07085af29a9861fc6ea14f857",
        ] {
            assert_eq!(parse_path(p), CgroupIdentity::default(), "{p}");
        }
    }

    #[test]
    fn runtime_shapes_count_only_at_their_standard_parents() {
        // A user's delegated cgroup can hold any name: never a container.
        for p in [
            format!("/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{ID}.scope"),
            format!("/user.slice/user-1000.slice/user@1000.service/docker/{ID}"),
            format!("/user.slice/user-1000.slice/user@1000.service/k8s.io/{ID}"),
            format!("/user.slice/user-1000.slice/user@1000.service/kubepods/pod0d3b1c2a-1111-2222-3333-444455556666/{ID}"),
            format!("/system.slice/evil.service/docker-{ID}.scope"),
            format!("/init.scope/docker/{ID}"),
        ] {
            assert_eq!(parse_path(&p), CgroupIdentity::default(), "{p}");
        }
        // Below a container's own cgroup it is still that container.
        let other = "00".repeat(32);
        let c = parse_path(&format!("/docker/{ID}/docker/{other}"));
        assert_eq!(c.container_id.as_deref(), Some(ID));
        let c = parse_path(&format!("/system.slice/docker-{ID}.scope/init"));
        assert_eq!(c.container_id.as_deref(), Some(ID));
        // Seen from inside a cgroup namespace.
        let c = parse_path(&format!("/../../docker/{ID}"));
        assert_eq!(c.container_id.as_deref(), Some(ID));
        let c = parse_path(&format!("/moby/{ID}"));
        assert_eq!(c.runtime, Some(Runtime::Docker));
    }

    #[test]
    fn file_with_mixed_hierarchies() {
        let text = format!("12:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n");
        assert_eq!(parse_file(&text).container_id.as_deref(), Some(ID));
        assert_eq!(parse_file("0::/\n").container_id, None);
    }
}
