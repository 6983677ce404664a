/* rustls.bpf.c - plaintext of rustls connections at aws-lc's AEAD (uprobes).
 *
 * rustls (with aws-lc-rs, e.g. OpenAI Codex) encrypts each TLS record with
 *   EVP_AEAD_CTX_seal(ctx, out, *out_len, max_out, nonce, nonce_len, in, in_len, ad, ad_len)
 * and decrypts it with EVP_AEAD_CTX_open (same arguments). The last four are on the
 * stack at entry: [sp+8] in, [sp+16] in_len, [sp+24] ad, [sp+32] ad_len. Where the
 * probes go is found by busted/kernel/tls/rustls.py.
 *
 * - Writes: read at seal's ENTRY, before the record is encrypted in place. That is also
 *   where --enforce holds a write (as tls.bpf.c does at SSL_write). TLS 1.2 records
 *   are sealed with EVP_AEAD_CTX_seal_scatter instead (its stack holds more arguments).
 * - Reads: open's entry keeps (ctx, out, out_len) per thread, its return reads the
 *   decrypted record.
 * - Which records: the additional data tells. TLS 1.3 (5 bytes: 17 03 03 + ciphertext
 *   length) hides the real type as the plaintext's last non-zero byte: only application
 *   data (23) is sent on, without that byte and any padding. TLS 1.2 (13 bytes: sequence,
 *   type, version, length): type 23 only. Handshake, alerts and anything that is not a
 *   TLS record header (other users of the AEAD) are skipped.
 * - Which connection: each direction has its own EVP_AEAD_CTX, and requests are sealed
 *   on whatever tokio worker thread runs the task. Keys are set up
 *   (EVP_AEAD_CTX_init_with_direction) by the thread that just read the handshake from
 *   the socket: its last TCP socket (tid_sk) is remembered for the ctx, with that
 *   socket's connection id and fd (connections.bpf.c's socks). Both directions then
 *   carry the connection's id as conn_id; a ctx set up before the monitor started has
 *   none and uses its own address (and the thread's last socket).
 *
 * Cost per record: one trap at seal (entry) or two at open (entry + return), a few
 * small user reads, two hash look-ups, and the ring record(s).
 */
#include "busted.h"

#define TLS_APPDATA 23
#define AEAD_TAG_LEN 16      /* AES-GCM and ChaCha20-Poly1305 alike */
#define TLS_MAX_INNER 16640  /* 2^14 + 256: larger is not a TLS record */

/* a key's connection: (pid, EVP_AEAD_CTX*) -> socket */
struct aead_conn {
    u64 sk;
    u64 conn_id;
    s32 fd;
    u32 pad;
};

/* open() in progress on a thread */
struct aead_open {
    u64 ctx;
    u64 out;
    u64 out_len;  /* size_t * */
    u64 sp;
    u8 tls13;
    u8 pad[7];
};

BPF_TABLE("lru_hash", struct conn_key, struct aead_conn, aead_conns, 65536);
BPF_HASH(aead_opens, u64, struct aead_open, 16384);

/* the stack arguments of seal/open at entry */
struct aead_args {
    u64 in;
    u64 in_len;
    u64 ad;
    u64 ad_len;
};

/* EVP_AEAD_CTX_init_with_direction(ctx, aead, key, key_len, tag_len, dir) and
 * EVP_AEAD_CTX_init(ctx, aead, key, key_len, tag_len, impl) */
int aead_init_enter(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    if (skip_self(id))
        return 0;
    u32 pid = id >> 32;
    u32 tid = (u32)id;
    struct conn_key k = {.pid = pid, .pad = 0, .conn_id = PT_REGS_PARM1(ctx)};
    u64 *sk = tid_sk.lookup(&tid);
    struct sk_state *st = sk ? socks.lookup(sk) : 0;
    if (!sk || !st || st->pid != pid) {
        aead_conns.delete(&k); /* a reused ctx must not keep an old connection */
        return 0;
    }
    struct aead_conn c = {.sk = *sk, .conn_id = st->conn_id, .fd = st->fd, .pad = 0};
    aead_conns.update(&k, &c);
    return 0;
}

