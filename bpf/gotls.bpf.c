/* gotls.bpf.c - plaintext of Go's crypto/tls ((*tls.Conn).Write / Read), uprobes.
 *
 * Where the probes sit (chosen per binary by busted/kernel/tls/gotls.py, which finds the
 * functions through .gopclntab, so stripped binaries work):
 * - entries on the `jbe` that ends the stack check every Go function starts with
 *   (`cmp rsp|r12, [r14+0x10]; jbe morestack`): the kernel emulates a conditional jump,
 *   while the `cmp`/`lea` at the very entry would be single-stepped. The arguments are
 *   still in their registers there. When the branch is taken (CF or ZF set: the stack
 *   must grow, or the scheduler asked for preemption) the runtime runs the function
 *   again from its start, so the programs act only when it is not taken.
 * - Read's plaintext: at its one `call runtime.memmove` (emulated), or else at each of
 *   its `ret` (never a uretprobe: it would plant a return address on a goroutine
 *   stack, which the runtime moves).
 *
 * Go's register ABI on amd64: receiver (*tls.Conn) in RAX, the []byte in RBX (pointer)
 * and RCX (length); n comes back in RAX. R14 always holds the running goroutine (g).
 *
 * Write sends its bytes at entry (the whole slice is written or the call fails).
 * Read stashes (conn, buffer) per goroutine at entry; the copy probe sends the bytes
 * being copied out, the `ret` probes what RAX says was read. A goroutine moves between
 * threads while it blocks, so the stash is keyed by (process, g) - g addresses repeat
 * across Go processes - and a `ret` matches its entry by stack depth
 * (g.stack.hi - rsp), which stays the same when the runtime moves the stack; a stale
 * stash (a goroutine that died inside Read) never matches.
 *
 * The connection: conn_id is the *tls.Conn. Its socket is followed in memory:
 *   tls.Conn.conn (net.Conn interface: itab, data) -> *net.TCPConn (struct{conn{fd}}):
 *   first word *netFD -> netFD.pfd (poll.FD: fdmu 16 bytes, then Sysfd int).
 * These offsets have been the same from Go 1.9 to today (checked on 1.19 and 1.27).
 * The interface's dynamic type is checked first through its itab: a pointer type
 * (abi.Type.Kind_ at +23 == 22) whose element is an 8-byte struct (Size_ at +0 == 8,
 * Kind_ == 25) - the shape of *net.TCPConn and *net.UnixConn, never of a wrapper that
 * embeds a net.Conn (16 bytes or more). Anything else gets fd -1, and userspace ties the
 * data to the thread's last socket (tid_sk), as it does for node. The answer is kept per
 * connection (go_fds), refreshed at each handshake.
 *
 * Handshakes ((*Conn).clientHandshake / serverHandshake): the garbage collector reuses
 * *tls.Conn addresses, so a new handshake forgets the verdict and facts kept about the
 * address and tells userspace (REC_SSL_FREE) to do the same.
 *
 * Cost (busted bench go-tls, 2-core VM, loaded): BPF time per call ~250 ns for Write
 * (gotls_write_enter), ~500 ns for Read (enter ~260 + copy ~240); the monitor adds
 * ~0.7 us of CPU per 100-byte Write and ~0.9 us per Read; the handshake program
 * (~6 us) runs once per connection.
 *
 * Enforcement (-DENFORCE): as tls.bpf.c does for SSL_write - a write of a holdable
 * process on a connection not judged uninteresting is sent with FLAG_HELD and the process
 * stopped (SIGSTOP, all its threads) before crypto/tls encrypts a byte; a process in
 * kill_on_write is killed at its next Write. The maps and holding() come from
 * tls.bpf.c, compiled before this file (the OpenSSL stack is always first).
 */
#include "busted.h"

