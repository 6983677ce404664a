/* dns.bpf.c - DNS queries and answers (UDP port 53) to userspace for decoding.
 *
 * Sockets talking to port 53 are watched by plaintext.bpf.c (connect() to :53, or
 * sendto() with a :53 address); their send/recv payloads reach userspace as SRC_DNS
 * records, decoded by busted/kernel/dns.py into DNS_QUERY / DNS_ANSWER events.
 * This file adds glibc's resolver path: it sends the A and AAAA questions together
 * with one sendmmsg() on a connected UDP socket, so the first two messages are copied.
 */
#include "busted.h"

struct mmsg_call {
    u64 mmsg;
    u64 conn_id;
    s32 fd;
    u32 pad;
};

/* one entry per thread inside a call: a plain hash (LRU updates cost more) */
BPF_HASH(mmsg_calls, u64, struct mmsg_call, 4096);

/* struct mmsghdr { struct user_msghdr msg_hdr (56 bytes); unsigned int msg_len; } */
#define BT_MMSGHDR_SIZE 64

TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg)
{
    u64 id = bpf_get_current_pid_tgid();
    struct fd_key k = {.pid = id >> 32, .fd = (s32)args->fd};
    struct watch *w = watched.lookup(&k);
    if (!w || w->source != SRC_DNS)
        return 0;
    struct mmsg_call c = {.mmsg = (u64)args->mmsg, .conn_id = w->conn_id, .fd = k.fd};
    mmsg_calls.update(&id, &c);
    return 0;
}

static __always_inline void dns_message(struct mmsg_call *c, u32 i)
{
    u64 hdr = c->mmsg + (u64)i * BT_MMSGHDR_SIZE;
    u64 iov = 0, base = 0;
    u32 sent = 0;
    if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(hdr + 16)) != 0 || !iov)
        return;
    if (bpf_probe_read_user(&base, sizeof(base), (void *)iov) != 0)
        return;
    if (bpf_probe_read_user(&sent, sizeof(sent), (void *)(hdr + 56)) != 0 || !sent)
        return;
    emit_data(SRC_DNS, DIR_WRITE, c->conn_id, c->fd, base, sent, 0);
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg)
{
    u64 id = bpf_get_current_pid_tgid();
    struct mmsg_call *p = mmsg_calls.lookup(&id);
    if (!p)
        return 0;
    struct mmsg_call c = *p;
    mmsg_calls.delete(&id);
    long sent = args->ret;
    if (sent > 0)
        dns_message(&c, 0);
    if (sent > 1)
        dns_message(&c, 1);
    return 0;
}
