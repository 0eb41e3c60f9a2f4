//! OCSF-shaped alerts (`ocsf: true` / `--ocsf`), for SIEMs that ingest the
//! Open Cybersecurity Schema Framework. The mapping is documented in
//! docs/alerts.md; the native alert rides along whole under `unmapped`, so
//! nothing is lost when a field has no OCSF home.

use serde_json::{json, Map, Value};

use crate::alert::{Alert, Severity};
use crate::event::{Detail, Event, Kind};

/// The OCSF schema version the objects follow.
pub const OCSF_VERSION: &str = "1.1.0";

/// (class_uid, class_name, category_uid, category_name)
fn class_of(kind: Kind) -> (u32, &'static str, u32, &'static str) {
    match kind {
        Kind::Exec | Kind::Fork | Kind::Exit => (1007, "Process Activity", 1, "System Activity"),
        Kind::Open | Kind::Unlink | Kind::Rmdir | Kind::Rename | Kind::Truncate => {
            (1001, "File System Activity", 1, "System Activity")
        }
        Kind::Connect | Kind::Send | Kind::Socket => {
            (4001, "Network Activity", 4, "Network Activity")
        }
        // No OCSF class says "set up an io_uring": the base event keeps it
        // visible without pretending.
        Kind::IoUringSetup | Kind::CompatSyscall => (0, "Base Event", 0, "Uncategorized"),
        Kind::Dns => (4003, "DNS Activity", 4, "Network Activity"),
        // The guard's own health and configuration changes.
        Kind::Flood | Kind::PolicyReload => (0, "Base Event", 0, "Uncategorized"),
    }
}

/// (activity_id, activity_name) within the kind's class.
fn activity_of(ev: &Event) -> (u32, &'static str) {
    match ev.kind {
        Kind::Exec | Kind::Fork => (1, "Launch"),
        Kind::Exit => (2, "Terminate"),
        Kind::Open => (14, "Open"),
        Kind::Unlink | Kind::Rmdir => (4, "Delete"),
        Kind::Rename => (5, "Rename"),
        Kind::Truncate => (3, "Update"),
        // A failed connect is a refused/failed connection, not an open one.
        Kind::Connect if !ev.ok() => (4, "Fail"),
        Kind::Connect => (1, "Open"),
        Kind::Send => (6, "Traffic"),
        Kind::IoUringSetup
        | Kind::Socket
        | Kind::CompatSyscall
        | Kind::Flood
        | Kind::PolicyReload => (99, "Other"),
        Kind::Dns => match &ev.detail {
            Detail::Dns(d) if d.direction == "answer" => (2, "Response"),
            _ => (1, "Query"),
        },
    }
}

pub fn severity_id(s: Severity) -> u32 {
    match s {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "Informational",
        Severity::Low => "Low",
        Severity::Medium => "Medium",
        Severity::High => "High",
        Severity::Critical => "Critical",
    }
}

/// Milliseconds since the epoch for an RFC 3339 time; now when unparsable
/// (OCSF requires `time`).
pub fn epoch_ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|_| chrono::Utc::now().timestamp_millis())
}

fn file_obj(path: &str) -> Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    json!({ "path": path, "name": name })
}

/// The acting process as an OCSF Process object.
fn actor_process(ev: &Event) -> Value {
    let mut p = Map::new();
    p.insert("pid".into(), json!(ev.pid));
    p.insert("tid".into(), json!(ev.tid));
    p.insert("name".into(), json!(ev.comm));
    p.insert("user".into(), json!({ "uid": ev.uid.to_string() }));
    p.insert("parent_process".into(), json!({ "pid": ev.ppid }));
    if let Some(first) = ev.identity.as_ref().and_then(|i| i.ancestry.first()) {
        if first.pid == ev.pid {
            p.insert("file".into(), file_obj(&first.exe));
            p.insert("cmd_line".into(), json!(&*first.argv));
        }
    }
    Value::Object(p)
}