#define GO_EFLAGS_CF 0x001
#define GO_EFLAGS_ZF 0x040
#define GO_KIND_PTR 22
#define GO_KIND_STRUCT 25
#define GO_KIND_MASK 0x1f
#define GO_FD_UNKNOWN -2 /* go_fds: not looked at yet */

struct go_key {
    u32 pid;
    u32 pad;
    u64 g;
};

struct go_read {
    u64 conn;
    u64 buf;
    u64 depth; /* g.stack.hi - rsp at entry */
    s32 fd;
    u32 pad;
};

/* a goroutine inside Read; LRU: a process that exits inside Read leaves its entry */
BPF_TABLE("lru_hash", struct go_key, struct go_read, go_reads, 16384);
/* (pid, *tls.Conn) -> socket fd (-1: not a netFD-backed connection) */
BPF_TABLE("lru_hash", struct conn_key, s32, go_fds, 65536);

/* The stack check's branch goes to morestack: the function will start over. */
static __always_inline int go_starts_over(struct pt_regs *ctx)
{
    return (ctx->flags & (GO_EFLAGS_CF | GO_EFLAGS_ZF)) != 0;
}

static __always_inline u64 go_word(u64 addr)
{
    u64 v = 0;
    if (bpf_probe_read_user(&v, sizeof(v), (void *)addr) != 0)
        return 0;
    return v;
}

static __always_inline u8 go_kind(u64 type)
{
    u8 kind = 0;
    bpf_probe_read_user(&kind, sizeof(kind), (void *)(type + 23));
    return kind & GO_KIND_MASK;
}

/* the socket behind a *tls.Conn, -1 if it is not a *net.TCPConn-like connection */
static __always_inline s32 go_socket_of(u64 conn)
{
    u64 iface[2] = {};
    if (bpf_probe_read_user(iface, sizeof(iface), (void *)conn) != 0 || !iface[0] || !iface[1])
        return -1;
    u64 type = go_word(iface[0] + 8); /* itab._type */
    if (!type || go_kind(type) != GO_KIND_PTR)
        return -1;
    u64 elem = go_word(type + 48); /* ptrtype.elem */
    if (!elem || go_word(elem) != 8 || go_kind(elem) != GO_KIND_STRUCT)
        return -1;
    u64 netfd = go_word(iface[1]); /* TCPConn.conn.fd */
    if (!netfd)
        return -1;
    s64 fd = -1;
    if (bpf_probe_read_user(&fd, sizeof(fd), (void *)(netfd + 16)) != 0)
        return -1;
    return fd >= 0 && fd < 0x7fffffff ? (s32)fd : -1;
}

static __always_inline s32 go_fd(u32 pid, u64 conn)
{
    struct conn_key k = {.pid = pid, .pad = 0, .conn_id = conn};
    s32 *known = go_fds.lookup(&k);
    if (known)
        return *known;
    s32 fd = go_socket_of(conn);
    go_fds.update(&k, &fd);
    return fd;
}

/* crypto/tls.(*Conn).Write(b []byte) (int, error) */
int gotls_write_enter(struct pt_regs *ctx)
{
    if (go_starts_over(ctx))
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    if (skip_self(id))
        return 0;
    u32 pid = id >> 32;
#ifdef ENFORCE
    if (kill_on_write.lookup(&pid)) {
        bpf_send_signal(BT_SIGKILL);
        return 0;
    }
#endif
    u64 conn = ctx->ax;
    u64 buf = ctx->bx;
    s64 n = (s64)ctx->cx;
    if (n <= 0 || !conn)
        return 0;
    u8 verdict = verdict_of(pid, conn);
    if (verdict == VERDICT_SKIP)
        return 0;
    s32 fd = go_fd(pid, conn);
#ifdef ENFORCE
    if (verdict != VERDICT_NO_HOLD && holding(pid)) {
        /* noted before the record goes out: userspace may resume the process (deleting
         * the note) before this program's next instruction; a record that cannot reach
         * the ring holds nobody */
        u64 now = bpf_ktime_get_ns();
        if (held_pids.update(&pid, &now) == 0) {
            if (emit_data(SRC_TLS, DIR_WRITE, conn, fd, buf, n, FLAG_HELD) == 0) {
                bpf_send_signal(BT_SIGSTOP); /* taken before the next user instruction */
                return 0;
            }
            held_pids.delete(&pid);
            return 0;
        }
    }
#endif
    emit_data(SRC_TLS, DIR_WRITE, conn, fd, buf, n, 0);
    return 0;
}

