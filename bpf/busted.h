/* busted.h - records and constants shared by every kernel program of busted.
 *
 * Every bpf/NAME.bpf.c file is compiled by bcc into ONE program text (see
 * busted/sources/kernel.py), so they share the maps declared at the end of this
 * header: one ring buffer, one lost-record counter, one payload scratch buffer and
 * one verdict map.
 *
 * The record structs below are mirrored in busted/kernel/records.py (ctypes);
 * tests/unit/kernel/test_records_sync.py parses this file and checks that sizes and
 * offsets agree, so change both together. Keep every struct naturally aligned
 * (u64 fields on 8-byte offsets) so no compiler padding hides in between.
 *
 * Sizes and filters arrive as -D cflags (never by editing this text):
 *   MAX_COPY      bytes of one call copied at most on a connection that carries requests
 *                 (it sent POST/PUT/PATCH, the HTTP/2 preface or a client WebSocket data
 *                 frame): a whole LLM request, however large (default 1 MiB)
 *   PEEK_COPY     bytes of one call copied on any other connection (default 16 KiB):
 *                 enough to classify it, cheap for downloads
 *   CHUNK_SIZE    bytes per ring-buffer record, power of two <= 16 KiB; a call larger
 *                 than one chunk becomes several records that userspace joins
 *   RING_PAGES    ring buffer size in pages (power of two)
 *   PLAIN_PORTn   TCP destination ports whose plain-text payload is copied
 *   READ_WAKEUP_EVERY  read records between forced consumer wake-ups (power of two)
 *   ENFORCE       (defined or not) --enforce: TLS writes of holdable processes are
 *                 sent at entry and the writer stopped until userspace decides
 */
#ifndef BUSTED_H
#define BUSTED_H

#ifndef MAX_COPY
#define MAX_COPY 1048576
#endif
#ifndef PEEK_COPY
#define PEEK_COPY 16384
#endif
#ifndef CHUNK_SIZE
#define CHUNK_SIZE 16384
#endif
#ifndef RING_PAGES
#define RING_PAGES 1024
#endif
#ifndef READ_WAKEUP_EVERY
#define READ_WAKEUP_EVERY 64
#endif
#define MAX_CHUNKS ((MAX_COPY + CHUNK_SIZE - 1) / CHUNK_SIZE)
#define BT_RB_NO_WAKEUP 1
#define BT_RB_FORCE_WAKEUP 2

#define COMM_LEN 16
#define SNI_LEN 128
#define PATH_LEN 256
#define DNS_PORT 53

/* record types (rec_head.type) */
#define REC_DATA 1        /* struct data_rec: a chunk of payload of one call */
#define REC_SNI 2         /* struct sni_rec: SSL_ctrl(SSL_CTRL_SET_TLSEXT_HOSTNAME) */
#define REC_SSL_FREE 3    /* struct ssl_rec: SSL_free, or SSL_do_handshake (BoringSSL) */
#define REC_CONNECT 4     /* struct conn_rec: a TCP connect() left this process */
#define REC_ESTABLISHED 5 /* struct conn_rec: ... and the handshake completed */
#define REC_CLOSE 6       /* struct conn_rec: a tracked TCP socket closed (byte totals) */
#define REC_EXEC 7        /* struct rec_head only: a process called execve */
#define REC_SSL_FD 8      /* struct ssl_rec: SSL_set_fd tied an SSL object to a socket */
#define REC_EXIT 9        /* struct rec_head only: a process (thread group) ended */
#define REC_LIBOPEN 10    /* struct path_rec: a process opened a libssl not yet probed */
#define REC_HELLO 11      /* struct hello_rec: a TCP connection's first write, a TLS ClientHello */
#define REC_EXCHANGE 12   /* struct exchange_rec: a request/response exchange of a TCP connection ended */

/* rec_head.held of REC_LIBOPEN */
#define LIB_HELD 1
#define LIB_WRITING 2

