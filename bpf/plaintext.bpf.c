/* plaintext.bpf.c - payload of socket writes/reads on watched sockets.
 *
 * A socket is watched when connect() targets a plain-text port (PLAIN_PORTn cflags,
 * default 11434 for Ollama) or UDP/TCP port 53 (DNS, see dns.bpf.c); close() forgets
 * it. Enter tracepoints stash the user buffer per thread, exit tracepoints copy the
 * bytes the call really moved. For the vector calls (writev, readv, sendmsg, recvmsg)
 * only the first iovec is copied: HTTP clients put a request head and small bodies
 * there; a larger body shows as a truncated event rather than being lost unseen.
 * Cost: every process's read/write pays one hash lookup (the watched map) on enter.
 *
 * ClientHellos: every other outgoing TCP socket is watched too (SRC_HELLO) until its
 * first write, which is copied once (HELLO_LEN bytes at most, REC_HELLO) when it starts
 * like a TLS handshake record, then the watch is dropped: the SNI of every TLS
 * connection, whatever library made it, for one record per connection. Ordinary
 * writes pay nothing more than the lookup they already paid.
 */
#include "busted.h"

#ifndef PLAIN_PORT_COUNT
#define PLAIN_PORT_COUNT 1
#define PLAIN_PORT0 11434
#endif
#define BT_EINPROGRESS 115

struct io_call {
    u64 buf;
    u64 limit;      /* bytes available at buf (first iovec), 0 = the call's length */
    u64 conn_id;
    s32 fd;
    u8 source;
    u8 pad[3];
};

/* one entry per thread inside a call: a plain hash (LRU updates cost more) */
BPF_HASH(io_calls, u64, struct io_call, 16384);

static __always_inline int plain_port(u16 port)
{
#if PLAIN_PORT_COUNT > 0
    if (port == PLAIN_PORT0) return 1;
#endif
#if PLAIN_PORT_COUNT > 1
    if (port == PLAIN_PORT1) return 1;
#endif
#if PLAIN_PORT_COUNT > 2
    if (port == PLAIN_PORT2) return 1;
#endif
#if PLAIN_PORT_COUNT > 3
    if (port == PLAIN_PORT3) return 1;
#endif
#if PLAIN_PORT_COUNT > 4
    if (port == PLAIN_PORT4) return 1;
#endif
#if PLAIN_PORT_COUNT > 5
    if (port == PLAIN_PORT5) return 1;
#endif
#if PLAIN_PORT_COUNT > 6
    if (port == PLAIN_PORT6) return 1;
#endif
#if PLAIN_PORT_COUNT > 7
    if (port == PLAIN_PORT7) return 1;
#endif
    return 0;
}

/* connect() returned: watch the socket if it went to a plain-text or DNS port */
TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
    u64 id = bpf_get_current_pid_tgid();
    struct connect_call *cp = connect_calls.lookup(&id);
    if (!cp)
        return 0;
    struct connect_call c = *cp;
    connect_calls.delete(&id);
    long ret = args->ret;
    if (ret != 0 && ret != -BT_EINPROGRESS)
        return 0;
    struct watch w = {};
    if (plain_port(c.dport))
        w.source = SRC_PLAIN;
    else if (c.dport == DNS_PORT)
        w.source = SRC_DNS;
    struct fd_key k = {.pid = id >> 32, .fd = c.fd};
    if (!w.source && c.conn_id)
        w.source = SRC_HELLO; /* another TCP connection: look at its first write */
    if (!w.source) {
        /* a reused fd number must not inherit an old watch */
        watched.delete(&k);
        return 0;
    }
    /* TCP connects got their id from inet_sock_set_state; UDP ones get one here */
    w.conn_id = c.conn_id ? c.conn_id : new_conn_id();
    watched.update(&k, &w);
    return 0;
}

/* The first write of a watched TCP socket: send it if it is a TLS ClientHello, and
 * stop watching the socket either way. */
static __always_inline int first_write(struct fd_key *k, u64 conn_id, u64 buf, u64 n)
{
    watched.delete(k);
    u8 head[2] = {};
    if (n < 6 || bpf_probe_read_user(head, sizeof(head), (void *)buf) != 0)
        return 0;
    if (head[0] != 0x16 || head[1] != 0x03) /* handshake record, TLS 1.x */
        return 0;
    struct hello_rec *r = events.ringbuf_reserve(sizeof(struct hello_rec));
    if (!r) {
        count_lost(LOST_RINGBUF);
        return 0;
    }
    fill_head(&r->h, REC_HELLO);
    r->conn_id = conn_id;
    r->call_len = n > 0xffffffffULL ? 0xffffffffU : (u32)n;
    r->fd = k->fd;
    r->pad6 = 0;
    u64 len = n > HELLO_LEN ? HELLO_LEN : n;
    asm volatile("%[len] &= %[mask]" : [len] "+r"(len) : [mask] "i"((HELLO_LEN << 1) - 1));
    if (len > HELLO_LEN || bpf_probe_read_user(r->data, len, (void *)buf) != 0) {
        count_lost(LOST_READ);
        len = 0;
    }
    r->len = len;
    events.ringbuf_submit(r, 0);
    return 0;
}

