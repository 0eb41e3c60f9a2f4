//! Reads of kernel memory at offsets taken from the running kernel's BTF.
//!
//! rustc emits no CO-RE relocations, so userspace looks each offset up in
//! /sys/kernel/btf/vmlinux and overrides these globals before load.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    Global,
};

use agentguard_common::event::{dir_status, DirChain, DIR_LEN, MAX_DIR_STEPS, NAME_LEN};

macro_rules! offsets {
    ($($name:ident),* $(,)?) => {
        $(
            #[no_mangle]
            pub static $name: Global<u64> = Global::new(0);
        )*
    };
}

offsets!(
    OFF_TASK_REAL_PARENT,
    OFF_TASK_TGID,
    OFF_TASK_EXIT_CODE,
    OFF_TASK_FS,
    OFF_TASK_FILES,
    OFF_FS_ROOT,
    OFF_FS_PWD,
    OFF_PATH_MNT,
    OFF_PATH_DENTRY,
    OFF_DENTRY_PARENT,
    OFF_DENTRY_NAME,
    OFF_QSTR_NAME,
    OFF_MOUNT_MNT,
    OFF_MOUNT_PARENT,
    OFF_MOUNT_MOUNTPOINT,
    OFF_VFSMOUNT_ROOT,
    OFF_FILES_FDT,
    OFF_FDT_MAX_FDS,
    OFF_FDT_FD,
    OFF_FILE_PATH,
);

#[inline(always)]
pub fn read_u64(addr: u64) -> Result<u64, i32> {
    // SAFETY: bpf_probe_read_kernel tolerates any address (returns an error
    // instead of faulting); the value is plain data.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }
}

#[inline(always)]
pub fn read_u32(addr: u64) -> Result<u32, i32> {
    // SAFETY: as in read_u64.
    unsafe { bpf_probe_read_kernel(addr as *const u32) }
}

#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: the helper has no preconditions; the result is only used as an
    // address for bpf_probe_read_kernel.
    unsafe { bpf_get_current_task() }
}

/// tgid of the current task's real parent, 0 when unreadable.
#[inline(always)]
pub fn current_ppid() -> u32 {
    let task = current_task();
    match read_u64(task + OFF_TASK_REAL_PARENT.load()) {
        Ok(parent) => read_u32(parent + OFF_TASK_TGID.load()).unwrap_or(0),
        Err(_) => 0,
    }
}

/// `task->exit_code` of the current task.
#[inline(always)]
pub fn current_exit_code() -> u32 {
    read_u32(current_task() + OFF_TASK_EXIT_CODE.load()).unwrap_or(0)
}

/// A `struct path`: (vfsmount, dentry).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KPath {
    pub mnt: u64,
    pub dentry: u64,
}

#[inline(always)]
fn read_path(addr: u64) -> Result<KPath, i32> {
    Ok(KPath {
        mnt: read_u64(addr + OFF_PATH_MNT.load())?,
        dentry: read_u64(addr + OFF_PATH_DENTRY.load())?,
    })
}

/// The current task's (root, cwd).
#[inline(always)]
fn fs_paths(task: u64) -> Result<(KPath, KPath), i32> {
    let fs = read_u64(task + OFF_TASK_FS.load())?;
    Ok((
        read_path(fs + OFF_FS_ROOT.load())?,
        read_path(fs + OFF_FS_PWD.load())?,
    ))
}

/// `f_path` of the current task's open file `fd`.
#[inline(always)]
fn fd_path(task: u64, fd: i32) -> Result<KPath, i32> {
    if fd < 0 {
        return Err(-9);
    }
    let files = read_u64(task + OFF_TASK_FILES.load())?;
    let fdt = read_u64(files + OFF_FILES_FDT.load())?;
    let max = read_u32(fdt + OFF_FDT_MAX_FDS.load())?;
    if fd as u32 >= max {
        return Err(-9);
    }
    let fds = read_u64(fdt + OFF_FDT_FD.load())?;
    let file = read_u64(fds + (fd as u64) * 8)?;
    if file == 0 {
        return Err(-9);
    }
    read_path(file + OFF_FILE_PATH.load())
}

/// Fills `dir` with the directory a relative path is resolved against:
/// the cwd for `AT_FDCWD`, else the directory open as `dirfd`.
/// Called only when the path is relative (or empty, for AT_EMPTY_PATH).
#[inline(always)]
pub fn capture_dir(dirfd: i32, dir: &mut DirChain) {
    dir.len = 0;
    dir.depth = 0;
    let task = current_task();
    let (root, start) = match fs_paths(task) {
        Ok((root, cwd)) => {
            if dirfd == agentguard_common::event::AT_FDCWD {
                (root, cwd)
            } else {
                match fd_path(task, dirfd) {
                    Ok(p) => (root, p),
                    Err(_) => {
                        dir.status = dir_status::FAILED;
                        return;
                    }
                }
            }
        }
        Err(_) => {
            dir.status = dir_status::FAILED;
            return;
        }
    };
    dir.status = walk(start, root, dir).unwrap_or(dir_status::FAILED);
}

/// Walks from `start` up to `root` the way the kernel's d_path does, crossing
/// mount points, and appends each name (innermost first) to `dir.buf`.
/// Stopping at the task's root means container processes get container paths.
#[inline(always)]
fn walk(start: KPath, root: KPath, dir: &mut DirChain) -> Result<u16, i32> {
    let off_mount_mnt = OFF_MOUNT_MNT.load();
    let off_vfs_root = OFF_VFSMOUNT_ROOT.load();
    let off_mnt_parent = OFF_MOUNT_PARENT.load();
    let off_mnt_mountpoint = OFF_MOUNT_MOUNTPOINT.load();
    let off_d_parent = OFF_DENTRY_PARENT.load();
    let off_d_name = OFF_DENTRY_NAME.load() + OFF_QSTR_NAME.load();

    let mut dentry = start.dentry;
    let mut vfsmnt = start.mnt;
    let mut mnt = vfsmnt.wrapping_sub(off_mount_mnt);
    let mut len: usize = 0;
    let mut depth: u16 = 0;
    let mut status = dir_status::TRUNCATED;
    for _ in 0..MAX_DIR_STEPS {
        if dentry == root.dentry && vfsmnt == root.mnt {
            status = dir_status::COMPLETE;
            break;
        }
        let mnt_root = read_u64(vfsmnt + off_vfs_root)?;
        if dentry == mnt_root {
            let parent = read_u64(mnt + off_mnt_parent)?;
            if parent == mnt {
                // The top of the mount tree (outside the task's root: a
                // chroot escape or a detached mount); the chain is all there is.
                status = dir_status::COMPLETE;
                break;
            }
            dentry = read_u64(mnt + off_mnt_mountpoint)?;
            mnt = parent;
            vfsmnt = mnt + off_mount_mnt;
            continue;
        }
        let parent = read_u64(dentry + off_d_parent)?;
        if parent == dentry {
            status = dir_status::COMPLETE;
            break;
        }
        if len >= DIR_LEN {
            break;
        }
        let name = read_u64(dentry + off_d_name)?;
        // The mask proves to the verifier that off + NAME_LEN <= DIR_BUF.
        let off = len & (DIR_LEN - 1);
        // SAFETY: the helper bounds the copy by the slice length and reports
        // faults as errors.
        let got = unsafe {
            bpf_probe_read_kernel_str_bytes(name as *const u8, &mut dir.buf[off..off + NAME_LEN])
        }?;
        len = off + got.len() + 1;
        depth += 1;
        dentry = parent;
    }
    dir.len = len as u32;
    dir.depth = depth;
    Ok(status)
}