/* data_rec.source */
#define SRC_TLS 1
#define SRC_PLAIN 2
#define SRC_DNS 3
#define SRC_HELLO 4       /* watch.source only: a TCP socket whose first write is not seen yet */

/* bytes of a ClientHello copied: ~1.5 KB with a post-quantum key share (Bun, Go 1.24,
 * rustls), and the SNI may come after it */
#define HELLO_LEN 2048

/* data_rec.direction */
#define DIR_WRITE 0
#define DIR_READ 1

/* data_rec.flags */
#define FLAG_TRUNCATED 1 /* the call carried more than MAX_COPY bytes */
#define FLAG_HELD 2      /* sent at the call's entry; the writer is stopped (SIGSTOP) */
#define FLAG_WIDE 4      /* the connection carries requests: copied up to MAX_COPY, not
                          * PEEK_COPY */

/* index into the per-cpu `lost` array */
#define LOST_RINGBUF 0   /* ring buffer full: a record was dropped */
#define LOST_READ 1      /* bpf_probe_read_user failed (page not resident) */
#define LOST_STASH 2     /* no room in a stash map */
#define LOST_SLOTS 4

/* SSL_ctrl command that sets the SNI host name */
#define SSL_CTRL_SET_TLSEXT_HOSTNAME 55

struct rec_head {
    u64 ts_ns;      /* bpf_ktime_get_ns (monotonic) */
    u32 type;       /* REC_* */
    u32 pid;        /* tgid */
    u32 tid;
    u32 uid;
    u32 gid;
    u32 held;       /* REC_LIBOPEN: LIB_HELD (--enforce: the opener is stopped until
                     * probed) or LIB_WRITING (opened for writing: a copy being made) */
    u64 cgroup_id;
    char comm[COMM_LEN];
};

struct data_rec {
    struct rec_head h;
    u64 conn_id;    /* TLS: the SSL* (stable per connection); plain/DNS: kernel id */
    u64 sk;         /* the thread's last TCP socket (struct sock *), 0 if unknown */
    u32 call_len;   /* bytes the call moved (may exceed what is copied) */
    u32 offset;     /* of this chunk within the call */
    u32 len;        /* bytes of data[] in this record */
    s32 fd;         /* socket fd if known, else -1 */
    u8 source;      /* SRC_* */
    u8 direction;   /* DIR_* */
    u8 flags;       /* FLAG_* */
    u8 pad1[5];
    u8 data[CHUNK_SIZE]; /* only `len` bytes are sent */
};

struct sni_rec {
    struct rec_head h;
    u64 ssl;
    char name[SNI_LEN];
};

struct ssl_rec {
    struct rec_head h;
    u64 ssl;
    s32 fd;
    u32 pad2;
};

struct conn_rec {
    struct rec_head h;
    u64 sk;         /* struct sock *: joins CONNECT, ESTABLISHED and CLOSE */
    u64 conn_id;
    u64 bytes_sent;
    u64 bytes_received;
    s32 fd;         /* CONNECT only, else -1 */
    u16 family;     /* AF_INET / AF_INET6 */
    u16 sport;
    u16 dport;
    u16 pad3;
    u32 pad4;
    u8 saddr[16];   /* IPv4 in the first 4 bytes */
    u8 daddr[16];
};

/* One exchange of a tracked TCP connection: a run of sends, then a run of receives.
 * Sent when the connection sends again after receiving, and at its close (behavioural
 * features for busted.ml). Receives less than BURST_GAP_US apart form one burst: how a
 * TLS library splits its reads (OpenSSL reads a record's 5-byte header apart) does not
 * change the statistics of bursts, which are what a peer's writes look like. */