/* `limit`: bytes available at buf (the call's length, or the first iovec's) */
static __always_inline int io_enter(s32 fd, u64 buf, u64 limit, u8 direction)
{
    u64 id = bpf_get_current_pid_tgid();
    struct fd_key k = {.pid = id >> 32, .fd = fd};
    struct watch *w = watched.lookup(&k);
    if (!w)
        return 0;
    if (w->source == SRC_HELLO) {
        if (direction == DIR_WRITE)
            return first_write(&k, w->conn_id, buf, limit);
        return 0;
    }
    if (judged_uninteresting(k.pid, w->conn_id))
        return 0;
    struct io_call c = {};
    c.buf = buf;
    c.limit = limit;
    c.conn_id = w->conn_id;
    c.fd = fd;
    c.source = w->source;
    if (io_calls.update(&id, &c) != 0)
        count_lost(LOST_STASH);
    return 0;
}

static __always_inline int io_exit(long ret, u8 direction)
{
    u64 id = bpf_get_current_pid_tgid();
    struct io_call *p = io_calls.lookup(&id);
    if (!p)
        return 0;
    struct io_call c = *p;
    io_calls.delete(&id);
    if (ret <= 0)
        return 0;
    u64 n = (u64)ret;
    if (c.limit && n > c.limit)
        n = c.limit;
    emit_data(c.source, direction, c.conn_id, c.fd, c.buf, n, 0);
    return 0;
}

/* the first iovec of a vector: (base, len) */
static __always_inline int first_iov(u64 iov, u64 *base, u64 *len)
{
    if (!iov)
        return -1;
    if (bpf_probe_read_user(base, sizeof(*base), (void *)iov) != 0)
        return -1;
    if (bpf_probe_read_user(len, sizeof(*len), (void *)(iov + 8)) != 0)
        return -1;
    return 0;
}

/* struct user_msghdr: msg_iov at offset 16 */
static __always_inline int msghdr_iov(u64 msg, u64 *base, u64 *len)
{
    u64 iov = 0;
    if (!msg || bpf_probe_read_user(&iov, sizeof(iov), (void *)(msg + 16)) != 0)
        return -1;
    return first_iov(iov, base, len);
}

TRACEPOINT_PROBE(syscalls, sys_enter_write) { return io_enter(args->fd, (u64)args->buf, args->count, DIR_WRITE); }
TRACEPOINT_PROBE(syscalls, sys_exit_write) { return io_exit(args->ret, DIR_WRITE); }
TRACEPOINT_PROBE(syscalls, sys_enter_read) { return io_enter(args->fd, (u64)args->buf, 0, DIR_READ); }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return io_exit(args->ret, DIR_READ); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendto) { return io_exit(args->ret, DIR_WRITE); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom) { return io_enter(args->fd, (u64)args->ubuf, 0, DIR_READ); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { return io_exit(args->ret, DIR_READ); }

TRACEPOINT_PROBE(syscalls, sys_enter_sendto)
{
    s32 fd = args->fd;
    u64 id = bpf_get_current_pid_tgid();
    struct fd_key k = {.pid = id >> 32, .fd = fd};
    if (args->addr && !watched.lookup(&k) && !skip_self(id)) {
        /* unconnected UDP socket sending to port 53: watch it so the answer (recvfrom
         * on the same fd) is seen too */
        u16 port_be = 0;
        bpf_probe_read_user(&port_be, sizeof(port_be), (u8 *)args->addr + 2);
        if (ntohs(port_be) == DNS_PORT) {
            struct watch w = {};
            w.conn_id = new_conn_id();
            w.source = SRC_DNS;
            watched.update(&k, &w);
        }
    }
    return io_enter(fd, (u64)args->buff, args->len, DIR_WRITE);
}

TRACEPOINT_PROBE(syscalls, sys_enter_writev)
{
    u64 base = 0, len = 0;
    if (first_iov((u64)args->vec, &base, &len) != 0)
        return 0;
    return io_enter(args->fd, base, len, DIR_WRITE);
}
TRACEPOINT_PROBE(syscalls, sys_exit_writev) { return io_exit(args->ret, DIR_WRITE); }

TRACEPOINT_PROBE(syscalls, sys_enter_readv)
{
    u64 base = 0, len = 0;
    if (first_iov((u64)args->vec, &base, &len) != 0)
        return 0;
    return io_enter(args->fd, base, len, DIR_READ);
}
TRACEPOINT_PROBE(syscalls, sys_exit_readv) { return io_exit(args->ret, DIR_READ); }

TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{
    u64 base = 0, len = 0;
    if (msghdr_iov((u64)args->msg, &base, &len) != 0)
        return 0;
    return io_enter(args->fd, base, len, DIR_WRITE);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) { return io_exit(args->ret, DIR_WRITE); }

TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{
    u64 base = 0, len = 0;
    if (msghdr_iov((u64)args->msg, &base, &len) != 0)
        return 0;
    return io_enter(args->fd, base, len, DIR_READ);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { return io_exit(args->ret, DIR_READ); }

/* close(): forget the watch and its verdict (the fd number will be reused) */
TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    u64 id = bpf_get_current_pid_tgid();
    struct fd_key k = {.pid = id >> 32, .fd = (s32)args->fd};
    struct watch *w = watched.lookup(&k);
    if (!w)
        return 0;
    struct conn_key v = {.pid = k.pid, .pad = 0, .conn_id = w->conn_id};
    verdicts.delete(&v);
    watched.delete(&k);
    return 0;
}
