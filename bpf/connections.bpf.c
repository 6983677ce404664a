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
 * - the same two tracepoints keep per-exchange statistics in the socket's state (an
 *   exchange: a run of sends, then a run of receives) and send one REC_EXCHANGE when the
 *   connection sends again after receiving, and at its close (features for busted.ml).
 * Cost: one hash lookup per socket send/recv system-wide (plus a clock read and a few
 * additions on tracked sockets); a record per connect, establish, exchange and close of
 * outgoing TCP connections.
 */
#include "busted.h"

/* include/net/tcp_states.h values (prefixed: the kernel headers may define them) */
#define BT_TCP_ESTABLISHED 1
#define BT_TCP_SYN_SENT 2
#define BT_TCP_CLOSE 7
#define BT_AF_INET 2
#define BT_AF_INET6 10
#define BT_IPPROTO_TCP 6

#define PHASE_IDLE 0
#define PHASE_SEND 1
#define PHASE_RECV 2
#define GAP_CAP_US 100000000ULL /* 100 s: keeps the sum of squares far from overflow */
#define PAUSE_US 100000         /* a gap between bursts longer than 100 ms */
#define BURST_GAP_US 1000       /* receives closer than 1 ms belong to one burst */

struct connect_call {
    u64 conn_id;    /* set by inet_sock_set_state when the call is a TCP connect */
    s32 fd;
    u16 family;
    u16 dport;      /* host order */
    u8 daddr[16];
};

/* the exchange in progress (struct exchange_rec's statistics) */
struct exchange {
    u64 start_ns;
    u64 first_rx_ns;
    u64 last_rx_ns;
    u64 tx_bytes;
    u64 rx_bytes;
    u64 gap_sum_us;
    u64 gap_sq_us;
    u32 tx_calls;
    u32 rx_calls;
    u32 rx_bursts;
    u32 burst_bytes;  /* of the burst in progress */
    u32 burst_min;
    u32 burst_max;
    u32 gap_max_us;
    u32 pauses;
    u32 index;
    u32 phase;      /* PHASE_* */
    u16 burst_size[4];
};

struct sk_state {
    u64 conn_id;
    u64 sent;
    u64 received;
    u32 pid;
    s32 fd;
    struct exchange ex;
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

/* The burst in progress is complete: count it in the size statistics. */
static __always_inline void end_burst(struct exchange *ex)
{
    u32 b = ex->burst_bytes;
    if (ex->rx_bursts == 0)
        return;
    if (ex->rx_bursts == 1 || b < ex->burst_min)
        ex->burst_min = b;
    if (b > ex->burst_max)
        ex->burst_max = b;
    ex->burst_size[b <= 128 ? 0 : b <= 1024 ? 1 : b <= 8192 ? 2 : 3] += 1;
    ex->burst_bytes = 0;
}

/* Send the exchange in progress as a REC_EXCHANGE (at most one per exchange). */
static __always_inline void send_exchange(u64 sk, struct sk_state *st, u64 now, u32 closing)
{
    end_burst(&st->ex);
    struct exchange_rec *r = events.ringbuf_reserve(sizeof(struct exchange_rec));
    if (!r) {
        count_lost(LOST_RINGBUF);
        return;
    }
    fill_head(&r->h, REC_EXCHANGE);
    r->h.pid = st->pid;  /* a close may run in softirq context */
    r->h.tid = 0;
    r->sk = sk;
    r->conn_id = st->conn_id;
    r->start_ns = st->ex.start_ns;
    r->first_rx_ns = st->ex.first_rx_ns;
    r->last_rx_ns = st->ex.last_rx_ns;
    r->end_ns = now;
    r->tx_bytes = st->ex.tx_bytes;
    r->rx_bytes = st->ex.rx_bytes;
    r->gap_sum_us = st->ex.gap_sum_us;
    r->gap_sq_us = st->ex.gap_sq_us;
    r->tx_calls = st->ex.tx_calls;
    r->rx_calls = st->ex.rx_calls;
    r->rx_bursts = st->ex.rx_bursts;
    r->burst_min = st->ex.burst_min;
    r->burst_max = st->ex.burst_max;
    r->gap_max_us = st->ex.gap_max_us;
    r->pauses = st->ex.pauses;
    r->index = st->ex.index;
    r->closing = closing;
    r->pad7 = 0;
    __builtin_memcpy(r->burst_size, st->ex.burst_size, sizeof(r->burst_size));
    events.ringbuf_submit(r, 0);
}

/* Account one send or receive of ret bytes to the exchange in progress. A send after
 * receives ends the exchange (sent to userspace) and starts the next one. */
static __always_inline void track_exchange(u64 sk, struct sk_state *st, u32 ret, int sent)
{
    u64 now = bpf_ktime_get_ns();
    struct exchange *ex = &st->ex;
    if (sent) {
        if (ex->phase == PHASE_RECV) {
            send_exchange(sk, st, now, 0);
            u32 next = ex->index + 1;
            __builtin_memset(ex, 0, sizeof(*ex));
            ex->index = next;
        }
        if (ex->phase == PHASE_IDLE)
            ex->start_ns = now;
        ex->phase = PHASE_SEND;
        ex->tx_bytes += ret;
        ex->tx_calls += 1;
        return;
    }
    if (ex->phase == PHASE_IDLE)
        ex->start_ns = now;  /* the peer spoke first */
    if (ex->rx_calls == 0) {
        ex->first_rx_ns = now;
        ex->rx_bursts = 1;
    } else {
        u64 gap = (now - ex->last_rx_ns) / 1000;
        if (gap >= BURST_GAP_US) {
            end_burst(ex);
            ex->rx_bursts += 1;
            if (gap > GAP_CAP_US)
                gap = GAP_CAP_US;
            ex->gap_sum_us += gap;
            ex->gap_sq_us += gap * gap;
            if (gap > ex->gap_max_us)
                ex->gap_max_us = gap;
            if (gap > PAUSE_US)
                ex->pauses += 1;
        }
    }
    ex->burst_bytes += ret;
    ex->last_rx_ns = now;
    ex->phase = PHASE_RECV;
    ex->rx_bytes += ret;
    ex->rx_calls += 1;
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
        if (st->ex.phase != PHASE_IDLE)
            send_exchange(sk, st, bpf_ktime_get_ns(), 1);
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
    track_exchange(sk, st, (u32)ret, sent);
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
