/*
 * evade: performs, one at a time, the evasions an AI agent would try against
 * agentguard, so integration tests can assert that each one is stopped.
 *
 * Build (static, so it runs unchanged inside containers and VMs):
 *   cc -static -O2 -Wall -Wextra -Werror -o evade evade.c -lpthread
 *
 * Output contract, for every subcommand:
 *   stdout: exactly one line, "ok [key=value ...]" or "err ERRNO_NAME"
 *   exit:   0 for ok, 1 for err, 2 for usage/setup failure (message on stderr)
 * A process killed by a signal (e.g. by the guard) simply dies; the caller
 * sees the signal. Subcommands that exec print nothing on success: the new
 * program owns stdout from then on.
 *
 * Everything uses raw syscalls where the point is to bypass a libc wrapper or
 * take an unusual kernel path (io_uring, openat2, the i386 ABI).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/io_uring.h>
#include <linux/openat2.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Result reporting                                                         */
/* ------------------------------------------------------------------------ */

#define E(x) { x, #x }
static const struct {
	int num;
	const char *name;
} errno_names[] = {
	E(EPERM), E(ENOENT), E(ESRCH), E(EINTR), E(EIO), E(ENXIO), E(E2BIG),
	E(ENOEXEC), E(EBADF), E(ECHILD), E(EAGAIN), E(ENOMEM), E(EACCES),
	E(EFAULT), E(EBUSY), E(EEXIST), E(EXDEV), E(ENODEV), E(ENOTDIR),
	E(EISDIR), E(EINVAL), E(ENFILE), E(EMFILE), E(ETXTBSY), E(EFBIG),
	E(ENOSPC), E(ESPIPE), E(EROFS), E(EMLINK), E(EPIPE), E(ERANGE),
	E(ENAMETOOLONG), E(ENOSYS), E(ENOTEMPTY), E(ELOOP), E(EOVERFLOW),
	E(ENOTSOCK), E(EPROTOTYPE), E(EPROTONOSUPPORT), E(ESOCKTNOSUPPORT),
	E(EOPNOTSUPP), E(EAFNOSUPPORT), E(EADDRINUSE), E(EADDRNOTAVAIL),
	E(ENETDOWN), E(ENETUNREACH), E(ECONNABORTED), E(ECONNRESET),
	E(ETIMEDOUT), E(ECONNREFUSED), E(EHOSTUNREACH), E(EALREADY),
	E(EINPROGRESS), E(EDQUOT), E(ECANCELED), E(EKEYREJECTED), E(ENODATA),
};
#undef E

/* Prints "err NAME" for a positive errno value and returns exit status 1. */
static int report_err(int e)
{
	for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++) {
		if (errno_names[i].num == e) {
			printf("err %s\n", errno_names[i].name);
			fflush(stdout);
			return 1;
		}
	}
	printf("err E%d\n", e);
	fflush(stdout);
	return 1;
}

/* Prints "ok" plus optional formatted " key=value" text; returns 0. */
__attribute__((format(printf, 1, 2)))
static int report_ok(const char *fmt, ...)
{
	fputs("ok", stdout);
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		putchar(' ');
		vprintf(fmt, ap);
		va_end(ap);
	}
	putchar('\n');
	fflush(stdout);
	return 0;
}

/* Usage or setup failure: not an outcome of the evasion itself. */
__attribute__((format(printf, 1, 2), noreturn))
static void die_setup(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("evade: ", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static long parse_long(const char *s, const char *what)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end)
		die_setup("bad %s: %s", what, s);
	return v;
}

static struct sockaddr_in parse_ipv4(const char *ip, const char *port)
{
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	long p = parse_long(port, "port");
	if (p < 0 || p > 65535)
		die_setup("bad port: %s", port);
	sa.sin_port = htons((uint16_t)p);
	if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
		die_setup("bad IPv4 address: %s", ip);
	return sa;
}

/*
 * Reads up to 64 bytes from fd with plain read() and reports "ok bytes=N".
 * A failing read reports err: "ok" means the content was actually obtained,
 * which is what a guard on secrets must prevent.
 */
static int read_and_report(int fd)
{
	char buf[64];
	size_t got = 0;
	while (got < sizeof(buf)) {
		ssize_t n = read(fd, buf + got, sizeof(buf) - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			close(fd);
			return report_err(e);
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	return report_ok("bytes=%zu", got);
}

/* Reports the result of a syscall returning -1/errno on failure. */
static int report_rc(long rc)
{
	return rc < 0 ? report_err(errno) : report_ok(NULL);
}

/* ------------------------------------------------------------------------ */
/* io_uring, raw syscalls (no liburing)                                     */
/* ------------------------------------------------------------------------ */

/*
 * Filesystem and network operations submitted through io_uring are executed
 * by the kernel (possibly in an io-wq worker thread) without the process
 * ever entering the corresponding syscall, so syscall-tracepoint guards miss
 * them unless they hook the LSM/VFS layer.
 */
struct ring {
	int fd;
	void *sq_map, *cq_map;
	size_t sq_map_len, cq_map_len;
	struct io_uring_sqe *sqes;
	size_t sqes_len;
	unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
	unsigned *cq_head, *cq_tail, *cq_mask;
	struct io_uring_cqe *cqes;
};

static int sys_io_uring_setup(unsigned entries, struct io_uring_params *p)
{
	return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_io_uring_enter(int fd, unsigned to_submit, unsigned min_complete,
			      unsigned flags)
{
	return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete,
			    flags, NULL, 0);
}

/* Returns 0, or a positive errno (ring left closed). */
static int ring_init(struct ring *r)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p)); /* flags 0: plain interrupt-driven ring */
	memset(r, 0, sizeof(*r));

	r->fd = sys_io_uring_setup(1, &p);
	if (r->fd < 0)
		return errno;

	r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	r->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	/* Since 5.4 both rings live in one mapping (IORING_FEAT_SINGLE_MMAP). */
	if (p.features & IORING_FEAT_SINGLE_MMAP) {
		if (r->cq_map_len > r->sq_map_len)
			r->sq_map_len = r->cq_map_len;
		r->cq_map_len = r->sq_map_len;
	}
	r->sq_map = mmap(NULL, r->sq_map_len, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
	if (r->sq_map == MAP_FAILED)
		goto fail;
	if (p.features & IORING_FEAT_SINGLE_MMAP) {
		r->cq_map = r->sq_map;
	} else {
		r->cq_map = mmap(NULL, r->cq_map_len, PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_POPULATE, r->fd,
				 IORING_OFF_CQ_RING);
		if (r->cq_map == MAP_FAILED)
			goto fail;
	}
	r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
	r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
	if (r->sqes == MAP_FAILED)
		goto fail;

	char *sq = r->sq_map, *cq = r->cq_map;
	r->sq_head = (unsigned *)(sq + p.sq_off.head);
	r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	r->sq_array = (unsigned *)(sq + p.sq_off.array);
	r->cq_head = (unsigned *)(cq + p.cq_off.head);
	r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
	r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
	return 0;

fail:;
	int e = errno ? errno : EINVAL; /* never report success by accident */
	close(r->fd); /* the process exits right after; mappings go with it */
	return e;
}

