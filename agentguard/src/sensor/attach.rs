//! Attaching the programs: syscall tracepoints one by one or through the
//! raw dispatchers, the cgroup sock_addr/sock_create/skb programs at the
//! cgroup v2 root, and the BPF-LSM hooks.

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::ProgramArray,
    programs::{ProgramFd, RawTracePoint, TracePoint},
    Ebpf,
};

use super::catalog::ProbeSpec;
use super::*;

/// Attaches `probes` as tracepoints (the exits before their entries, as
/// listed in [`PROBES`]).
pub(super) fn attach_tracepoints<'a>(
    ebpf: &mut Ebpf,
    tracefs: &std::path::Path,
    probes: impl Iterator<Item = &'a ProbeSpec>,
    attached: &mut Vec<String>,
    skipped: &mut Vec<String>,
) -> Result<()> {
    for p in probes {
        let tp_name = tracepoint_name(p.program);
        if !tracefs
            .join("events")
            .join(p.category)
            .join(tp_name)
            .exists()
        {
            if p.optional {
                skipped.push(format!("{}/{tp_name}", p.category));
                continue;
            }
            bail!(
                "tracepoint {}/{tp_name} is missing from this kernel ({}): agentguard needs it",
                p.category,
                tracefs.display()
            );
        }
        let prog: &mut TracePoint = ebpf
            .program_mut(p.program)
            .ok_or_else(|| anyhow!("program {} missing from the eBPF object", p.program))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("verifier rejected program {}", p.program))?;
        prog.attach(p.category, tp_name)
            .with_context(|| format!("attaching {}/{tp_name}", p.category))?;
        attached.push(format!("{}/{tp_name}", p.category));
    }
    Ok(())
}

/// The open-like syscalls' entry programs, which raw dispatch leaves out
/// (`config::OPENS_AT_EXIT`): their exits judge and record the whole call.
const OPEN_ENTRIES: [&str; 4] = [
    "sys_enter_open",
    "sys_enter_openat",
    "sys_enter_openat2",
    "sys_enter_creat",
];

/// Raw dispatch: loads each syscall handler of `probes` as a raw
/// tracepoint program into its syscall's slot, then attaches the two
/// dispatchers (exit first: a call entered meanwhile still finds its exit).
/// The open-like entries are loaded but left out of their slots (their
/// exits do the work, see `config::OPENS_AT_EXIT`) and returned, so
/// [`Sensor::opens_at_entry`] can put them in. On error nothing stays
/// attached.
pub(super) fn attach_raw<'a>(
    ebpf: &mut Ebpf,
    probes: impl Iterator<Item = &'a ProbeSpec>,
    attached: &mut Vec<String>,
) -> Result<Vec<(u32, ProgramFd, &'static str)>> {
    let mut slots = Vec::new();
    let mut deferred = Vec::new();
    for p in probes {
        let (table, raw) = if let Some(sc) = p.program.strip_prefix("sys_enter_") {
            ("SYS_ENTER_PROGS", format!("raw_enter_{sc}"))
        } else if let Some(sc) = p.program.strip_prefix("sys_exit_") {
            ("SYS_EXIT_PROGS", format!("raw_exit_{sc}"))
        } else {
            bail!("{} is not a syscall probe", p.program);
        };
        let prog: &mut RawTracePoint = ebpf
            .program_mut(&raw)
            .ok_or_else(|| anyhow!("program {raw} missing from the eBPF object"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("verifier rejected program {raw}"))?;
        let fd = prog.fd()?.try_clone()?;
        if OPEN_ENTRIES.contains(&p.program) {
            deferred.push((p.nr, fd, p.program));
            continue;
        }
        slots.push((table, p.nr, fd, p.program));
    }
    {
        let mut cfg: aya::maps::Array<_, u32> = aya::maps::Array::try_from(map(ebpf, "CONFIG")?)?;
        cfg.set(config::OPENS_AT_EXIT, u32::from(!deferred.is_empty()), 0)
            .context("writing CONFIG[OPENS_AT_EXIT]")?;
    }
    for table in ["SYS_ENTER_PROGS", "SYS_EXIT_PROGS"] {
        let mut array: ProgramArray<_> = ProgramArray::try_from(map(ebpf, table)?)?;
        for (t, nr, fd, name) in &slots {
            if *t == table {
                array
                    .set(*nr, fd, 0)
                    .with_context(|| format!("{table}[{nr}] = {name}"))?;
            }
        }
    }
    let mut links = Vec::new();
    for (program, tp) in [("raw_sys_exit", "sys_exit"), ("raw_sys_enter", "sys_enter")] {
        let prog: &mut RawTracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow!("program {program} missing from the eBPF object"))?
            .try_into()?;
        let done = prog
            .load()
            .with_context(|| format!("verifier rejected program {program}"))
            .and_then(|()| {
                prog.attach(tp)
                    .with_context(|| format!("attaching raw tracepoint {tp}"))
            });
        match done {
            Ok(link) => links.push((program, link)),
            Err(e) => {
                for (program, link) in links {
                    if let Some(Ok(p)) = ebpf
                        .program_mut(program)
                        .map(<&mut RawTracePoint>::try_from)
                    {
                        let _ = p.detach(link);
                    }
                }
                return Err(e);
            }
        }
    }
    attached.push("raw_syscalls/sys_exit".to_owned());
    attached.push("raw_syscalls/sys_enter".to_owned());
    attached.extend(
        slots
            .iter()
            .map(|(_, _, _, name)| format!("dispatch/{name}")),
    );
    Ok(deferred)
}

