//! What the sensor counts, for metrics and `status`: records lost or
//! dropped, prefiltered, flooded subjects, full maps, LSM decision times.
//! Reads only; nothing here changes what is streamed or enforced.

use aya::maps::{HashMap, PerCpuArray};

use agentguard_common::event::{ExecEvent, FileEvent, NetEvent, RenameEvent};
use agentguard_common::filter::{counter, pending};

use super::{FloodCount, Sensor};

impl Sensor {
    /// Cgroup classifications the kernel map refused (full).
    pub fn cgroups_refused(&self) -> u64 {
        self.cgroups.refused
    }

    /// Records of guarded tasks the prefilter kept in the kernel.
    pub fn prefiltered(&mut self) -> u64 {
        self.counter(counter::PREFILTERED)
    }

    /// Records flood isolation dropped, all subjects.
    pub fn flooded(&mut self) -> u64 {
        self.counter(counter::FLOODED)
    }

    /// Every subject whose records flood isolation dropped: its cgroup id,
    /// the last process dropped, and the drops by kind wire number, summed
    /// over CPUs since the subject's entry was made (an evicted entry
    /// starts again from 0).
    pub fn floods(&mut self) -> Vec<FloodCount> {
        use agentguard_common::filter::FloodState;
        let Some(m) = self.ebpf.map("FLOOD") else {
            return Vec::new();
        };
        let Ok(map) = aya::maps::PerCpuHashMap::<_, u64, FloodState>::try_from(m) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (cgroup_id, per_cpu) in map.iter().flatten() {
            let mut c = FloodCount {
                cgroup_id,
                ..Default::default()
            };
            for st in per_cpu.iter() {
                for (d, n) in c.dropped.iter_mut().zip(st.dropped) {
                    *d += u64::from(n);
                }
                if st.last_pid != 0 {
                    c.last_pid = st.last_pid;
                }
            }
            if c.dropped.iter().any(|&n| n > 0) {
                out.push(c);
            }
        }
        out
    }

    /// DNS queries the egress program dropped (domain rules).
    pub fn dns_dropped(&mut self) -> u64 {
        self.counter(counter::DNS_DROPPED)
    }

    /// Records the kernel could not put in the full ring buffer.
    pub fn lost_events(&mut self) -> u64 {
        self.counter(counter::LOST)
    }

    /// Requests against the daemon (signal, ptrace, bpf) the LSM hooks
    /// refused to guarded tasks.
    pub fn self_protect_refusals(&mut self) -> u64 {
        self.counter(counter::SELF_PROTECT)
    }

    /// (count, p50 ns, p99 ns) of the timed LSM decisions.
    pub fn lsm_timing(&mut self) -> Option<(u64, u64, u64)> {
        use agentguard_common::filter::{LSM_TIME_BUCKETS, LSM_TIME_BUCKET_NS};
        let Some(m) = self.ebpf.map("LSM_TIMES") else {
            tracing::debug!("LSM_TIMES map missing");
            return None;
        };
        let arr = match PerCpuArray::<_, u64>::try_from(m) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("reading LSM_TIMES: {e}");
                return None;
            }
        };
        let hist: Vec<u64> = (0..LSM_TIME_BUCKETS)
            .map(|i| arr.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0))
            .collect();
        let n: u64 = hist.iter().sum();
        if n == 0 {
            tracing::debug!("LSM_TIMES: no decision timed");
            return None;
        }
        let pct = |q: f64| {
            let want = ((n as f64) * q).ceil() as u64;
            let mut acc = 0;
            for (i, c) in hist.iter().enumerate() {
                acc += c;
                if acc >= want {
                    // The bucket's middle.
                    return i as u64 * LSM_TIME_BUCKET_NS + LSM_TIME_BUCKET_NS / 2;
                }
            }
            u64::from(LSM_TIME_BUCKETS) * LSM_TIME_BUCKET_NS
        };
        Some((n, pct(0.5), pct(0.99)))
    }

    /// Kernel map inserts refused because the map was full, and pending
    /// syscall records a full LRU map evicted, by map.
    pub fn map_full(&mut self) -> [(&'static str, u64); 6] {
        let [file, net, exec, rename] = self.pending_lost();
        [
            ("task_filter", self.counter(counter::FULL_TASK_FILTER)),
            ("enforce_tasks", self.counter(counter::FULL_ENFORCE_TASKS)),
            (pending::NAMES[0], file),
            (pending::NAMES[1], net),
            (pending::NAMES[2], exec),
            (pending::NAMES[3], rename),
        ]
    }

    /// Pending records lost to eviction, per pending map: put in − still
    /// there − taken out. Read in that order, each later read can only
    /// grow its term, so the figure never overstates (no false alarm); the
    /// highest seen is kept.
    fn pending_lost(&mut self) -> [u64; 4] {
        for i in 0..4 {
            let put = self.counter(counter::PENDING_IN + i as u32);
            let live = match i as u32 {
                pending::FILE => self.live_keys::<FileEvent>(pending::MAPS[i]),
                pending::NET => self.live_keys::<NetEvent>(pending::MAPS[i]),
                pending::EXEC => self.live_keys::<ExecEvent>(pending::MAPS[i]),
                _ => self.live_keys::<RenameEvent>(pending::MAPS[i]),
            };
            let taken = self.counter(counter::PENDING_OUT + i as u32);
            let Some(live) = live else { continue };
            let lost = put.saturating_sub(live + taken);
            self.pending_lost[i] = self.pending_lost[i].max(lost);
        }
        self.pending_lost
    }

    /// Keys in a hash map of `u32 -> V` (None: the map can't be read).
    fn live_keys<V: aya::Pod>(&mut self, name: &str) -> Option<u64> {
        let m = self.ebpf.map(name)?;
        let h = HashMap::<_, u32, V>::try_from(m)
            .inspect_err(|e| tracing::debug!("reading {name}: {e}"))
            .ok()?;
        Some(h.keys().filter(|k| k.is_ok()).count() as u64)
    }

    /// (walks, hits) of the LSM hooks' ancestor walks.
    pub fn lsm_walks(&mut self) -> (u64, u64) {
        (
            self.counter(counter::LSM_WALKS),
            self.counter(counter::LSM_HITS),
        )
    }

    /// Records userspace could not decode.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    fn counter(&mut self, idx: u32) -> u64 {
        let Some(m) = self.ebpf.map_mut("COUNTERS") else {
            return 0;
        };
        let Ok(arr) = PerCpuArray::<_, u64>::try_from(m) else {
            return 0;
        };
        arr.get(&idx, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }
}