struct exchange_rec {
    struct rec_head h;
    u64 sk;
    u64 conn_id;
    u64 start_ns;       /* first call of the exchange */
    u64 first_rx_ns;    /* first receive (0: none) */
    u64 last_rx_ns;
    u64 end_ns;         /* the next send, or the close */
    u64 tx_bytes;
    u64 rx_bytes;
    u64 gap_sum_us;     /* gaps between bursts, each capped at GAP_CAP_US */
    u64 gap_sq_us;      /* sum of their squares (us^2) */
    u32 tx_calls;
    u32 rx_calls;
    u32 rx_bursts;
    u32 burst_min;      /* bytes of the smallest burst */
    u32 burst_max;
    u32 gap_max_us;
    u32 pauses;         /* gaps longer than PAUSE_US */
    u32 index;          /* exchanges before this one on the connection */
    u32 closing;        /* 1: sent at the connection's close */
    u32 pad7;
    u16 burst_size[4];  /* bursts of <=128, <=1024, <=8192, more bytes */
};

struct path_rec {
    struct rec_head h;
    char path[PATH_LEN];
};

/* the first write of a TCP connection when it starts like a TLS handshake record */
struct hello_rec {
    struct rec_head h;
    u64 conn_id;    /* the TCP connection's id (as in its conn_rec) */
    u32 call_len;   /* bytes of that write */
    u32 len;        /* bytes of data[] copied */
    s32 fd;
    u32 pad6;
    u8 data[HELLO_LEN];
};

/* what SSL_set_fd and SSL_ctrl said about an SSL object: the same facts as the
 * REC_SSL_FD / REC_SNI records, kept for userspace in case a flood dropped those */
struct ssl_info {
    s32 fd;
    u32 pad5;
    char sni[SNI_LEN];
};

/* a socket of a process */
struct fd_key {
    u32 pid;
    s32 fd;
};

/* a socket whose payload is copied (plain-text port or DNS) */
struct watch {
    u64 conn_id;
    u8 source;      /* SRC_PLAIN, SRC_DNS or SRC_HELLO */
    u8 pad[7];
};

/* key of the verdict map: a connection of a process */
struct conn_key {
    u32 pid;
    u32 pad;
    u64 conn_id;
};

#ifdef BUSTED_KERNEL
#include <uapi/linux/ptrace.h>
/* ---- maps and helpers shared by all programs (kernel side only) -------------- */
/* Per-process and per-connection state lives in LRU maps: a process that dies
 * without closing leaves entries behind, and those must age out on their own. */

BPF_RINGBUF_OUTPUT(events, RING_PAGES);
BPF_PERCPU_ARRAY(lost, u64, LOST_SLOTS);
/* payload records are built here and copied into the ring with their exact size:
 * a ring reserve needs a constant size, and reserving CHUNK_SIZE for a 100-byte
 * write would waste the ring. */
BPF_PERCPU_ARRAY(scratch, struct data_rec, 1);
/* userspace's verdict on a connection: VERDICT_SKIP = uninteresting, copy no more
 * payload; VERDICT_NO_HOLD = copy, but never hold its writes (the process is the server
 * side: it answers, it does not ask) */
#define VERDICT_SKIP 1
#define VERDICT_NO_HOLD 2
BPF_TABLE("lru_hash", struct conn_key, u8, verdicts, 65536);
/* sockets whose payload the syscall tracepoints copy (plaintext.bpf.c, dns.bpf.c) */
BPF_TABLE("lru_hash", struct fd_key, struct watch, watched, 65536);
/* per-cpu count of read records, to wake the consumer only every Nth one */
BPF_PERCPU_ARRAY(read_records, u64, 1);
/* per-cpu connection id counter: ids are (count << 8 | cpu), unique without atomics */
BPF_PERCPU_ARRAY(conn_counter, u64, 1);
/* busted's own processes (filled by userspace): never traced, no feedback loops */
BPF_HASH(ignored_pids, u32, u8, 64);
/* each thread's last TCP socket, for TLS libraries that do their own I/O (node) */
BPF_TABLE("lru_hash", u32, u64, tid_sk, 65536);
/* connections that sent a request (see copy_limit): their calls are copied whole */
BPF_TABLE("lru_hash", struct conn_key, u8, wide_conns, 65536);

