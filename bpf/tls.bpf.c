/* tls.bpf.c - plaintext of OpenSSL calls (uprobes), the SNI and SSL*-to-socket ties.
 *
 * Where the probes sit (chosen per binary by busted/kernel/libssl.py):
 * - write/read: an entry probe stashes (ssl, buf, *written) per thread, a return
 *   probe reads the bytes the call really moved. On Debian's libssl3 the entry of
 *   SSL_write_ex/SSL_read_ex is `sub $8,%rsp` (single-stepped: ~9 us per hit here),
 *   so the probes go on the internal function they `call` a few bytes in, whose
 *   first instruction is a `push` (emulated: ~1 us) and whose arguments are the same
 *   (ssl, buf, num, size_t *out). SSL_write/SSL_read call it too, so one pair of
 *   probes covers all four functions. Where the exported function itself starts
 *   with an emulated instruction (node's OpenSSL), the probes go on its entry.
 * - SSL_ctrl(ssl, 55, 0, name) carries the SNI; SSL_set_fd ties SSL* to its socket;
 *   SSL_free lets userspace and the maps forget an SSL* (SSL_do_handshake does where
 *   SSL_free is not found: BoringSSL in Bun).
 *
 * Uprobe sessions (Linux 6.10+, busted/kernel/uprobes.py): where the kernel has
 * them, each write/read site gets ONE program that runs at the call's entry and, only
 * when its entry run asked for it, at its return. A call on a connection judged
 * uninteresting (or busted's own, or nested in a call already tracked) then pays one
 * trap instead of two. Elsewhere the same logic runs as a uprobe + uretprobe pair.
 *
 * Cost per hooked call: the uprobe trap (+ uretprobe), a hash update and delete, and
 * one ring record per CHUNK_SIZE of plaintext. Measured with bpf_stats on this VM for
 * 100-byte calls: entry ~0.6 us, return ~1.5 us of BPF time, plus ~1.3 us for the
 * two emulated traps (KernelSource.program_stats reports the BPF part). Connections
 * judged uninteresting (verdicts map) stop at the entry probe.
 *
 * Enforcement (-DENFORCE, busted monitor --enforce): a write of a process userspace
 * marked holdable (no controlling terminal) on a connection not judged uninteresting
 * is sent from the ENTRY probe, before the library has encrypted anything, and the
 * process is stopped with SIGSTOP; userspace resumes it (SIGCONT) or kills it
 * (SIGKILL) once the policy has decided. A process denied while not holdable is in
 * `kill_on_write`: its next TLS write is killed here, before encryption.
 */
#include "busted.h"

struct tls_call {
    u64 ssl;
    u64 buf;
    u64 out;   /* size_t *written / *readbytes, 0 for the int-returning API */
    u64 sp;    /* stack pointer at entry: tells our return from a nested call's */
    u64 held;  /* the entry probe sent the bytes and stopped the writer */
};

/* one entry per thread inside a call: a plain hash (LRU updates cost more) */
BPF_HASH(tls_calls, u64, struct tls_call, 16384);
/* (pid, SSL*) -> fd and SNI; written once per connection, read by userspace only */
BPF_TABLE("lru_hash", struct conn_key, struct ssl_info, ssl_infos, 65536);

#ifdef ENFORCE
#define BT_SIGKILL 9
#define BT_SIGSTOP 19
/* processes without a controlling terminal (userspace fills it at start and exec; a
 * fork inherits it below): their writes are held until the verdict */
BPF_TABLE("lru_hash", u32, u8, holdable, 65536);
/* processes denied while not holdable: killed at their next TLS write */
BPF_HASH(kill_on_write, u32, u8, 4096);
/* processes this probe stopped -> when (ktime ns). Userspace deletes an entry once it
 * has resumed or killed the process; an entry it never learnt of (its record lost, or
 * capture died before reading it) is still found here by capture's sweep and by the
 * watchdog, which holds this map's fd. */
BPF_HASH(held_pids, u32, u64, 16384);
/* [0] = 1 while capture's enforcer is running: no hold before it can answer, and none
 * after it stopped (the probes take seconds to detach once it is gone) */
BPF_ARRAY(hold_switch, u32, 1);

static __always_inline int holding(u32 pid)
{
    u32 zero = 0;
    u32 *on = hold_switch.lookup(&zero);
    return on && *on == 1 && holdable.lookup(&pid) != 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    /* the forking thread's process, not args->parent_pid (that is the thread id) */
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    if (!holdable.lookup(&parent))
        return 0;
    u32 child = args->child_pid;
    u8 one = 1;
    holdable.update(&child, &one);
    return 0;
}
#endif

