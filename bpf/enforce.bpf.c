/* enforce.bpf.c - refuse new connections to denied destinations (cgroup connect hooks).
 *
 * Attached to the root of the cgroup v2 hierarchy, so every process on the host passes
 * through it on connect(2). A destination is denied when (family, address, port) or
 * (family, address, any port) is in `blocked`; the caller then gets EPERM and a record
 * says who tried (in report-only mode the connect goes ahead and is only recorded). Compiled as its own object, only under --enforce: capture does not
 * pay for it otherwise. Cost when nothing matches: one or two hash lookups per connect.
 *
 * Why not BPF LSM socket_connect: this kernel refuses to load LSM programs (lockdown);
 * cgroup sock_addr hooks are allowed and see the same connect calls.
 */
#include <uapi/linux/bpf.h>
#include <linux/sched.h>

#define FAMILY_INET 2
#define FAMILY_INET6 10

struct dst_key {
    u32 family;
    u16 port;   /* host order; 0 = every port */
    u16 pad;
    u8 addr[16];  /* IPv4 in the first 4 bytes */
};

struct block_rec {
    u32 pid;
    u32 uid;
    u32 family;
    u16 port;
    u16 refused;  /* 0 in report-only mode (--dry-run): the connect went ahead */
    u8 addr[16];
    char comm[TASK_COMM_LEN];
};

BPF_HASH(blocked, struct dst_key, u8, 4096);
BPF_RINGBUF_OUTPUT(enforce_events, 8);
/* [0]: 1 = report only (--dry-run): record matches, refuse nothing */
BPF_ARRAY(enforce_mode, u32, 1);

static __always_inline int judge(struct dst_key *k)
{
    u8 *hit = blocked.lookup(k);
    if (!hit) {
        u16 port = k->port;
        k->port = 0;
        hit = blocked.lookup(k);
        k->port = port;
    }
    if (!hit)
        return 1; /* allow */
    u32 zero = 0;
    u32 *mode = enforce_mode.lookup(&zero);
    int refuse = !(mode && *mode == 1);
    struct block_rec *r = enforce_events.ringbuf_reserve(sizeof(struct block_rec));
    if (r) {
        u64 id = bpf_get_current_pid_tgid();
        r->pid = id >> 32;
        r->uid = (u32)bpf_get_current_uid_gid();
        r->family = k->family;
        r->port = k->port;
        r->refused = refuse;
        __builtin_memcpy(r->addr, k->addr, sizeof(r->addr));
        bpf_get_current_comm(r->comm, sizeof(r->comm));
        enforce_events.ringbuf_submit(r, 0);
    }
    return refuse ? 0 : 1; /* 0: the caller's connect() fails with EPERM */
}

int block_connect4(struct bpf_sock_addr *ctx)
{
    struct dst_key k = {};
    k.family = FAMILY_INET;
    k.port = bpf_ntohs((u16)ctx->user_port);
    u32 ip = ctx->user_ip4;
    __builtin_memcpy(k.addr, &ip, 4);
    return judge(&k);
}

int block_connect6(struct bpf_sock_addr *ctx)
{
    struct dst_key k = {};
    k.family = FAMILY_INET6;
    k.port = bpf_ntohs((u16)ctx->user_port);
    /* the verifier wants each 32-bit word of user_ip6 loaded on its own */
    u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2],
        w3 = ctx->user_ip6[3];
    __builtin_memcpy(k.addr, &w0, 4);
    __builtin_memcpy(k.addr + 4, &w1, 4);
    __builtin_memcpy(k.addr + 8, &w2, 4);
    __builtin_memcpy(k.addr + 12, &w3, 4);
    return judge(&k);
}