static __always_inline void count_lost(u32 slot)
{
    u64 *n = lost.lookup(&slot);
    if (n)
        *n += 1;
}

static __always_inline u64 new_conn_id(void)
{
    u32 zero = 0;
    u64 *n = conn_counter.lookup(&zero);
    if (!n)
        return 0;
    *n += 1;
    return (*n << 8) | (bpf_get_smp_processor_id() & 0xff);
}

static __always_inline void fill_head(struct rec_head *h, u32 type)
{
    u64 id = bpf_get_current_pid_tgid();
    u64 ug = bpf_get_current_uid_gid();
    h->ts_ns = bpf_ktime_get_ns();
    h->type = type;
    h->pid = id >> 32;
    h->tid = (u32)id;
    h->uid = (u32)ug;
    h->gid = ug >> 32;
    h->held = 0;
    h->cgroup_id = bpf_get_current_cgroup_id();
    bpf_get_current_comm(h->comm, sizeof(h->comm));
}

static __always_inline int skip_self(u64 pid_tgid)
{
    u32 pid = pid_tgid >> 32;
    return ignored_pids.lookup(&pid) != 0;
}

static __always_inline u8 verdict_of(u32 pid, u64 conn_id)
{
    struct conn_key k = {.pid = pid, .pad = 0, .conn_id = conn_id};
    u8 *v = verdicts.lookup(&k);
    return v ? *v : 0;
}

static __always_inline int judged_uninteresting(u32 pid, u64 conn_id)
{
    return verdict_of(pid, conn_id) == VERDICT_SKIP;
}

/* Tell userspace a fact about a connection object (an SSL*, a *tls.Conn): REC_SSL_FD
 * (it is tied to socket fd) or REC_SSL_FREE (forget it: freed, or a new connection
 * starts on it; fd is the new socket when known, else -1). */
static __always_inline void send_ssl_rec(u32 type, u64 ssl, s32 fd)
{
    struct ssl_rec *r = events.ringbuf_reserve(sizeof(struct ssl_rec));
    if (!r) {
        count_lost(LOST_RINGBUF);
        return;
    }
    fill_head(&r->h, type);
    r->ssl = ssl;
    r->fd = fd;
    r->pad2 = 0;
    events.ringbuf_submit(r, 0);
}

/* Does this write start a request whose body may be large? An HTTP/1 POST, PUT or
 * PATCH, the HTTP/2 connection preface ("PRI "), or a client's WebSocket data frame
 * (RSV2/RSV3 clear, opcode continuation/text/binary, masked: clients always mask). */
static __always_inline int starts_request(u64 buf, u64 n)
{
    u8 h[4] = {};
    if (n < 4 || bpf_probe_read_user(h, sizeof(h), (void *)buf) != 0)
        return 0;
    if (h[0] == 'P' && ((h[1] == 'O' && h[2] == 'S' && h[3] == 'T') ||
                        (h[1] == 'U' && h[2] == 'T' && h[3] == ' ') ||
                        (h[1] == 'A' && h[2] == 'T' && h[3] == 'C') ||
                        (h[1] == 'R' && h[2] == 'I' && h[3] == ' ')))
        return 1;
    return (h[0] & 0x30) == 0 && (h[0] & 0x0f) <= 2 && (h[1] & 0x80);
}

/* How many bytes of this call to copy: whole (up to MAX_COPY) on a connection that
 * carries requests, PEEK_COPY elsewhere. Sets FLAG_WIDE in *flags for the former, so
 * userspace knows when the call's records are complete. */