/* A zeroed SQE in the next free slot (not yet visible to the kernel). */
static struct io_uring_sqe *ring_get_sqe(struct ring *r)
{
	/* Only we write sq_tail; the kernel writes sq_head. */
	unsigned tail = __atomic_load_n(r->sq_tail, __ATOMIC_RELAXED);
	unsigned idx = tail & *r->sq_mask;
	struct io_uring_sqe *sqe = &r->sqes[idx];
	memset(sqe, 0, sizeof(*sqe));
	r->sq_array[idx] = idx;
	return sqe;
}

/*
 * Publishes the SQE prepared by ring_get_sqe, waits for its completion and
 * returns cqe->res (>= 0 result or -errno). On io_uring_enter failure
 * returns -errno of that.
 */
static int ring_submit_wait(struct ring *r)
{
	unsigned tail = __atomic_load_n(r->sq_tail, __ATOMIC_RELAXED);
	/* Release: the SQE and array slot are visible before the new tail. */
	__atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);

	for (;;) {
		unsigned head = __atomic_load_n(r->cq_head, __ATOMIC_RELAXED);
		/* Acquire: CQE contents are read only after seeing the tail. */
		if (head != __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) {
			int res = r->cqes[head & *r->cq_mask].res;
			/* Release: we are done reading the CQE before freeing it. */
			__atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
			return res;
		}
		/*
		 * Submit whatever the kernel has not consumed yet (0 if a
		 * previous, interrupted enter already took it) and wait.
		 */
		unsigned pending = tail + 1 -
			__atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
		if (sys_io_uring_enter(r->fd, pending, 1,
				       IORING_ENTER_GETEVENTS) < 0 &&
		    errno != EINTR)
			return -errno;
	}
}

/* Runs one prepared operation: sets up a ring, lets prep fill the SQE. */
typedef void (*sqe_prep_fn)(struct io_uring_sqe *sqe, void *arg);

/* Returns the CQE res; *setup_err gets a positive errno if setup failed. */
static int uring_run(sqe_prep_fn prep, void *arg, int *setup_err)
{
	struct ring r;
	*setup_err = ring_init(&r);
	if (*setup_err)
		return 0;
	prep(ring_get_sqe(&r), arg);
	int res = ring_submit_wait(&r);
	close(r.fd);
	return res;
}

/* Reports a CQE res (-errno or >= 0); if ok, res is not otherwise used. */
static int report_cqe(int res, int setup_err)
{
	if (setup_err)
		return report_err(setup_err);
	/* Kernels without the opcode complete it with -EINVAL. */
	return res < 0 ? report_err(-res) : report_ok(NULL);
}

struct path_op {
	const char *a, *b;
	unsigned flags;
};

static void prep_unlinkat(struct io_uring_sqe *sqe, void *arg)
{
	struct path_op *op = arg;
	sqe->opcode = IORING_OP_UNLINKAT;
	sqe->fd = AT_FDCWD;
	sqe->addr = (uint64_t)(uintptr_t)op->a;
	sqe->unlink_flags = op->flags;
}

static void prep_renameat(struct io_uring_sqe *sqe, void *arg)
{
	struct path_op *op = arg;
	sqe->opcode = IORING_OP_RENAMEAT;
	sqe->fd = AT_FDCWD; /* old dirfd */
	sqe->addr = (uint64_t)(uintptr_t)op->a;
	sqe->len = (uint32_t)AT_FDCWD; /* new dirfd travels in len */
	sqe->addr2 = (uint64_t)(uintptr_t)op->b;
}

static void prep_openat(struct io_uring_sqe *sqe, void *arg)
{
	struct path_op *op = arg;
	sqe->opcode = IORING_OP_OPENAT;
	sqe->fd = AT_FDCWD;
	sqe->addr = (uint64_t)(uintptr_t)op->a;
	sqe->open_flags = op->flags;
	sqe->len = 0; /* mode */
}

struct connect_op {
	int fd;
	struct sockaddr_in sa;
};

static void prep_connect(struct io_uring_sqe *sqe, void *arg)
{
	struct connect_op *op = arg;
	sqe->opcode = IORING_OP_CONNECT;
	sqe->fd = op->fd;
	sqe->addr = (uint64_t)(uintptr_t)&op->sa;
	sqe->off = sizeof(op->sa); /* addrlen travels in off/addr2 */
}

