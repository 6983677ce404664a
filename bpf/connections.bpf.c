/* connections.bpf.c - TCP connection lifecycle and byte counts, from tracepoints only.
 *
 * The kernel here has no kprobes; tracepoints are a stable ABI everywhere:
 * - syscalls:sys_enter_connect stashes (fd, destination) per thread;
 * - sock:inet_sock_set_state CLOSE->SYN_SENT runs inside that connect() in the caller's
 *   context: the socket (struct sock *) is tied to its process and fd -> REC_CONNECT;
 *   SYN_SENT->ESTABLISHED (often in softirq, any pid) brings the full 4-tuple;
 *   ->CLOSE ends it with the byte totals -> REC_CLOSE;
 * - sock:sock_send_length / sock_recv_length count bytes per tracked socket and
 *   remember each thread's last TCP socket (how TLS from node, which does its own
 *   socket I/O, finds its connection).
 * Cost: one hash lookup per socket send/recv system-wide; a record per connect,
 * establish and close of outgoing TCP connections.
 */
#include "busted.h"

/* include/net/tcp_states.h values (prefixed: the kernel headers may define them) */
#define BT_TCP_ESTABLISHED 1
#define BT_TCP_SYN_SENT 2
#define BT_TCP_CLOSE 7
#define BT_AF_INET 2
#define BT_AF_INET6 10
#define BT_IPPROTO_TCP 6

struct connect_call {
    u64 conn_id;    /* set by inet_sock_set_state when the call is a TCP connect */
    s32 fd;
    u16 family;
    u16 dport;      /* host order */
    u8 daddr[16];
};

struct sk_state {
    u64 conn_id;
    u64 sent;
    u64 received;
    u32 pid;
    s32 fd;
};

/* one entry per thread inside a call: a plain hash (LRU updates cost more) */
BPF_HASH(connect_calls, u64, struct connect_call, 16384);
BPF_TABLE("lru_hash", u64, struct sk_state, socks, 65536);

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    u64 id = bpf_get_current_pid_tgid();
    if (skip_self(id))
        return 0;
    struct connect_call c = {};
    c.fd = (s32)args->fd;
    u8 *sa = (u8 *)args->uservaddr;
    if (bpf_probe_read_user(&c.family, sizeof(c.family), sa) != 0)
        return 0;
    u16 port_be = 0;
    bpf_probe_read_user(&port_be, sizeof(port_be), sa + 2);
    c.dport = ntohs(port_be);
    if (c.family == BT_AF_INET)
        bpf_probe_read_user(c.daddr, 4, sa + 4);
    else if (c.family == BT_AF_INET6)
        bpf_probe_read_user(c.daddr, 16, sa + 8);
    else
        return 0;
    connect_calls.update(&id, &c);
    return 0;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != BT_IPPROTO_TCP)
        return 0;
    u64 sk = (u64)args->skaddr;
    int newstate = args->newstate;
    u32 type;
    struct sk_state *st;
    struct sk_state fresh = {};

    if (newstate == BT_TCP_SYN_SENT) {
        u64 id = bpf_get_current_pid_tgid();
        if (skip_self(id))
            return 0;
        struct connect_call *c = connect_calls.lookup(&id);
        fresh.conn_id = new_conn_id();
        fresh.pid = id >> 32;
        fresh.fd = c ? c->fd : -1;
        if (c)
            c->conn_id = fresh.conn_id;
        socks.update(&sk, &fresh);
        u32 tid = (u32)id;
        tid_sk.update(&tid, &sk);
        st = &fresh;
        type = REC_CONNECT;
    } else if (newstate == BT_TCP_ESTABLISHED && args->oldstate == BT_TCP_SYN_SENT) {
        st = socks.lookup(&sk);
        if (!st)
            return 0;
        type = REC_ESTABLISHED;
    } else if (newstate == BT_TCP_CLOSE) {
        st = socks.lookup(&sk);
        if (!st)
            return 0;
        type = REC_CLOSE;
    } else {
        return 0;
    }
    struct conn_rec *r = events.ringbuf_reserve(sizeof(struct conn_rec));
    if (!r) {
        count_lost(LOST_RINGBUF);
        if (type == REC_CLOSE)
            socks.delete(&sk);
        return 0;
    }
    fill_head(&r->h, type);
    r->sk = sk;
    r->conn_id = st->conn_id;
    r->bytes_sent = st->sent;
    r->bytes_received = st->received;
    r->fd = type == REC_CONNECT ? st->fd : -1;
    r->pad3 = 0;
    r->pad4 = 0;
    r->family = args->family;
    r->sport = args->sport;
    r->dport = args->dport;
    if (args->family == BT_AF_INET6) {
        __builtin_memcpy(r->saddr, args->saddr_v6, 16);
        __builtin_memcpy(r->daddr, args->daddr_v6, 16);
    } else {
        __builtin_memcpy(r->saddr, args->saddr, 4);
        __builtin_memcpy(r->daddr, args->daddr, 4);
    }
    if (type == REC_ESTABLISHED || type == REC_CLOSE) {
        /* softirq context: the current task is not the owner */
        r->h.pid = st->pid;
        r->h.tid = 0;
    }
    events.ringbuf_submit(r, 0);
    if (type == REC_CLOSE)
        socks.delete(&sk);
    return 0;
}

static __always_inline void count_bytes(u64 sk, int ret, int sent)
{
    if (ret <= 0)
        return;
    struct sk_state *st = socks.lookup(&sk);
    if (!st)
        return;
    if (sent)
        __sync_fetch_and_add(&st->sent, ret);
    else
        __sync_fetch_and_add(&st->received, ret);
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 *last = tid_sk.lookup(&tid);
    if (!last || *last != sk) /* an LRU update costs more than a lookup */
        tid_sk.update(&tid, &sk);
}

TRACEPOINT_PROBE(sock, sock_send_length)
{
    count_bytes((u64)args->sk, args->ret, 1);
    return 0;
}

TRACEPOINT_PROBE(sock, sock_recv_length)
{
    count_bytes((u64)args->sk, args->ret, 0);
    return 0;
}