/* The connection of a ctx: its id and fd, and the thread's last socket made to
 * point at it (emit_data reports tid_sk: the thread is about to use this socket). */
static __always_inline u64 aead_conn_of(u32 pid, u32 tid, u64 aead, s32 *fd)
{
    struct conn_key k = {.pid = pid, .pad = 0, .conn_id = aead};
    struct aead_conn *c = aead_conns.lookup(&k);
    *fd = -1;
    if (!c)
        return aead;
    u64 *last = tid_sk.lookup(&tid);
    if (!last || *last != c->sk)
        tid_sk.update(&tid, &c->sk);
    *fd = c->fd;
    return c->conn_id;
}

static __always_inline int read_args(struct pt_regs *ctx, struct aead_args *a)
{
    return bpf_probe_read_user(a, sizeof(*a), (void *)(PT_REGS_SP(ctx) + 8));
}

/* Is `ad` a TLS 1.3 record header (returns 13), a TLS 1.2 application-data one (12),
 * or something else (0)? `ct_len` is the record's ciphertext length. */
static __always_inline int record_kind(struct aead_args *a, u64 ct_len)
{
    u8 h[13] = {};
    if (a->ad_len == 5) {
        if (bpf_probe_read_user(h, 5, (void *)a->ad) != 0)
            return 0;
        if (h[0] != TLS_APPDATA || h[1] != 3 || h[2] != 3 || (((u64)h[3] << 8) | h[4]) != ct_len)
            return 0;
        return 13;
    }
    if (a->ad_len == 13) {
        if (bpf_probe_read_user(h, 13, (void *)a->ad) != 0)
            return 0;
        if (h[8] != TLS_APPDATA || h[9] != 3 || (((u64)h[11] << 8) | h[12]) + AEAD_TAG_LEN != ct_len)
            return 0;
        return 12;
    }
    return 0;
}

/* TLS 1.3 inner plaintext is content || type || zero padding: the content's length if
 * the type is application data, else 0. Padding is looked for in the last 32 bytes. */
static __always_inline u64 appdata_len(u64 buf, u64 n)
{
    u8 last = 0;
    if (n == 0 || n > TLS_MAX_INNER + 1)
        return 0;
    if (bpf_probe_read_user(&last, 1, (void *)(buf + n - 1)) != 0)
        return 0;
    if (last != 0)
        return last == TLS_APPDATA ? n - 1 : 0;
    if (n < 32)
        return 0;
    u8 tail[32] = {};
    if (bpf_probe_read_user(tail, sizeof(tail), (void *)(buf + n - 32)) != 0)
        return 0;
#pragma unroll
    for (int i = 30; i >= 0; i--) {
        if (tail[i] != 0)
            return tail[i] == TLS_APPDATA ? n - 32 + i : 0;
    }
    return 0;
}

/* A record about to be encrypted: sent on (and held under --enforce) if it is
 * application data. */
static __always_inline int seal_record(struct pt_regs *ctx, u64 id, struct aead_args *p)
{
    u32 pid = id >> 32;
    struct aead_args a = *p;
    if (a.in_len == 0 || a.in_len > TLS_MAX_INNER + 1)
        return 0;
    int kind = record_kind(&a, a.in_len + AEAD_TAG_LEN);
    u64 n = kind == 13 ? appdata_len(a.in, a.in_len) : (kind == 12 ? a.in_len : 0);
    if (n == 0)
        return 0;
    s32 fd;
    u64 conn_id = aead_conn_of(pid, (u32)id, PT_REGS_PARM1(ctx), &fd);
    u8 verdict = verdict_of(pid, conn_id);
    if (verdict == VERDICT_SKIP)
        return 0;
#ifdef ENFORCE
    /* as tls_enter: noted before the record goes out, stopped once it is out; a record
     * that could not go out is not held (nobody would resume the writer) */
    u64 now = bpf_ktime_get_ns();
    if (verdict != VERDICT_NO_HOLD && holding(pid) && held_pids.update(&pid, &now) == 0) {
        if (emit_data(SRC_TLS, DIR_WRITE, conn_id, fd, a.in, n, FLAG_HELD) == 0) {
            bpf_send_signal(BT_SIGSTOP); /* taken before the record is encrypted */
            return 0;
        }
        held_pids.delete(&pid);
        return 0;
    }
#endif
    emit_data(SRC_TLS, DIR_WRITE, conn_id, fd, a.in, n, 0);
    return 0;
}