static int cmd_uring_setup(char **av)
{
	(void)av;
	struct ring r;
	int e = ring_init(&r);
	if (e)
		return report_err(e);
	close(r.fd);
	return report_ok(NULL);
}

static int cmd_uring_unlink(char **av)
{
	struct path_op op = { av[0], NULL, 0 };
	int e, res = uring_run(prep_unlinkat, &op, &e);
	return report_cqe(res, e);
}

static int cmd_uring_rmdir(char **av)
{
	struct path_op op = { av[0], NULL, AT_REMOVEDIR };
	int e, res = uring_run(prep_unlinkat, &op, &e);
	return report_cqe(res, e);
}

static int cmd_uring_rename(char **av)
{
	struct path_op op = { av[0], av[1], 0 };
	int e, res = uring_run(prep_renameat, &op, &e);
	return report_cqe(res, e);
}

static int cmd_uring_open(char **av)
{
	struct path_op op = { av[0], NULL, O_RDONLY };
	int e, res = uring_run(prep_openat, &op, &e);
	if (e || res < 0)
		return report_cqe(res, e);
	return read_and_report(res);
}

static int cmd_uring_connect(char **av)
{
	struct connect_op op;
	op.sa = parse_ipv4(av[0], av[1]);
	op.fd = socket(AF_INET, SOCK_STREAM, 0);
	if (op.fd < 0)
		return report_err(errno);
	int e, res = uring_run(prep_connect, &op, &e);
	close(op.fd);
	return report_cqe(res, e);
}

/* ------------------------------------------------------------------------ */
/* Alternative open paths                                                   */
/* ------------------------------------------------------------------------ */

static int cmd_openat2(char **av)
{
	/* openat2 has its own syscall number; a guard hooking only openat misses it. */
	struct open_how how;
	memset(&how, 0, sizeof(how));
	how.flags = O_RDONLY;
	how.resolve = 0;
	int fd = (int)syscall(SYS_openat2, AT_FDCWD, av[0], &how, sizeof(how));
	if (fd < 0)
		return report_err(errno);
	return read_and_report(fd);
}

/* open(2) and creat(2) have their own numbers on x86-64 (libc calls openat). */
static int cmd_legacy_open(char **av)
{
	int fd = (int)syscall(SYS_open, av[0], O_RDONLY);
	if (fd < 0)
		return report_err(errno);
	return read_and_report(fd);
}

static int cmd_creat(char **av)
{
	int fd = (int)syscall(SYS_creat, av[0], 0600);
	if (fd < 0)
		return report_err(errno);
	close(fd);
	return report_ok(NULL);
}

static int cmd_open(char **av)
{
	int fd = openat(AT_FDCWD, av[0], O_RDONLY);
	if (fd < 0)
		return report_err(errno);
	return read_and_report(fd);
}

/*
 * Floods the daemon: opens (and closes), or unlinks, PATH as fast as it can
 * for SECONDS. Prints ok calls=N failed=F.
 */
static int flood(const char *path, const char *secs_arg, int unlink_it)
{
	long secs = parse_long(secs_arg, "seconds");
	struct timespec t0, t;
	long calls = 0, failed = 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		for (int i = 0; i < 256; i++) {
			if (unlink_it) {
				if (unlinkat(AT_FDCWD, path, 0) < 0)
					failed++;
			} else {
				int fd = openat(AT_FDCWD, path, O_RDONLY);
				if (fd < 0)
					failed++;
				else
					close(fd);
			}
			calls++;
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec >= secs)
			break;
	}
	return report_ok("calls=%ld failed=%ld", calls, failed);
}

static int cmd_open_flood(char **av)
{
	return flood(av[0], av[1], 0);
}

static int cmd_unlink_flood(char **av)
{
	return flood(av[0], av[1], 1);
}

/* ------------------------------------------------------------------------ */
/* Sockets that bypass TCP/UDP connect-level policy (created, never used)   */
/* ------------------------------------------------------------------------ */

static int make_socket(int domain, int type, int proto)
{
	int fd = socket(domain, type, proto);
	if (fd < 0)
		return report_err(errno);
	close(fd);
	return report_ok(NULL);
}

static int cmd_raw_socket(char **av)
{
	(void)av;
	return make_socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
}

static int cmd_raw6_socket(char **av)
{
	(void)av;
	return make_socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6);
}

static int cmd_packet_socket(char **av)
{
	(void)av;
	return make_socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
}

static int cmd_dgram_icmp_socket(char **av)
{
	(void)av;
	/* Unprivileged "ping" socket; net.ipv4.ping_group_range may refuse it. */
	return make_socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
}

/* ------------------------------------------------------------------------ */
/* race-open: time-of-check/time-of-use on the path buffer                  */
/* ------------------------------------------------------------------------ */

/*
 * A guard that reads the path from user memory at syscall entry (a
 * tracepoint or kprobe) and lets the kernel read it again later can be
 * fooled by changing the buffer in between. One thread flips the buffer
 * between SECRET and DECOY; the other opens it in a loop and checks, by
 * inode, which file it really got.
 *
 * The buffer is an array of 64-bit words written with atomic stores, so
 * there is no data race in the C sense (the main thread never reads it; only
 * the kernel does) and differing bytes within one word flip together.
 */
#define RACE_WORDS (4096 / sizeof(uint64_t))
static uint64_t race_buf[RACE_WORDS];
static uint64_t race_secret[RACE_WORDS], race_decoy[RACE_WORDS];
static size_t race_diff[RACE_WORDS], race_ndiff;
static int race_stop;