static __always_inline struct ssl_info *ssl_info_of(u32 pid, u64 ssl)
{
    struct conn_key k = {.pid = pid, .pad = 0, .conn_id = ssl};
    struct ssl_info fresh = {.fd = -1};
    return ssl_infos.lookup_or_try_init(&k, &fresh);
}

/* one stash per thread AND direction: node calls SSL_write from callbacks that run
 * inside SSL_read, which is not the nesting of one call inside its own wrapper */
static __always_inline u64 call_key(u64 pid_tgid, u8 direction)
{
    return pid_tgid | ((u64)direction << 63); /* pids use 22 bits at most */
}

/* Returns 1 when the call's return must be seen (its arguments were stashed), 0 when
 * there is nothing to do at its return. */
static __always_inline int tls_enter(struct pt_regs *ctx, int has_out, u8 direction)
{
    u64 id = bpf_get_current_pid_tgid();
    if (skip_self(id))
        return 0;
#ifdef ENFORCE
    u32 pid = id >> 32;
    if (direction == DIR_WRITE && kill_on_write.lookup(&pid)) {
        bpf_send_signal(BT_SIGKILL);
        return 0;
    }
#endif
    u64 key = call_key(id, direction);
    struct tls_call c = {};
    c.ssl = PT_REGS_PARM1(ctx);
    c.buf = PT_REGS_PARM2(ctx);
    c.out = has_out ? PT_REGS_PARM4(ctx) : 0;
    c.sp = PT_REGS_SP(ctx);
    u8 verdict = verdict_of(id >> 32, c.ssl);
    if (verdict == VERDICT_SKIP)
        return 0;
    struct tls_call *outer = tls_calls.lookup(&key);
    /* the stack grows down: a deeper frame means we are nested inside a call we
     * already track (e.g. SSL_write -> SSL_write_ex); the outer one reports */
    if (outer && outer->sp > c.sp)
        return 0;
#ifdef ENFORCE
    if (direction == DIR_WRITE && verdict != VERDICT_NO_HOLD && holding(pid)) {
        /* num: size_t for the _ex API, int for SSL_write */
        u64 n = has_out ? PT_REGS_PARM3(ctx) : (u64)(s64)(int)PT_REGS_PARM3(ctx);
        /* a record lost (ring full) would leave nobody to resume the writer: then the
         * write is not held, and the return probe reports it as usual */
        /* noted before the record goes out: userspace may read it and resume the process
         * (deleting the note) before this program's next instruction */
        u64 now = bpf_ktime_get_ns();
        if ((s64)n > 0 && held_pids.update(&pid, &now) == 0) {
            if (emit_data(SRC_TLS, DIR_WRITE, c.ssl, -1, c.buf, n, FLAG_HELD) == 0) {
                c.held = 1;
                bpf_send_signal(BT_SIGSTOP); /* taken before the next user instruction */
            } else {
                held_pids.delete(&pid);
            }
        }
    }
#endif
    if (tls_calls.update(&key, &c) != 0) {
        count_lost(LOST_STASH);
        return 0;
    }
    return 1;
}

static __always_inline int tls_return(struct pt_regs *ctx, u8 direction)
{
    u64 id = bpf_get_current_pid_tgid();
    u64 key = call_key(id, direction);
    struct tls_call *p = tls_calls.lookup(&key);
    if (!p)
        return 0;
    struct tls_call c = *p;
    /* after `ret` the stack pointer is the entry one + 8 (the return address) */
    if (PT_REGS_SP(ctx) != c.sp + 8)
        return 0;
    tls_calls.delete(&key);
    if (c.held)
        return 0; /* its bytes went out at entry */
    int ret = (int)PT_REGS_RC(ctx);
    if (ret <= 0)
        return 0; /* failed or would block: nothing moved */
    u64 n = (u64)ret;
    if (c.out) {
        /* the _ex API: success is ret > 0, the byte count is in *out */
        n = 0;
        if (bpf_probe_read_user(&n, sizeof(n), (void *)c.out) != 0)
            return 0;
    }
    if (n == 0)
        return 0;
    /* fd -1: userspace knows SSL* -> fd from the REC_SSL_FD record (one lookup less
     * on the hot path) */
    emit_data(SRC_TLS, direction, c.ssl, -1, c.buf, n, 0);
    return 0;
}

/* A uprobe program's return value must be 0: anything else makes the kernel also emit a
 * perf sample nobody reads. */
