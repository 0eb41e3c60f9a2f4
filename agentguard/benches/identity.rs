//! Identity lookup cost on a cache hit, against a baseline in the same run:
//! cloning the event alone (what any consumer of the event pays anyway).

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use agentguard::event::{Detail, Event, FileDetail, ForkDetail, Kind, PathInfo, Resolution};
use agentguard::identity::resolver::{ContainerMap, Resolver, DEFAULT_AGENTS};

fn event(pid: u32, detail: Detail, kind: Kind) -> Event {
    Event {
        ts_ns: 1,
        kind,
        syscall: "openat".into(),
        pid,
        tid: pid,
        ppid: 1,
        uid: 0,
        gid: 0,
        comm: "bench".into(),
        cgroup_id: 1,
        ret: 3,
        error: None,
        detail,
        kernel_action: None,
        identity: None,
    }
}

fn bench(c: &mut Criterion) {
    let me = std::process::id();
    let child = 4_000_000; // beyond pid_max: only ever known from the fork below
    let mut resolver = Resolver::new(ContainerMap::default(), DEFAULT_AGENTS);
    // Warm the table: this process from /proc, then a child by fork.
    let fork = event(
        me,
        Detail::Fork(ForkDetail {
            map_full: None,
            child_pid: child,
            clone_flags: 0,
        }),
        Kind::Fork,
    );
    resolver.tag(&fork);
    let open = event(
        child,
        Detail::File(FileDetail {
            file: PathInfo {
                path: "/etc/hosts".into(),
                raw: None,
                resolution: Resolution::Absolute,
                truncated: false,
            },
            flags: 0,
            access: Some("read".into()),
            flag_names: Vec::new(),
            mode: None,
            size: None,
            own_file: false,
        }),
        Kind::Open,
    );
    resolver.tag(&open);
    let mut g = c.benchmark_group("identity");
    g.bench_function("baseline_clone_event", |b| {
        b.iter(|| black_box(open.clone()))
    });
    g.bench_function("clone_event_and_tag_cache_hit", |b| {
        b.iter(|| {
            let mut ev = open.clone();
            ev.identity = Some(resolver.tag(black_box(&ev)));
            black_box(ev)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