static void *race_flipper(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&race_stop, __ATOMIC_RELAXED)) {
		for (size_t k = 0; k < race_ndiff; k++)
			__atomic_store_n(&race_buf[race_diff[k]],
					 race_decoy[race_diff[k]], __ATOMIC_RELAXED);
		for (size_t k = 0; k < race_ndiff; k++)
			__atomic_store_n(&race_buf[race_diff[k]],
					 race_secret[race_diff[k]], __ATOMIC_RELAXED);
	}
	return NULL;
}

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmd_race_open(char **av)
{
	const char *secret = av[0], *decoy = av[1];
	char *end;
	double seconds = strtod(av[2], &end);
	if (end == av[2] || *end || !(seconds >= 0))
		die_setup("bad SECONDS: %s", av[2]);
	size_t len = strlen(secret);
	if (strlen(decoy) != len)
		die_setup("SECRET and DECOY must have the same length (pad DECOY, e.g. with extra slashes)");

	struct stat sst, dst;
	if (stat(secret, &sst) < 0)
		die_setup("stat %s: %s", secret, strerror(errno));
	if (stat(decoy, &dst) < 0)
		die_setup("stat %s: %s", decoy, strerror(errno));

	/*
	 * Start the path at a shift that puts the first differing byte at a
	 * word boundary: if the paths differ in at most 8 consecutive bytes,
	 * every flip is then a single atomic store and the kernel only ever
	 * sees SECRET or DECOY, never a mix of both.
	 */
	size_t first = 0;
	while (first < len && secret[first] == decoy[first])
		first++;
	size_t shift = (sizeof(uint64_t) - first % sizeof(uint64_t)) % sizeof(uint64_t);
	if (shift + len + 1 > sizeof(race_buf))
		die_setup("path too long");

	/* Zero padding keeps both NUL-terminated inside the buffer. */
	memcpy((char *)race_secret + shift, secret, len);
	memcpy((char *)race_decoy + shift, decoy, len);
	memcpy(race_buf, race_secret, sizeof(race_buf));
	for (size_t i = 0; i < RACE_WORDS; i++)
		if (race_secret[i] != race_decoy[i])
			race_diff[race_ndiff++] = i;

	pthread_t th;
	int rc = pthread_create(&th, NULL, race_flipper, NULL);
	if (rc)
		die_setup("pthread_create: %s", strerror(rc));

	unsigned long n_secret = 0, n_decoy = 0, n_denied = 0, n_other = 0;
	const char *path = (const char *)race_buf + shift;
	double deadline = now_seconds() + seconds;
	while (now_seconds() < deadline) {
		int fd = openat(AT_FDCWD, path, O_RDONLY);
		if (fd < 0) {
			if (errno == EPERM)
				n_denied++;
			else
				n_other++;
			continue;
		}
		struct stat st;
		if (fstat(fd, &st) < 0)
			n_other++;
		else if (st.st_dev == sst.st_dev && st.st_ino == sst.st_ino)
			n_secret++;
		else if (st.st_dev == dst.st_dev && st.st_ino == dst.st_ino)
			n_decoy++;
		else
			n_other++; /* neither file (replaced meanwhile?) */
		close(fd);
	}

	__atomic_store_n(&race_stop, 1, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	return report_ok("secret=%lu decoy=%lu denied=%lu other=%lu", n_secret,
			 n_decoy, n_denied, n_other);
}

/* ------------------------------------------------------------------------ */
/* compat-*: the i386 syscall ABI (int $0x80) from this 64-bit process      */
/* ------------------------------------------------------------------------ */

/*
 * int $0x80 enters the kernel through the 32-bit syscall table with 32-bit
 * syscall numbers, even from a 64-bit process. Guards that filter on
 * x86_64 syscall numbers (raw_syscalls tracepoint, seccomp without an arch
 * check) see the wrong syscall or none. Pointers are truncated to 32 bits,
 * hence the MAP_32BIT scratch page.
 */
#define NR32_OPEN 5
#define NR32_UNLINK 10
#define NR32_EXECVE 11

/*
 * Without IA32 emulation (CONFIG_IA32_EMULATION=n or ia32_emulation=0) there
 * is no int 0x80 gate and the instruction raises #GP, i.e. SIGSEGV with
 * si_code SI_KERNEL. Report that as the ENOSYS it means. Any other SIGSEGV
 * finds the default action restored (SA_RESETHAND) when the faulting
 * instruction re-executes. A guard's own kill is SIGKILL, which is not caught.
 */
static void compat_segv(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	if (si->si_code == SI_KERNEL) {
		static const char msg[] = "err ENOSYS\n";
		static const char note[] =
			"evade: int $0x80 faulted: no IA32 emulation\n";
		ssize_t ignored = write(STDOUT_FILENO, msg, sizeof(msg) - 1);
		ignored = write(STDERR_FILENO, note, sizeof(note) - 1);
		(void)ignored;
		_exit(1);
	}
}

static int compat_syscall3(unsigned nr, uint32_t a, uint32_t b, uint32_t c)
{
	struct sigaction sa, old;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = compat_segv;
	sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
	if (sigaction(SIGSEGV, &sa, &old) < 0)
		die_setup("sigaction: %s", strerror(errno));

	unsigned eax = nr;
	/* r8-r11 were zeroed by older kernels on this path: declare clobbered. */
	__asm__ volatile("int $0x80"
			 : "+a"(eax)
			 : "b"(a), "c"(b), "d"(c)
			 : "r8", "r9", "r10", "r11", "memory", "cc");

	sigaction(SIGSEGV, &old, NULL);
	return (int)eax; /* -errno on failure */
}

/* Copies path to a page below 4 GiB; returns its 32-bit address. */
static uint32_t compat_copy_path(const char *path, uint32_t *argv_addr)
{
	size_t len = strlen(path) + 1;
	size_t size = len + 3 * sizeof(uint32_t);
	char *page = mmap(NULL, size, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
	if (page == MAP_FAILED)
		die_setup("mmap MAP_32BIT: %s", strerror(errno));

	/* argv for execve: { path, NULL } as 32-bit pointers, 4-byte aligned. */
	uint32_t base = (uint32_t)(uintptr_t)page;
	uint32_t argv32[2] = { base + 2 * sizeof(uint32_t), 0 };
	memcpy(page, argv32, sizeof(argv32));
	memcpy(page + sizeof(argv32), path, len);
	if (argv_addr)
		*argv_addr = base;
	return argv32[0];
}

static int cmd_compat_open(char **av)
{
	uint32_t p = compat_copy_path(av[0], NULL);
	int fd = compat_syscall3(NR32_OPEN, p, O_RDONLY, 0);
	if (fd < 0)
		return report_err(-fd);
	return read_and_report(fd);
}

static int cmd_compat_unlink(char **av)
{
	uint32_t p = compat_copy_path(av[0], NULL);
	int rc = compat_syscall3(NR32_UNLINK, p, 0, 0);
	return rc < 0 ? report_err(-rc) : report_ok(NULL);
}

static int cmd_compat_exec(char **av)
{
	uint32_t argv_addr;
	uint32_t p = compat_copy_path(av[0], &argv_addr);
	fflush(stdout);
	int rc = compat_syscall3(NR32_EXECVE, p, argv_addr, 0);
	return report_err(rc < 0 ? -rc : EINVAL); /* returns only on failure */
}

/*
 * The x32 ABI: 64-bit registers, syscall numbers with bit 30 set. Kernels
 * built without CONFIG_X86_X32_ABI (or booted with it off) answer ENOSYS.
 */
#define X32_SYSCALL_BIT 0x40000000L
#define NR_X32_OPENAT 257L

/* syscall(-1): what a tracer's skipped call looks like to the probes. */
static int cmd_nosys(char **av)
{
	(void)av;
	long rc = syscall(-1L);
	return rc < 0 ? report_err(errno) : report_ok(NULL);
}

static int cmd_x32_open(char **av)
{
	long fd = syscall(X32_SYSCALL_BIT | NR_X32_OPENAT, AT_FDCWD, av[0], O_RDONLY, 0);
	if (fd < 0)
		return report_err(errno);
	return read_and_report((int)fd);
}

/* ------------------------------------------------------------------------ */
/* Process-identity tricks                                                  */
/* ------------------------------------------------------------------------ */

/*
 * exec from a non-leader thread: the kernel kills the other threads and the
 * exec'ing thread takes over the leader's PID, so a guard keyed on TIDs or
 * the thread that first matched can lose track of the process.
 */
static void *thread_exec_main(void *arg)
{
	char **args = arg;
	execv(args[0], args);
	exit(report_err(errno)); /* exit(), not return: end the whole process */
}

static int cmd_thread_exec(char **av)
{
	pthread_t th;
	fflush(stdout);
	int rc = pthread_create(&th, NULL, thread_exec_main, av);
	if (rc)
		die_setup("pthread_create: %s", strerror(rc));
	pthread_join(th, NULL);
	die_setup("thread-exec: worker returned");
}

/*
 * The thread-group leader exits first; the process lives on in a worker
 * whose group leader is a zombie. Guards that read task->group_leader state
 * (comm, exe, cgroup of a dead task) may misattribute the worker's actions.
 */
static void *leader_exit_worker(void *arg)
{
	const char *path = arg;
	struct timespec ts = { 0, 200 * 1000 * 1000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	exit(report_rc(unlink(path)));
}

static int cmd_leader_exit_then(char **av)
{
	pthread_t th;
	int rc = pthread_create(&th, NULL, leader_exit_worker, av[0]);
	if (rc)
		die_setup("pthread_create: %s", strerror(rc));
	pthread_exit(NULL);
}

/* ------------------------------------------------------------------------ */
/* Plain operations (the baseline the guard must catch)                     */
/* ------------------------------------------------------------------------ */

static int cmd_unlink(char **av) { return report_rc(unlink(av[0])); }
static int cmd_rmdir(char **av) { return report_rc(rmdir(av[0])); }
static int cmd_rename(char **av) { return report_rc(rename(av[0], av[1])); }
static int cmd_link(char **av) { return report_rc(link(av[0], av[1])); }
static int cmd_symlink(char **av) { return report_rc(symlink(av[0], av[1])); }
static int cmd_truncate(char **av) { return report_rc(truncate(av[0], 0)); }

static int cmd_ftruncate(char **av)
{
	int fd = open(av[0], O_WRONLY);
	if (fd < 0)
		return report_err(errno);
	int rc = ftruncate(fd, 0);
	int e = errno;
	close(fd);
	return rc < 0 ? report_err(e) : report_ok(NULL);
}

static int cmd_open_trunc(char **av)
{
	int fd = open(av[0], O_WRONLY | O_TRUNC);
	if (fd < 0)
		return report_err(errno);
	close(fd);
	return report_ok(NULL);
}

/* A TCP connect to sa; 0 or the errno. */
static int tcp_connect(const struct sockaddr_in *sa)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return errno;
	/* Bound a blackholed connect (reported as EINPROGRESS) instead of ~2 min. */
	struct timeval tv = { 5, 0 };
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	int rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	int e = errno;
	close(fd);
	return rc < 0 ? e : 0;
}

static int cmd_connect(char **av)
{
	struct sockaddr_in sa = parse_ipv4(av[0], av[1]);
	int e = tcp_connect(&sa);
	return e ? report_err(e) : report_ok(NULL);
}

/*
 * A DNS lookup of NAME (type A) sent straight to SERVER:53 over UDP or TCP
 * ("tcp"), as a resolver library would. Returns 0 with *out set to the
 * first A record, or an errno: ETIMEDOUT (no answer in 3 s), ENODATA (a
 * TCP server closed without answering), ENOENT (an answer without an A
 * record), or the socket call's error (EPERM: the query was refused).
 */
static int dns_lookup(const char *server, const char *name, int tcp, struct in_addr *out)
{
	unsigned char q[300], r[1024];
	size_t n = 0;
	int off = tcp ? 2 : 0;
	uint16_t id = (uint16_t)getpid();
	memset(q, 0, sizeof(q));
	q[off + 0] = id >> 8;
	q[off + 1] = id & 0xff;
	q[off + 2] = 0x01; /* RD */
	q[off + 5] = 1;    /* one question */
	n = off + 12;
	const char *p = name;
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);
		if (len == 0 || len > 63 || n + len + 6 > sizeof(q))
			die_setup("bad name: %s", name);
		q[n++] = (unsigned char)len;
		memcpy(q + n, p, len);
		n += len;
		p += len;
		if (*p == '.')
			p++;
	}
	q[n++] = 0;
	q[n++] = 0; q[n++] = 1; /* A */
	q[n++] = 0; q[n++] = 1; /* IN */
	if (tcp) {
		q[0] = (unsigned char)((n - 2) >> 8);
		q[1] = (unsigned char)((n - 2) & 0xff);
	}
	struct sockaddr_in sa = parse_ipv4(server, "53");
	int fd = socket(AF_INET, tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
	if (fd < 0)
		return errno;
	struct timeval tv = { 3, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		return e == EINPROGRESS || e == EAGAIN ? ETIMEDOUT : e;
	}
	/* tcp == 2: the message split over two segments (one byte, then the
	 * rest), as an agent hiding the name from a per-segment reader would. */
	size_t first = tcp == 2 ? 1 : n;
	if (tcp == 2) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	if (send(fd, q, first, 0) < 0 || (first < n && (usleep(100000), send(fd, q + first, n - first, 0) < 0))) {
		int e = errno;
		close(fd);
		return e == EINPROGRESS || e == EAGAIN ? ETIMEDOUT : e;
	}
	ssize_t got = recv(fd, r, sizeof(r), 0);
	close(fd);
	if (got < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK ? ETIMEDOUT : errno;
	if (got == 0)
		return ENODATA; /* TCP: the server closed without an answer */
	unsigned char *m = r + off;
	size_t len = (size_t)got - off;
	if ((size_t)got < (size_t)off + 12)
		return ENOENT;
	size_t i = 12;
	while (i < len && m[i] != 0) /* question name */
		i += m[i] + 1;
	i += 5;
	unsigned an = (unsigned)(m[6] << 8 | m[7]);
	for (unsigned k = 0; k < an && i < len; k++) {
		if ((m[i] & 0xc0) == 0xc0)
			i += 2;
		else {
			while (i < len && m[i] != 0)
				i += m[i] + 1;
			i++;
		}
		if (i + 10 > len)
			break;
		unsigned type = (unsigned)(m[i] << 8 | m[i + 1]);
		unsigned rdlen = (unsigned)(m[i + 8] << 8 | m[i + 9]);
		i += 10;
		if (type == 1 && rdlen == 4 && i + 4 <= len) {
			memcpy(out, m + i, 4);
			return 0;
		}
		i += rdlen;
	}
	return ENOENT;
}

/* dns_lookup's transport for an optional "tcp" / "tcp-split" argument. */
static int transport(const char *arg)
{
	return !arg ? 0 : !strcmp(arg, "tcp") ? 1 : !strcmp(arg, "tcp-split") ? 2 : 0;
}

static int cmd_dns_query(char **av)
{
	struct in_addr a;
	int e = dns_lookup(av[0], av[1], transport(av[2]), &a);
	return e ? report_err(e) : report_ok("addr=%s", inet_ntoa(a));
}

/* Looks NAME up at SERVER, then connects to the answer on PORT. */
static int cmd_dns_connect(char **av)
{
	struct in_addr a;
	int e = dns_lookup(av[0], av[1], transport(av[3]), &a);
	if (e)
		return report_err(e);
	struct sockaddr_in sa = parse_ipv4(inet_ntoa(a), av[2]);
	e = tcp_connect(&sa);
	return e ? report_err(e) : report_ok("addr=%s", inet_ntoa(a));
}

/*
 * A minimal DNS server on ADDR:53 (UDP) for guests without one: answers
 * NAME=IPV4 entries with an A record, TTL 60; other names get NXDOMAIN.
 * Runs until killed; prints nothing.
 */
static int cmd_dns_serve(char **av)
{
	struct sockaddr_in sa = parse_ipv4(av[0], "53");
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return report_err(errno);
	for (;;) {
		unsigned char m[512];
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(fd, m, sizeof(m) - 16, 0, (struct sockaddr *)&from, &fl);
		if (n < 17)
			continue;
		char name[256];
		size_t i = 12, o = 0;
		while (i < (size_t)n && m[i] != 0 && o + m[i] + 1 < sizeof(name)) {
			if (o)
				name[o++] = '.';
			memcpy(name + o, m + i + 1, m[i]);
			o += m[i];
			i += m[i] + 1;
		}
		name[o] = 0;
		i += 5; /* root, type, class */
		if (i > (size_t)n)
			continue;
		struct in_addr ip;
		int found = 0;
		for (char **e = av + 1; *e; e++) {
			const char *eq = strchr(*e, '=');
			if (eq && (size_t)(eq - *e) == o && !strncmp(*e, name, o) &&
			    inet_pton(AF_INET, eq + 1, &ip) == 1)
				found = 1;
		}
		m[2] = 0x81;
		m[3] = found ? 0x80 : 0x83;
		m[6] = 0; m[7] = (unsigned char)found;
		m[8] = m[9] = m[10] = m[11] = 0;
		size_t len = i;
		if (found) {
			unsigned char rr[16] = { 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4 };
			memcpy(rr + 12, &ip, 4);
			memcpy(m + len, rr, 16);
			len += 16;
		}
		sendto(fd, m, len, 0, (struct sockaddr *)&from, fl);
	}
}

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/*
 * Benchmark loop (xtask bench dns): N lookups of NAME at SERVER, then N
 * connects to the answer on PORT (refused or accepted both count; EPERM
 * fails). Prints "ok lookup_ns=T connect_ns=T" (totals).
 */
static int cmd_dns_bench(char **av)
{
	long n = parse_long(av[0], "count");
	struct in_addr a;
	long long t0 = now_ns();
	for (long i = 0; i < n; i++) {
		int e = dns_lookup(av[1], av[2], 0, &a);
		if (e)
			return report_err(e);
	}
	long long t1 = now_ns();
	struct sockaddr_in sa = parse_ipv4(inet_ntoa(a), av[3]);
	for (long i = 0; i < n; i++) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0)
			return report_err(errno);
		int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
		int e = errno;
		close(fd);
		if (rc < 0 && e != ECONNREFUSED)
			return report_err(e);
	}
	long long t2 = now_ns();
	return report_ok("lookup_ns=%lld connect_ns=%lld", t1 - t0, t2 - t1);
}