impl Sensor {
    /// Puts the open-like entry programs raw dispatch left out back into
    /// their slots, then turns `OPENS_AT_EXIT` off: the BPF-LSM hooks stamp
    /// their verdicts into the record an open parks at entry. An open that
    /// entered before its slot was filled and returns after the switch
    /// finds no parked record: the exit then decides it from the registers
    /// when the task's opens are prefiltered, else it goes unrecorded (a
    /// window of microseconds, at start, before the hooks attach).
    pub fn opens_at_entry(&mut self) -> Result<()> {
        if self.opens_deferred.is_empty() {
            return Ok(());
        }
        let mut array: ProgramArray<_> =
            ProgramArray::try_from(map(&mut self.ebpf, "SYS_ENTER_PROGS")?)?;
        for (nr, fd, name) in &self.opens_deferred {
            array
                .set(*nr, fd, 0)
                .with_context(|| format!("SYS_ENTER_PROGS[{nr}] = {name}"))?;
        }
        self.set_config(config::OPENS_AT_EXIT, 0)?;
        let names = self
            .opens_deferred
            .iter()
            .map(|(_, _, n)| format!("dispatch/{n}"));
        self.attached.extend(names);
        self.opens_deferred.clear();
        Ok(())
    }
}

/// "sys_enter_openat" is both the program's and the tracepoint's name.
fn tracepoint_name(program: &str) -> &str {
    program
}

/// Offset of `field` in a tracepoint's record, from its tracefs format file.
/// Ok(None) when the tracepoint exists but has no such field.
pub fn tracepoint_field_offset(
    tracefs: &std::path::Path,
    event: &str,
    field: &str,
) -> Result<Option<u64>> {
    let path = tracefs.join("events").join(event).join("format");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("tracepoint {event} missing ({})", path.display()))?;
    Ok(parse_format_offset(&text, field))
}

fn parse_format_offset(format: &str, field: &str) -> Option<u64> {
    for line in format.lines() {
        let line = line.trim();
        let Some(decl) = line.strip_prefix("field:") else {
            continue;
        };
        let mut parts = decl.split(';');
        let name_part = parts.next()?;
        // "char comm[16]" or "u64 clone_flags": the last word, minus [..].
        let name = name_part
            .split_whitespace()
            .last()
            .map(|n| n.split('[').next().unwrap_or(n))?;
        if name != field {
            continue;
        }
        for p in parts {
            if let Some(off) = p.trim().strip_prefix("offset:") {
                return off.trim().parse().ok();
            }
        }
    }
    None
}

impl Sensor {
    /// Loads and attaches the network-deny programs at cgroup v2 `root`,
    /// pinning each link in `pin_dir` so the deny outlives the daemon. A
    /// link already pinned there (a previous daemon's) is adopted: the old
    /// program keeps running on the same pinned maps, nothing is attached
    /// twice. Returns the programs attached now.
    pub fn attach_sock_addr(
        &mut self,
        root: &std::path::Path,
        pin_dir: &std::path::Path,
    ) -> Result<Vec<String>> {
        let names: Vec<&str> = SOCK_ADDR_PROGRAMS
            .iter()
            .copied()
            .chain([SOCK_CREATE_PROGRAM])
            .collect();
        self.attach_cgroup_programs(root, pin_dir, &names)
    }

    /// Loads and attaches the DNS skb programs of domain rules, pinned
    /// like [`Sensor::attach_sock_addr`]'s.
    pub fn attach_dns(
        &mut self,
        root: &std::path::Path,
        pin_dir: &std::path::Path,
    ) -> Result<Vec<String>> {
        let names: Vec<&str> = DNS_PROGRAMS.iter().map(|(n, _)| *n).collect();
        self.attach_cgroup_programs(root, pin_dir, &names)
    }