/* (ssl, buf, num, size_t *written): SSL_write_ex or the internal function it calls */
int tls_write_ex_enter(struct pt_regs *ctx) { tls_enter(ctx, 1, DIR_WRITE); return 0; }
/* (ssl, buf, int num) -> int: SSL_write where it is probed on its own */
int tls_write_enter(struct pt_regs *ctx) { tls_enter(ctx, 0, DIR_WRITE); return 0; }
int tls_write_return(struct pt_regs *ctx) { return tls_return(ctx, DIR_WRITE); }
int tls_read_ex_enter(struct pt_regs *ctx) { tls_enter(ctx, 1, DIR_READ); return 0; }
int tls_read_enter(struct pt_regs *ctx) { tls_enter(ctx, 0, DIR_READ); return 0; }
int tls_read_return(struct pt_regs *ctx) { return tls_return(ctx, DIR_READ); }

/* The same logic as sessions: one program per site, run at the entry (where the instruction
 * pointer is the probed address, which bpf_get_func_ip reports) and at the return (the
 * instruction pointer is then the caller's). An entry run returning non-zero tells the
 * kernel not to stop at this call's return. Loaded only where the kernel has sessions. */
static __always_inline int tls_session(struct pt_regs *ctx, int has_out, u8 direction)
{
    if (PT_REGS_IP(ctx) != bpf_get_func_ip(ctx))
        return tls_return(ctx, direction);
    return tls_enter(ctx, has_out, direction) ? 0 : 1;
}
int tls_write_ex_session(struct pt_regs *ctx) { return tls_session(ctx, 1, DIR_WRITE); }
int tls_write_session(struct pt_regs *ctx) { return tls_session(ctx, 0, DIR_WRITE); }
int tls_read_ex_session(struct pt_regs *ctx) { return tls_session(ctx, 1, DIR_READ); }
int tls_read_session(struct pt_regs *ctx) { return tls_session(ctx, 0, DIR_READ); }

/* SSL_ctrl(SSL *s, int cmd, long larg, void *parg) */
int tls_ctrl_enter(struct pt_regs *ctx)
{
    if ((int)PT_REGS_PARM2(ctx) != SSL_CTRL_SET_TLSEXT_HOSTNAME)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    if (skip_self(id))
        return 0;
    u64 name = PT_REGS_PARM4(ctx);
    if (!name)
        return 0;
    struct sni_rec *r = events.ringbuf_reserve(sizeof(struct sni_rec));
    if (!r) {
        count_lost(LOST_RINGBUF);
        return 0;
    }
    fill_head(&r->h, REC_SNI);
    r->ssl = PT_REGS_PARM1(ctx);
    if (bpf_probe_read_user_str(r->name, sizeof(r->name), (void *)name) < 0)
        r->name[0] = 0;
    struct ssl_info *info = ssl_info_of(id >> 32, r->ssl);
    if (info)
        __builtin_memcpy(info->sni, r->name, sizeof(info->sni));
    events.ringbuf_submit(r, 0);
    return 0;
}

/* SSL_set_fd(SSL *s, int fd) */
int tls_set_fd_enter(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    if (skip_self(id))
        return 0;
    u64 ssl = PT_REGS_PARM1(ctx);
    s32 fd = (s32)PT_REGS_PARM2(ctx);
    struct ssl_info *info = ssl_info_of(id >> 32, ssl);
    if (info)
        info->fd = fd;
    send_ssl_rec(REC_SSL_FD, ssl, fd);
    return 0;
}

/* Forget what is known about the SSL* in rdi: its connection is over (SSL_free) or a
 * new one starts on it (a handshake). Userspace hears it as REC_SSL_FREE. */
static __always_inline int forget_ssl(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    if (skip_self(id))
        return 0;
    u64 ssl = PT_REGS_PARM1(ctx);
    if (!ssl)
        return 0;
    struct conn_key k = {.pid = id >> 32, .pad = 0, .conn_id = ssl};
    verdicts.delete(&k);
    wide_conns.delete(&k);
    ssl_infos.delete(&k);
    send_ssl_rec(REC_SSL_FREE, ssl, -1);
    return 0;
}

/* SSL_free(SSL *s): the pointer may be reused by the next connection */
int tls_free_enter(struct pt_regs *ctx) { return forget_ssl(ctx); }

/* SSL_do_handshake(SSL *s), where SSL_free cannot be hooked (BoringSSL inside Bun, see
 * busted/kernel/tls/boringssl.py): a handshake starts a connection, and a freed SSL*
 * reused for it must not inherit the previous connection's verdict or copy size. A
 * non-blocking handshake calls it once per step (nothing is known yet then); a TLS 1.2
 * False Start completes it inside the first SSL_read, after the request was written:
 * that connection is then judged once more. */
int tls_handshake_enter(struct pt_regs *ctx) { return forget_ssl(ctx); }