/* A UDP socket bound to port 53 (to answer one's own DNS queries). */
static int cmd_bind53(char **av)
{
	(void)av;
	struct sockaddr_in sa = parse_ipv4("0.0.0.0", "53");
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		return report_err(errno);
	int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	int e = errno;
	close(fd);
	return rc < 0 ? report_err(e) : report_ok(NULL);
}

static int cmd_unix_connect(char **av)
{
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(av[0]) >= sizeof(sa.sun_path))
		die_setup("unix socket path too long");
	strcpy(sa.sun_path, av[0]);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0)
		return report_err(errno);
	int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	int e = errno;
	close(fd);
	return rc < 0 ? report_err(e) : report_ok(NULL);
}

static int cmd_kill(char **av)
{
	long pid = parse_long(av[0], "PID");
	long sig = parse_long(av[1], "signal number");
	return report_rc(kill((pid_t)pid, (int)sig));
}

static int cmd_ptrace(char **av)
{
	pid_t pid = (pid_t)parse_long(av[0], "PID");
	if (ptrace(PTRACE_ATTACH, pid, NULL, NULL) < 0)
		return report_err(errno);
	/* Detach needs the tracee stopped; wait for the attach SIGSTOP. */
	int st;
	while (waitpid(pid, &st, __WALL) < 0 && errno == EINTR)
		;
	return report_rc(ptrace(PTRACE_DETACH, pid, NULL, NULL));
}

