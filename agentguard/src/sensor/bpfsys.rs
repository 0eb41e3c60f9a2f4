//! Raw `bpf(2)` for the feature probes: a minimal instruction encoder and
//! the syscall's attribute layouts, so `check` can try a program or map
//! type the loaded object does not use, and report the kernel's errno.

use std::os::fd::{FromRawFd, OwnedFd};

// ---------------------------------------------------------------- errno --

pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// "Operation not permitted (EPERM)": the text plus the symbolic name
/// people grep for.
pub(super) fn errno_text(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        // Kernel-internal ENOTSUPP leaks out of bpf() for missing arch
        // support (e.g. trampolines).
        524 => return "operation not supported by this kernel (ENOTSUPP, 524)".into(),
        _ => return std::io::Error::from_raw_os_error(e).to_string(),
    };
    let text = std::io::Error::from_raw_os_error(e).to_string();
    // Drop std's " (os error N)" suffix: the symbolic name replaces it.
    let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
    format!("{text} ({name})")
}

// --------------------------------------------------- instruction encoder --
//
// Just the handful of eBPF instructions the probes need. Each instruction
// is 8 bytes: opcode, dst (low nibble) / src (high nibble) registers, a
// 16-bit offset and a 32-bit immediate.

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Insn {
    pub(super) code: u8,
    pub(super) regs: u8,
    pub(super) off: i16,
    pub(super) imm: i32,
}

pub(super) const R0: u8 = 0;
pub(super) const R1: u8 = 1;
pub(super) const R2: u8 = 2;
pub(super) const R3: u8 = 3;
pub(super) const R10: u8 = 10;

// Opcode parts (linux/bpf_common.h, linux/bpf.h).
pub(super) const BPF_ALU64: u8 = 0x07;
pub(super) const BPF_JMP: u8 = 0x05;
pub(super) const BPF_ST: u8 = 0x02;
pub(super) const BPF_K: u8 = 0x00;
pub(super) const BPF_X: u8 = 0x08;
pub(super) const BPF_MOV: u8 = 0xb0;
pub(super) const BPF_ADD: u8 = 0x00;
pub(super) const BPF_CALL: u8 = 0x80;
pub(super) const BPF_EXIT: u8 = 0x90;
pub(super) const BPF_MEM: u8 = 0x60;
pub(super) const BPF_DW: u8 = 0x18;

pub(super) const HELPER_PROBE_WRITE_USER: i32 = 36;
pub(super) const HELPER_SEND_SIGNAL: i32 = 109;
pub(super) const HELPER_PROBE_READ_KERNEL: i32 = 113;

pub(super) const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// dst = imm
pub(super) const fn mov64_imm(dst: u8, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
}

/// dst = src
pub(super) const fn mov64_reg(dst: u8, src: u8) -> Insn {
    insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)
}

/// dst += imm
pub(super) const fn add64_imm(dst: u8, imm: i32) -> Insn {
    insn(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm)
}

/// *(u64 *)(dst + off) = imm
pub(super) const fn st_mem_dw(dst: u8, off: i16, imm: i32) -> Insn {
    insn(BPF_ST | BPF_MEM | BPF_DW, dst, 0, off, imm)
}

/// r0 = helper(r1..r5)
pub(super) const fn call(helper: i32) -> Insn {
    insn(BPF_JMP | BPF_CALL, 0, 0, 0, helper)
}

pub(super) const fn exit() -> Insn {
    insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
}

/// `return imm;`
pub(super) fn ret(imm: i32) -> [Insn; 2] {
    [mov64_imm(R0, imm), exit()]
}

// -------------------------------------------------------------- bpf(2) --

pub(super) const BPF_MAP_CREATE: libc::c_long = 0;
pub(super) const BPF_PROG_LOAD: libc::c_long = 5;
pub(super) const BPF_PROG_ATTACH: libc::c_long = 8;
pub(super) const BPF_PROG_DETACH: libc::c_long = 9;
pub(super) const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;

pub(super) const BPF_MAP_TYPE_RINGBUF: u32 = 27;

pub(super) const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
pub(super) const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
pub(super) const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
pub(super) const BPF_PROG_TYPE_TRACING: u32 = 26;
pub(super) const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
pub(super) const BPF_PROG_TYPE_LSM: u32 = 29;

pub(super) const BPF_CGROUP_INET4_CONNECT: u32 = 10;
pub(super) const BPF_CGROUP_INET_EGRESS: u32 = 1;
pub(super) const BPF_TRACE_RAW_TP: u32 = 23;
pub(super) const BPF_TRACE_FENTRY: u32 = 24;
pub(super) const BPF_LSM_MAC: u32 = 27;