/// Converts one alert. `native` is the alert's own JSON, kept under
/// `unmapped` (pass `None` to have it serialized here).
pub fn to_ocsf(alert: &Alert, native: Option<Value>) -> Value {
    let ev = &alert.event;
    let (class_uid, class_name, category_uid, category_name) = class_of(ev.kind);
    let (activity_id, activity_name) = activity_of(ev);
    let sev = alert.decision.severity;
    let mut o = Map::new();
    o.insert("class_uid".into(), json!(class_uid));
    o.insert("class_name".into(), json!(class_name));
    o.insert("category_uid".into(), json!(category_uid));
    o.insert("category_name".into(), json!(category_name));
    o.insert("activity_id".into(), json!(activity_id));
    o.insert("activity_name".into(), json!(activity_name));
    o.insert(
        "type_uid".into(),
        json!(u64::from(class_uid) * 100 + u64::from(activity_id)),
    );
    o.insert("severity_id".into(), json!(severity_id(sev)));
    o.insert("severity".into(), json!(severity_name(sev)));
    o.insert("time".into(), json!(epoch_ms(&alert.time)));
    o.insert("message".into(), json!(alert.decision.message));
    o.insert(
        "status_id".into(),
        json!(if ev.ok() { 1 } else { 2 }), // 1 Success, 2 Failure
    );
    o.insert(
        "status".into(),
        json!(if ev.ok() { "Success" } else { "Failure" }),
    );
    if let Some(e) = &ev.error {
        o.insert("status_detail".into(), json!(e));
    }
    o.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "product": {
                "name": "agentguard",
                "vendor_name": "agentguard",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "labels": [
                format!("policy:{}", alert.decision.policy),
                format!("rule:{}", alert.decision.rule),
                format!("action:{}", alert.decision.action.as_str()),
            ],
        }),
    );
    // type_id 0: Unknown; the daemon does not classify its host.
    o.insert(
        "device".into(),
        json!({ "hostname": alert.host, "type_id": 0 }),
    );
    let mut actor = Map::new();
    actor.insert("process".into(), actor_process(ev));
    actor.insert("user".into(), json!({ "uid": ev.uid.to_string() }));
    o.insert("actor".into(), Value::Object(actor));
    if let Some(c) = ev.identity.as_ref().and_then(|i| i.container.as_ref()) {
        let mut cont = Map::new();
        cont.insert("uid".into(), json!(&*c.id));
        if let Some(info) = &c.info {
            cont.insert("name".into(), json!(info.name));
            cont.insert("image".into(), json!({ "name": info.image }));
        }
        o.insert("container".into(), Value::Object(cont));
    }
    match &ev.detail {
        Detail::Exec(x) => {
            o.insert(
                "process".into(),
                json!({
                    "pid": ev.pid,
                    "name": ev.comm,
                    "file": file_obj(&x.file.path),
                    "cmd_line": x.argv.join(" "),
                    "parent_process": { "pid": ev.ppid },
                }),
            );
        }
        Detail::Fork(x) => {
            o.insert(
                "process".into(),
                json!({ "pid": x.child_pid, "parent_process": { "pid": ev.pid } }),
            );
        }
        Detail::Exit(x) => {
            o.insert("process".into(), json!({ "pid": ev.pid, "name": ev.comm }));
            if let Some(code) = x.code {
                o.insert("exit_code".into(), json!(code));
            }
        }
        Detail::File(x) => {
            o.insert("file".into(), file_obj(&x.file.path));
        }
        Detail::Rename(x) => {
            o.insert("file".into(), file_obj(&x.from.path));
            o.insert("file_result".into(), file_obj(&x.to.path));
        }
        Detail::Net(x) => {
            let mut dst = Map::new();
            if let Some(a) = &x.addr {
                dst.insert("ip".into(), json!(a));
            }
            if let Some(d) = &x.domain {
                dst.insert("hostname".into(), json!(d));
            }
            if let Some(p) = x.port {
                dst.insert("port".into(), json!(p));
            }
            o.insert("dst_endpoint".into(), Value::Object(dst));
            // direction_id 2: Outbound (connect and send are ours).
            o.insert("connection_info".into(), json!({ "direction_id": 2 }));
        }
        Detail::Dns(x) => {
            let mut q = Map::new();
            if let Some(n) = &x.name {
                q.insert("hostname".into(), json!(n));
            }
            if let Some(t) = &x.qtype {
                q.insert("type".into(), json!(t));
            }
            o.insert("query".into(), Value::Object(q));
            o.insert("dst_endpoint".into(), json!({ "ip": x.resolver }));
            if !x.addrs.is_empty() {
                let answers: Vec<Value> = x
                    .addrs
                    .iter()
                    .map(|a| json!({ "rdata": a, "ttl": x.ttl }))
                    .collect();
                o.insert("answers".into(), Value::Array(answers));
            }
        }
        // The native form (under `unmapped`) carries these in full.
        Detail::IoUring(_) | Detail::Compat(_) | Detail::Flood(_) | Detail::PolicyReload(_) => {}
    }
    let native = native.unwrap_or_else(|| serde_json::to_value(alert).unwrap_or(Value::Null));
    o.insert("unmapped".into(), json!({ "agentguard": native }));
    Value::Object(o)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::alert::{Action, ActionResult, Decision, Mode};
    use crate::event::{FileDetail, NetDetail, PathInfo, Resolution};

    pub(crate) fn sample_alert(kind: Kind) -> Alert {
        let detail = match kind {
            Kind::Connect | Kind::Send => Detail::Net(NetDetail {
                family: "inet".into(),
                addr: Some("10.0.0.1".into()),
                port: Some(443),
                v4_mapped: false,
                unix_path: None,
                fd: 3,
                len: None,
                addr_unreadable: false,
                socket_type: None,
                protocol: None,
                ..Default::default()
            }),
            _ => Detail::File(FileDetail {
                file: PathInfo {
                    path: "/etc/shadow".into(),
                    raw: None,
                    resolution: Resolution::Absolute,
                    truncated: false,
                },
                flags: 0,
                access: Some("read".into()),
                flag_names: vec![],
                mode: None,
                size: None,
                own_file: false,
            }),
        };
        Alert {
            time: "2025-01-02T03:04:05.678Z".into(),
            host: "node-1".into(),
            decision: Decision {
                policy: "files".into(),
                rule: "shadow-read".into(),
                action: Action::Alert,
                kill_scope: Default::default(),
                taint: false,
                severity: Severity::High,
                message: "cat read /etc/shadow".into(),
                mode: Mode::Enforce,
            },
            result: ActionResult::alerted(),
            actor: None,
            group: None,
            event: Event {
                ts_ns: 1,
                kind,
                syscall: "openat".into(),
                pid: 42,
                tid: 42,
                ppid: 1,
                uid: 0,
                gid: 0,
                comm: "cat".into(),
                cgroup_id: 1,
                ret: 3,
                error: None,
                detail,
                kernel_action: None,
                identity: None,
            },
        }
    }

    #[test]
    fn file_open_maps_to_file_system_activity() {
        let v = to_ocsf(&sample_alert(Kind::Open), None);
        assert_eq!(v["class_uid"], 1001);
        assert_eq!(v["category_uid"], 1);
        assert_eq!(v["activity_id"], 14);
        assert_eq!(v["type_uid"], 100114);
        assert_eq!(v["severity_id"], 4);
        assert_eq!(v["time"], 1735787045678i64);
        assert_eq!(v["file"]["path"], "/etc/shadow");
        assert_eq!(v["file"]["name"], "shadow");
        assert_eq!(v["actor"]["process"]["pid"], 42);
        assert_eq!(v["device"]["hostname"], "node-1");
        assert_eq!(v["metadata"]["product"]["name"], "agentguard");
        assert_eq!(
            v["unmapped"]["agentguard"]["decision"]["rule"],
            "shadow-read"
        );
    }

    #[test]
    fn connect_maps_to_network_activity() {
        let v = to_ocsf(&sample_alert(Kind::Connect), None);
        assert_eq!(v["class_uid"], 4001);
        assert_eq!(v["category_uid"], 4);
        assert_eq!(v["activity_id"], 1);
        assert_eq!(v["dst_endpoint"]["ip"], "10.0.0.1");
        assert_eq!(v["dst_endpoint"]["port"], 443);
    }

    #[test]
    fn kinds_map_to_their_classes() {
        for (kind, class) in [
            (Kind::Exec, 1007),
            (Kind::Fork, 1007),
            (Kind::Exit, 1007),
            (Kind::Unlink, 1001),
            (Kind::Rmdir, 1001),
            (Kind::Rename, 1001),
            (Kind::Truncate, 1001),
            (Kind::Send, 4001),
        ] {
            assert_eq!(class_of(kind).0, class, "{kind}");
        }
    }
}