static int cmd_bpf_prog(char **av)
{
	(void)av;
	/* r0 = 0; exit: a socket filter that drops everything. */
	struct bpf_insn insns[2];
	memset(insns, 0, sizeof(insns));
	insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
	insns[0].dst_reg = BPF_REG_0;
	insns[0].imm = 0;
	insns[1].code = BPF_JMP | BPF_EXIT;

	static const char license[] = "GPL";
	union bpf_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	attr.insn_cnt = 2;
	attr.insns = (uint64_t)(uintptr_t)insns;
	attr.license = (uint64_t)(uintptr_t)license;
	int fd = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
	if (fd < 0)
		return report_err(errno);
	close(fd);
	return report_ok(NULL);
}

static int cmd_exec(char **av)
{
	fflush(stdout);
	execv(av[0], av);
	return report_err(errno);
}

static int cmd_unlink_nth(char **av)
{
	char path[4096];
	long i = parse_long(av[1], "index");
	int n = snprintf(path, sizeof(path), "%s/f%ld", av[0], i);
	if (n < 0 || (size_t)n >= sizeof(path))
		die_setup("path too long");
	return report_rc(unlink(path));
}

/* ------------------------------------------------------------------------ */
/* Dispatch                                                                 */
/* ------------------------------------------------------------------------ */