static __always_inline int seal_killed(u64 id)
{
#ifdef ENFORCE
    u32 pid = id >> 32;
    if (kill_on_write.lookup(&pid)) {
        bpf_send_signal(BT_SIGKILL);
        return 1;
    }
#endif
    return 0;
}

/* EVP_AEAD_CTX_seal: TLS 1.3 records (and TLS 1.2 ones where the provider uses it) */
int aead_seal_enter(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    if (skip_self(id) || seal_killed(id))
        return 0;
    struct aead_args a = {};
    if (read_args(ctx, &a) != 0)
        return 0;
    return seal_record(ctx, id, &a);
}

/* EVP_AEAD_CTX_seal_scatter(ctx, out, out_tag, *out_tag_len, max_out_tag_len, nonce,
 * nonce_len, in, in_len, extra_in, extra_in_len, ad, ad_len): rustls seals TLS 1.2
 * records with it (the tag apart). On the stack: [sp+8] nonce_len, [sp+16] in,
 * [sp+24] in_len, [sp+32] extra_in, [sp+40] extra_in_len, [sp+48] ad, [sp+56] ad_len. */
int aead_seal_scatter_enter(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    if (skip_self(id) || seal_killed(id))
        return 0;
    u64 s[7] = {};
    if (bpf_probe_read_user(s, sizeof(s), (void *)(PT_REGS_SP(ctx) + 8)) != 0 || s[4] != 0)
        return 0; /* extra_in (plaintext sealed apart) is not what rustls does */
    struct aead_args a = {.in = s[1], .in_len = s[2], .ad = s[5], .ad_len = s[6]};
    return seal_record(ctx, id, &a);
}

int aead_open_enter(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    if (skip_self(id))
        return 0;
    struct aead_args a = {};
    if (read_args(ctx, &a) != 0 || a.in_len <= AEAD_TAG_LEN)
        return 0;
    int kind = record_kind(&a, a.in_len);
    if (kind == 0)
        return 0;
    struct aead_open o = {};
    o.ctx = PT_REGS_PARM1(ctx);
    o.out = PT_REGS_PARM2(ctx);
    o.out_len = PT_REGS_PARM3(ctx);
    o.sp = PT_REGS_SP(ctx);
    o.tls13 = kind == 13;
    if (aead_opens.update(&id, &o) != 0)
        count_lost(LOST_STASH);
    return 0;
}

int aead_open_return(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    struct aead_open *p = aead_opens.lookup(&id);
    if (!p)
        return 0;
    struct aead_open o = *p;
    aead_opens.delete(&id);
    if (PT_REGS_SP(ctx) != o.sp + 8 || (int)PT_REGS_RC(ctx) != 1)
        return 0; /* not our frame, or the record did not authenticate */
    u64 n = 0;
    if (bpf_probe_read_user(&n, sizeof(n), (void *)o.out_len) != 0)
        return 0;
    if (o.tls13)
        n = appdata_len(o.out, n);
    if (n == 0 || n > TLS_MAX_INNER)
        return 0;
    u32 pid = id >> 32;
    s32 fd;
    u64 conn_id = aead_conn_of(pid, (u32)id, o.ctx, &fd);
    if (judged_uninteresting(pid, conn_id))
        return 0;
    emit_data(SRC_TLS, DIR_READ, conn_id, fd, o.out, n, 0);
    return 0;
}