/* A process started a new program: userspace looks for OpenSSL copies it runs.
 * The consumer is woken at once: a new node may open its first TLS connection within
 * tens of milliseconds, and its probes must be in place by then. */
TRACEPOINT_PROBE(sched, sched_process_exec)
{
    struct rec_head *r = events.ringbuf_reserve(sizeof(struct rec_head));
    if (!r) {
        count_lost(LOST_RINGBUF);
        return 0;
    }
    fill_head(r, REC_EXEC);
    events.ringbuf_submit(r, BT_RB_FORCE_WAKEUP);
    return 0;
}

/* ld.so (or dlopen) opening a libssl.so that is not probed yet: userspace attaches the
 * uprobes by path before the library is even mapped (uprobes live on the inode). */
struct lib_path {
    char path[PATH_LEN];
};
BPF_PERCPU_ARRAY(path_scratch, struct path_rec, 1);
#define BT_O_DIRECTORY 0200000
#define BT_O_PATH 010000000
/* paths userspace has handled (probed, or not OpenSSL): no record for them */
BPF_HASH(known_libs, struct lib_path, u8, 4096);

static __always_inline int ends_with(const char *path, u32 len, const char *suffix, u32 n)
{
    if (len < n + 1)
        return 0;
    if (path[(len - n - 1) & (PATH_LEN - 1)] != '/')
        return 0;
#pragma unroll
    for (u32 i = 0; i < 13; i++) {
        if (i >= n)
            break;
        if (path[(len - n + i) & (PATH_LEN - 1)] != suffix[i])
            return 0;
    }
    return 1;
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
    /* a loader opens a library read-only; opened for writing, it is a copy being made:
     * reported too (probing it early wins the race with its first user) but never held */
    if (args->flags & (BT_O_DIRECTORY | BT_O_PATH))
        return 0; /* a look at the name (cp checking for a directory), not a load */
    int writing = (args->flags & 3) != 0;
    u32 zero = 0;
    struct path_rec *r = path_scratch.lookup(&zero);
    if (!r)
        return 0;
    __builtin_memset(r->path, 0, sizeof(r->path));
    long n = bpf_probe_read_user_str(r->path, sizeof(r->path), args->filename);
    if (n < 11 || n > PATH_LEN)
        return 0;
    u32 len = n - 1;
    char so3[] = "libssl.so.3";
    char so11[] = "libssl.so.1.1";
    char so[] = "libssl.so";
    if (!ends_with(r->path, len, so3, 11) && !ends_with(r->path, len, so11, 13) &&
        !ends_with(r->path, len, so, 9))
        return 0;
    if (known_libs.lookup((struct lib_path *)r->path))
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    if (skip_self(id))
        return 0;
    fill_head(&r->h, REC_LIBOPEN);
#ifdef ENFORCE
    /* Under --enforce a process loading an OpenSSL copy nobody probed yet (a private
     * copy: the way around the probes) waits, stopped once openat returns, until
     * userspace has attached to it: its first write cannot slip through unseen. The
     * stop is noted before the record goes out (userspace may resume it at once). */
    u32 pid = id >> 32;
    u64 now = bpf_ktime_get_ns();
    if (writing)
        r->h.held = LIB_WRITING;
    else if (holding(pid) && held_pids.update(&pid, &now) == 0)
        r->h.held = LIB_HELD;
#else
    if (writing)
        r->h.held = LIB_WRITING;
#endif
    if (events.ringbuf_output(r, sizeof(*r), BT_RB_FORCE_WAKEUP) != 0) {
        count_lost(LOST_RINGBUF);
#ifdef ENFORCE
        if (r->h.held == LIB_HELD)
            held_pids.delete(&pid);
#endif
        return 0;
    }
#ifdef ENFORCE
    if (r->h.held == LIB_HELD)
        bpf_send_signal(BT_SIGSTOP);
#endif
    return 0;
}

/* A process ended: userspace forgets what it cached about its pid (pids are reused). */
TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 id = bpf_get_current_pid_tgid();
    if ((u32)id != (u32)(id >> 32))
        return 0; /* a thread, not the whole process */
#ifdef ENFORCE
    u32 gone = id >> 32;
    held_pids.delete(&gone); /* its pid may be reused: nobody must signal it later */
    kill_on_write.delete(&gone);
    holdable.delete(&gone);
#endif
    struct rec_head *r = events.ringbuf_reserve(sizeof(struct rec_head));
    if (!r) {
        count_lost(LOST_RINGBUF);
        return 0;
    }
    fill_head(r, REC_EXIT);
    events.ringbuf_submit(r, 0);
    return 0;
}