static int cmd_fork_loop(char **av);

struct command {
	const char *name;
	int min_args, max_args; /* max_args -1: any number */
	int (*fn)(char **av);   /* av: the arguments, NULL-terminated */
	const char *usage;
};

static const struct command commands[] = {
	{ "uring-setup", 0, 0, cmd_uring_setup, "" },
	{ "uring-unlink", 1, 1, cmd_uring_unlink, "PATH" },
	{ "uring-rmdir", 1, 1, cmd_uring_rmdir, "PATH" },
	{ "uring-rename", 2, 2, cmd_uring_rename, "OLD NEW" },
	{ "uring-open", 1, 1, cmd_uring_open, "PATH" },
	{ "uring-connect", 2, 2, cmd_uring_connect, "IPV4 PORT" },
	{ "openat2", 1, 1, cmd_openat2, "PATH" },
	{ "open", 1, 1, cmd_open, "PATH" },
	{ "legacy-open", 1, 1, cmd_legacy_open, "PATH" },
	{ "creat", 1, 1, cmd_creat, "PATH" },
	{ "open-flood", 2, 2, cmd_open_flood, "PATH SECONDS" },
	{ "unlink-flood", 2, 2, cmd_unlink_flood, "PATH SECONDS" },
	{ "raw-socket", 0, 0, cmd_raw_socket, "" },
	{ "raw6-socket", 0, 0, cmd_raw6_socket, "" },
	{ "packet-socket", 0, 0, cmd_packet_socket, "" },
	{ "dgram-icmp-socket", 0, 0, cmd_dgram_icmp_socket, "" },
	{ "race-open", 3, 3, cmd_race_open, "SECRET DECOY SECONDS" },
	{ "compat-open", 1, 1, cmd_compat_open, "PATH" },
	{ "compat-unlink", 1, 1, cmd_compat_unlink, "PATH" },
	{ "compat-exec", 1, 1, cmd_compat_exec, "PATH" },
	{ "x32-open", 1, 1, cmd_x32_open, "PATH" },
	{ "nosys", 0, 0, cmd_nosys, "" },
	{ "thread-exec", 1, -1, cmd_thread_exec, "PATH [ARGS...]" },
	{ "leader-exit-then", 1, 1, cmd_leader_exit_then, "PATH" },
	{ "unlink", 1, 1, cmd_unlink, "PATH" },
	{ "rmdir", 1, 1, cmd_rmdir, "PATH" },
	{ "rename", 2, 2, cmd_rename, "OLD NEW" },
	{ "link", 2, 2, cmd_link, "OLD NEW" },
	{ "symlink", 2, 2, cmd_symlink, "TARGET LINK" },
	{ "truncate", 1, 1, cmd_truncate, "PATH" },
	{ "ftruncate", 1, 1, cmd_ftruncate, "PATH" },
	{ "open-trunc", 1, 1, cmd_open_trunc, "PATH" },
	{ "connect", 2, 2, cmd_connect, "IPV4 PORT" },
	{ "unix-connect", 1, 1, cmd_unix_connect, "PATH" },
	{ "dns-query", 2, 3, cmd_dns_query, "SERVER NAME [tcp|tcp-split]" },
	{ "dns-connect", 3, 4, cmd_dns_connect, "SERVER NAME PORT [tcp|tcp-split]" },
	{ "bind53", 0, 0, cmd_bind53, "" },
	{ "dns-serve", 2, -1, cmd_dns_serve, "ADDR NAME=IPV4..." },
	{ "dns-bench", 4, 4, cmd_dns_bench, "N SERVER NAME PORT" },
	{ "kill", 2, 2, cmd_kill, "PID SIGNUM" },
	{ "ptrace", 1, 1, cmd_ptrace, "PID" },
	{ "bpf-prog", 0, 0, cmd_bpf_prog, "" },
	{ "exec", 1, -1, cmd_exec, "PATH [ARGS...]" },
	{ "unlink-nth", 2, 2, cmd_unlink_nth, "DIR I" },
	{ "fork-loop", 2, -1, cmd_fork_loop, "N SUBCOMMAND [ARGS...]  (child i gets i appended)" },
};