/* crypto/tls.(*Conn).Read(b []byte) (int, error): entry */
int gotls_read_enter(struct pt_regs *ctx)
{
    if (go_starts_over(ctx))
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    if (skip_self(id))
        return 0;
    u32 pid = id >> 32;
    u64 conn = ctx->ax;
    if (!conn || (s64)ctx->cx <= 0 || verdict_of(pid, conn) == VERDICT_SKIP)
        return 0;
    u64 g = ctx->r14;
    struct go_key key = {.pid = pid, .pad = 0, .g = g};
    struct go_read r = {};
    r.conn = conn;
    r.buf = ctx->bx;
    r.depth = go_word(g + 8) - ctx->sp; /* g.stack.hi */
    r.fd = go_fd(pid, conn);
    if (go_reads.update(&key, &r) != 0)
        count_lost(LOST_STASH);
    return 0;
}

/* The Read this goroutine stashed at entry, copied into *r (its key in *key, for the
 * caller to delete it when the entry is the one it wants); 0 when there is none. */
static __always_inline int go_read_stashed(struct pt_regs *ctx, struct go_key *key,
                                           struct go_read *r)
{
    u64 id = bpf_get_current_pid_tgid();
    *key = (struct go_key){.pid = id >> 32, .pad = 0, .g = ctx->r14};
    struct go_read *p = go_reads.lookup(key);
    if (!p)
        return 0;
    *r = *p;
    return 1;
}

/* ... at its one `call runtime.memmove` (the inlined copy of the decrypted record into
 * the caller's buffer: memmove(to RAX, from RBX, n RCX)), where the plaintext is read
 * from the source before the copy: one emulated probe instead of one per `ret` */
int gotls_read_copy(struct pt_regs *ctx)
{
    struct go_key key;
    struct go_read r;
    if (!go_read_stashed(ctx, &key, &r))
        return 0;
    go_reads.delete(&key);
    s64 n = (s64)ctx->cx;
    if (n > 0)
        emit_data(SRC_TLS, DIR_READ, r.conn, r.fd, ctx->bx, n, 0);
    return 0;
}

/* ... or, where Read has no single such copy, at each of its `ret` instructions */
int gotls_read_return(struct pt_regs *ctx)
{
    struct go_key key;
    struct go_read r;
    if (!go_read_stashed(ctx, &key, &r))
        return 0;
    if (go_word(key.g + 8) - ctx->sp != r.depth)
        return 0; /* not the call this entry was stashed for */
    go_reads.delete(&key);
    s64 n = (s64)ctx->ax;
    if (n > 0)
        emit_data(SRC_TLS, DIR_READ, r.conn, r.fd, r.buf, n, 0);
    return 0;
}

/* crypto/tls.(*Conn).clientHandshake / serverHandshake: a new connection on this
 * *tls.Conn (its address may be a reused one) */
int gotls_handshake_enter(struct pt_regs *ctx)
{
    if (go_starts_over(ctx))
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    if (skip_self(id))
        return 0;
    u64 conn = ctx->ax;
    if (!conn)
        return 0;
    struct conn_key k = {.pid = id >> 32, .pad = 0, .conn_id = conn};
    verdicts.delete(&k);
    wide_conns.delete(&k);
    s32 fd = go_socket_of(conn);
    go_fds.update(&k, &fd);
    send_ssl_rec(REC_SSL_FREE, conn, fd);
    return 0;
}