    fn attach_cgroup_programs(
        &mut self,
        root: &std::path::Path,
        pin_dir: &std::path::Path,
        names: &[&str],
    ) -> Result<Vec<String>> {
        use aya::programs::{
            links::FdLink, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock,
            CgroupSockAddr,
        };
        let cgroup = std::fs::File::open(root)
            .with_context(|| format!("opening cgroup v2 root {}", root.display()))?;
        let mut attached = Vec::new();
        for name in names {
            let pin = pin_dir.join(format!("link_{name}"));
            if pin.exists() {
                continue;
            }
            let program = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?;
            // bpf_link_create refuses attach flags: cgroup links always
            // coexist with other programs, so "Single" (no flag) is right.
            let skb = DNS_PROGRAMS.iter().find(|(n, _)| n == name);
            let link: FdLink = if let Some((_, egress)) = skb {
                let prog: &mut CgroupSkb = program.try_into()?;
                prog.load()
                    .with_context(|| format!("verifier rejected program {name}"))?;
                let ty = if *egress {
                    CgroupSkbAttachType::Egress
                } else {
                    CgroupSkbAttachType::Ingress
                };
                let id = prog
                    .attach(&cgroup, ty, CgroupAttachMode::Single)
                    .with_context(|| format!("attaching {name} to {}", root.display()))?;
                prog.take_link(id)?
                    .try_into()
                    .map_err(|e| anyhow!("{name}: not a bpf_link (kernel too old to pin): {e:?}"))?
            } else if *name == SOCK_CREATE_PROGRAM {
                let prog: &mut CgroupSock = program.try_into()?;
                prog.load()
                    .with_context(|| format!("verifier rejected program {name}"))?;
                let id = prog
                    .attach(&cgroup, CgroupAttachMode::Single)
                    .with_context(|| format!("attaching {name} to {}", root.display()))?;
                prog.take_link(id)?
                    .try_into()
                    .map_err(|e| anyhow!("{name}: not a bpf_link (kernel too old to pin): {e:?}"))?
            } else {
                let prog: &mut CgroupSockAddr = program.try_into()?;
                prog.load()
                    .with_context(|| format!("verifier rejected program {name}"))?;
                let id = prog
                    .attach(&cgroup, CgroupAttachMode::Single)
                    .with_context(|| format!("attaching {name} to {}", root.display()))?;
                prog.take_link(id)?
                    .try_into()
                    .map_err(|e| anyhow!("{name}: not a bpf_link (kernel too old to pin): {e:?}"))?
            };
            link.pin(&pin)
                .with_context(|| format!("pinning {name} at {}", pin.display()))?;
            attached.push((*name).to_owned());
        }
        Ok(attached)
    }

    /// Loads and attaches the BPF-LSM programs (every hook in
    /// [`LSM_PROGRAMS`]; optional ones are skipped where the kernel lacks
    /// the hook). Returns the hooks attached. They live as long as the
    /// sensor: after the daemon stops, only the pinned sock_addr denies stay.
    pub fn attach_lsm(&mut self) -> Result<Vec<String>> {
        use aya::programs::Lsm;
        self.opens_at_entry()?;
        let btf = aya::Btf::from_sys_fs().context("reading the kernel BTF for the LSM hooks")?;
        let kernel_btf = btf::KernelBtf::from_sys_fs().map_err(|e| anyhow!("{e}"))?;
        let mut attached = Vec::new();
        for (name, hook, optional) in LSM_PROGRAMS {
            if kernel_btf.func_id(&format!("bpf_lsm_{hook}")).is_none() {
                if *optional {
                    self.skipped.push(format!("lsm/{hook}"));
                    continue;
                }
                bail!("this kernel has no LSM hook {hook} (bpf_lsm_{hook} missing from its BTF)");
            }
            let prog: &mut Lsm = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
                .try_into()?;
            prog.load(hook, &btf)
                .with_context(|| format!("verifier rejected LSM program {name} ({hook})"))?;
            prog.attach()
                .with_context(|| format!("attaching LSM hook {hook}"))?;
            attached.push(format!("lsm/{hook}"));
        }
        self.attached.extend(attached.iter().cloned());
        Ok(attached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: &str = "name: sched_process_exit\nID: 369\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";

    #[test]
    fn format_offsets() {
        assert_eq!(parse_format_offset(FORMAT, "group_dead"), Some(32));
        assert_eq!(parse_format_offset(FORMAT, "comm"), Some(8));
        assert_eq!(parse_format_offset(FORMAT, "pid"), Some(24));
        assert_eq!(parse_format_offset(FORMAT, "missing"), None);
    }
}