__attribute__((noreturn))
static void usage(void)
{
	fputs("usage: evade SUBCOMMAND [ARGS...]\n", stderr);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(stderr, "  %s %s\n", commands[i].name, commands[i].usage);
	exit(2);
}

/* argv[0] is the subcommand name; argv is NULL-terminated. */
static int dispatch(int argc, char **argv)
{
	if (argc < 1)
		usage();
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		const struct command *c = &commands[i];
		if (strcmp(argv[0], c->name) != 0)
			continue;
		int nargs = argc - 1;
		if (nargs < c->min_args || (c->max_args >= 0 && nargs > c->max_args))
			die_setup("usage: evade %s %s", c->name, c->usage);
		return c->fn(argv + 1);
	}
	fprintf(stderr, "evade: unknown subcommand %s\n", argv[0]);
	usage();
}

/*
 * Forks N children at once (a burst, as an agent fanning out would), each
 * running SUBCOMMAND ARGS... i in-process (fork without exec: the children
 * must inherit whatever the guard attached to the parent). Children's result
 * lines go to stderr so that stdout keeps exactly one line: the summary.
 */
static int cmd_fork_loop(char **av)
{
	long n = parse_long(av[0], "N");
	if (n < 0 || n > 100000)
		die_setup("bad N: %s", av[0]);
	int sub_argc = 0;
	while (av[1 + sub_argc])
		sub_argc++;

	char **child_argv = calloc((size_t)sub_argc + 2, sizeof(char *));
	pid_t *pids = calloc((size_t)n + 1, sizeof(pid_t));
	char idxbuf[32];
	if (!child_argv || !pids)
		die_setup("out of memory");
	memcpy(child_argv, av + 1, (size_t)sub_argc * sizeof(char *));
	child_argv[sub_argc] = idxbuf;
	child_argv[sub_argc + 1] = NULL;

	fflush(stdout);
	long forked = 0;
	int fork_err = 0;
	for (long i = 0; i < n; i++) {
		snprintf(idxbuf, sizeof(idxbuf), "%ld", i);
		pid_t pid = fork();
		if (pid < 0) {
			fork_err = errno;
			break;
		}
		if (pid == 0) {
			if (dup2(STDERR_FILENO, STDOUT_FILENO) < 0)
				_exit(2);
			exit(dispatch(sub_argc + 1, child_argv));
		}
		pids[forked++] = pid;
	}

	long killed = 0, failed = 0;
	for (long i = 0; i < forked; i++) {
		int st;
		while (waitpid(pids[i], &st, 0) < 0) {
			if (errno != EINTR)
				die_setup("waitpid: %s", strerror(errno));
		}
		if (WIFSIGNALED(st))
			killed++;
		else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			failed++;
	}
	free(pids);
	free(child_argv);
	if (fork_err) {
		fprintf(stderr, "evade: fork failed after %ld children (killed=%ld failed=%ld)\n",
			forked, killed, failed);
		return report_err(fork_err);
	}
	return report_ok("children=%ld killed=%ld failed=%ld", forked, killed, failed);
}

int main(int argc, char **argv)
{
	return dispatch(argc - 1, argv + 1);
}