pub(super) const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr` for BPF_MAP_CREATE (prefix up to map_extra; the
/// kernel accepts a shorter attr and zero-fills the rest).
#[repr(C)]
#[derive(Default)]
pub(super) struct MapCreateAttr {
    pub(super) map_type: u32,
    pub(super) key_size: u32,
    pub(super) value_size: u32,
    pub(super) max_entries: u32,
    pub(super) map_flags: u32,
    pub(super) inner_map_fd: u32,
    pub(super) numa_node: u32,
    pub(super) map_name: [u8; 16],
    pub(super) map_ifindex: u32,
    pub(super) btf_fd: u32,
    pub(super) btf_key_type_id: u32,
    pub(super) btf_value_type_id: u32,
    pub(super) btf_vmlinux_value_type_id: u32,
    pub(super) map_extra: u64,
}

/// `union bpf_attr` for BPF_PROG_LOAD, up to log_true_size.
#[repr(C)]
#[derive(Default)]
pub(super) struct ProgLoadAttr {
    pub(super) prog_type: u32,
    pub(super) insn_cnt: u32,
    pub(super) insns: u64,
    pub(super) license: u64,
    pub(super) log_level: u32,
    pub(super) log_size: u32,
    pub(super) log_buf: u64,
    pub(super) kern_version: u32,
    pub(super) prog_flags: u32,
    pub(super) prog_name: [u8; 16],
    pub(super) prog_ifindex: u32,
    pub(super) expected_attach_type: u32,
    pub(super) prog_btf_fd: u32,
    pub(super) func_info_rec_size: u32,
    pub(super) func_info: u64,
    pub(super) func_info_cnt: u32,
    pub(super) line_info_rec_size: u32,
    pub(super) line_info: u64,
    pub(super) line_info_cnt: u32,
    pub(super) attach_btf_id: u32,
    pub(super) attach_btf_obj_fd: u32,
    pub(super) core_relo_cnt: u32,
    pub(super) fd_array: u64,
    pub(super) core_relos: u64,
    pub(super) core_relo_rec_size: u32,
    pub(super) log_true_size: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH / BPF_PROG_DETACH.
#[repr(C)]
#[derive(Default)]
pub(super) struct ProgAttachAttr {
    pub(super) target_fd: u32,
    pub(super) attach_bpf_fd: u32,
    pub(super) attach_type: u32,
    pub(super) attach_flags: u32,
    pub(super) replace_bpf_fd: u32,
    pub(super) relative_fd: u32,
    pub(super) expected_revision: u64,
}

/// `union bpf_attr` for BPF_RAW_TRACEPOINT_OPEN.
#[repr(C)]
#[derive(Default)]
pub(super) struct RawTpOpenAttr {
    pub(super) name: u64,
    pub(super) prog_fd: u32,
    pub(super) _pad: u32,
    pub(super) cookie: u64,
}

/// bpf(cmd, attr): a new fd, or the errno.
pub(super) fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> Result<libc::c_long, i32> {
    // SAFETY: `attr` is a valid repr(C) prefix of union bpf_attr of the
    // size passed; every pointer inside it is valid for the call's length.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// Takes ownership of an fd returned by a syscall so it is closed on drop.
pub(super) fn own_fd(fd: libc::c_long) -> Result<OwnedFd, i32> {
    let raw = i32::try_from(fd).map_err(|_| libc::EBADF)?;
    // SAFETY: the kernel just returned `raw` as a new fd that nothing else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

pub(super) struct LoadError {
    pub(super) errno: i32,
    pub(super) log: String,
}

impl LoadError {
    /// "Invalid argument (EINVAL); verifier: unknown func ...".
    pub(super) fn describe(&self) -> String {
        let mut s = errno_text(self.errno);
        let lines = log_excerpt(&self.log);
        if !lines.is_empty() {
            s.push_str("; verifier: ");
            s.push_str(&lines);
        }
        s
    }

    /// The verifier refused a helper this program type/kernel lacks.
    pub(super) fn unknown_helper(&self) -> bool {
        // Older kernels say "unknown func", newer ones "program of this
        // type cannot use helper".
        self.errno == libc::EINVAL
            && (self.log.contains("unknown func") || self.log.contains("cannot use helper"))
    }
}

/// The verifier's conclusion: the last few lines that are not its
/// statistics (for these tiny programs that is where the reason is).
pub(super) fn log_excerpt(log: &str) -> String {
    let lines: Vec<String> = log
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| {
            !l.is_empty() && !l.starts_with("processed ") && !l.starts_with("verification time")
        })
        .collect();
    let from = lines.len().saturating_sub(3);
    let mut s = lines[from..].join(" / ");
    if s.len() > 300 {
        let mut cut = 300;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[derive(Default, Clone, Copy)]
pub(super) struct LoadOpts {
    pub(super) expected_attach_type: u32,
    pub(super) attach_btf_id: u32,
}

pub(super) const LOG_SIZE: usize = 64 * 1024;

/// BPF_PROG_LOAD with license "GPL" (several helpers are GPL-only) and a
/// verifier log buffer.
pub(super) fn load_prog(
    prog_type: u32,
    insns: &[Insn],
    opts: LoadOpts,
) -> Result<OwnedFd, LoadError> {
    let license = c"GPL";
    let mut log = vec![0u8; LOG_SIZE];
    let mut name = [0u8; 16];
    let tag = b"agentguard_prb";
    name[..tag.len()].copy_from_slice(tag);
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: LOG_SIZE as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        expected_attach_type: opts.expected_attach_type,
        attach_btf_id: opts.attach_btf_id,
        ..Default::default()
    };
    match sys_bpf(BPF_PROG_LOAD, &mut attr).and_then(own_fd) {
        Ok(fd) => Ok(fd),
        Err(errno) => {
            let end = log.iter().position(|&c| c == 0).unwrap_or(log.len());
            Err(LoadError {
                errno,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}