static __always_inline u64 copy_limit(u64 conn_id, u8 direction, u64 buf, u64 n, u8 *flags)
{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct conn_key k = {.pid = pid, .pad = 0, .conn_id = conn_id};
    if (wide_conns.lookup(&k)) {
        *flags |= FLAG_WIDE;
        return n > MAX_COPY ? MAX_COPY : n;
    }
    if (direction == DIR_WRITE && starts_request(buf, n)) {
        u8 one = 1;
        wide_conns.update(&k, &one);
        *flags |= FLAG_WIDE;
        return n > MAX_COPY ? MAX_COPY : n;
    }
    return n > PEEK_COPY ? PEEK_COPY : n;
}

/* Copy up to copy_limit() bytes at user address `buf` into CHUNK_SIZE records.
 * Returns 0 when every record reached the ring, -1 when one was lost. */
static __always_inline int emit_data(u8 source, u8 direction, u64 conn_id, s32 fd,
                                     u64 buf, u64 n, u8 flags)
{
    u32 zero = 0;
    int ret = 0;
    struct data_rec *r = scratch.lookup(&zero);
    if (!r)
        return -1;
    fill_head(&r->h, REC_DATA);
    u32 tid = r->h.tid;
    u64 *sk = tid_sk.lookup(&tid);
    r->conn_id = conn_id;
    r->sk = sk ? *sk : 0;
    r->call_len = n > 0xffffffffULL ? 0xffffffffU : (u32)n;
    r->fd = fd;
    r->source = source;
    r->direction = direction;
    u64 want = copy_limit(conn_id, direction, buf, n, &flags);
    r->flags = flags | (n > want ? FLAG_TRUNCATED : 0);
    /* A wake-up costs the traced thread an interrupt: ~6 us per record on this VM
     * (bpf_stats: tls_write_return 7.8 us with forced wake-ups, 1.6 us without).
     * Writes (requests: what enforcement waits for) use the ring's default, which
     * wakes the consumer only when it has read everything before (once per burst);
     * reads (answers streamed in many small calls) do not wake it, except every
     * READ_WAKEUP_EVERY records; the consumer drains the rest after its poll timeout. */
    u64 wake = 0;
    if (flags & FLAG_HELD) {
        wake = BT_RB_FORCE_WAKEUP; /* the writer waits for this record's verdict */
    } else if (direction == DIR_READ) {
        u64 *cnt = read_records.lookup(&zero);
        if (cnt) {
            *cnt += 1;
            if (*cnt & (READ_WAKEUP_EVERY - 1))
                wake = BT_RB_NO_WAKEUP;
        }
    }
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < MAX_CHUNKS; i++) {
        /* `off` stays a constant per iteration and a short chunk always ends the
         * loop: otherwise the verifier walks every (offset, length) mix and gives up */
        u64 off = (u64)i * CHUNK_SIZE;
        if (off >= want)
            break;
        u64 len = want - off;
        int last = len <= CHUNK_SIZE;
        if (!last)
            len = CHUNK_SIZE;
        /* clang may hand the verifier an unclamped copy of `len`: bound the register
         * the helper really gets */
        asm volatile("%[len] &= %[mask]" : [len] "+r"(len) : [mask] "i"((CHUNK_SIZE << 1) - 1));
        if (len > CHUNK_SIZE || len == 0)
            break;
        u64 out = len;
        r->offset = off;
        r->len = len;
        if (bpf_probe_read_user(r->data, len, (void *)(buf + off)) != 0) {
            /* the header still goes out so userspace knows the call is incomplete */
            count_lost(LOST_READ);
            r->len = 0;
            out = 0;
        }
        if (events.ringbuf_output(r, sizeof(*r) - CHUNK_SIZE + out, last ? wake : BT_RB_NO_WAKEUP) != 0) {
            count_lost(LOST_RINGBUF);
            ret = -1;
        }
        if (last)
            break;
    }
    return ret;
}
#endif /* BUSTED_KERNEL */

#endif /* BUSTED_H */
