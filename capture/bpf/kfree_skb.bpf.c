// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
//
// dye's kernel-drop watcher: on the skb:kfree_skb tracepoint (tp_btf), report every packet the
// kernel drops whose IP packet ends with dye's marker of one trace (magic + trace id), with the
// kernel's drop reason, where (netns inode, ifindex) and which function let go of it.
//
// Only the fields dye reads are declared, each struct marked preserve_access_index: libbpf-style
// CO-RE relocations (done by aya at load time against /sys/kernel/btf/vmlinux) fix up their
// offsets for the running kernel, so the object needs no generated vmlinux.h.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define DYE_MAGIC 0xD7E0C0DEu
#define MARKER_LEN 16
/* sk_buff's network_header when unset ((typeof(skb->network_header))~0U). */
#define HEADER_UNSET 0xffff

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} __attribute__((preserve_access_index)) possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct sock_common {
	possible_net_t skc_net;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned int len;
	unsigned int data_len;
	__u16 network_header;
	unsigned int tail;
	unsigned char *head;
} __attribute__((preserve_access_index));

/* What userspace reads from the ring; the layout is mirrored in capture/src/dropwatch/event.rs. */
struct drop_event {
	__u64 ts_ns;    /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 location; /* the kernel address that freed the skb */
	__u32 reason;   /* enum skb_drop_reason */
	__u32 netns;    /* inode of the network namespace */
	__u32 ifindex;  /* skb->dev's, 0 without a device */
	__u32 seq;      /* the probe's sequence number, from its marker */
	__u8 version;   /* IP version of the dropped packet's outer header */
	__u8 proto;     /* its IP protocol (17 for a probe inside VXLAN) */
	__u8 pad[2];
	__u8 src[16];   /* outer addresses (IPv4 in the first 4 bytes) */
	__u8 dst[16];
};

/* Set by userspace before loading: the trace whose probes to report. */
volatile const __u32 DYE_TRACE_ID = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} DYE_DROPS SEC(".maps");

static __always_inline __u32 be32(const __u8 *b)
{
	return ((__u32)b[0] << 24) | ((__u32)b[1] << 16) | ((__u32)b[2] << 8) | b[3];
}

static __always_inline __u32 netns_of(struct sk_buff *skb, struct net_device *dev)
{
	struct net *net = 0;
	struct sock *sk = skb->sk;
	if (dev)
		net = dev->nd_net.net;
	else if (sk)
		net = sk->__sk_common.skc_net.net;
	return net ? net->ns.inum : 0;
}

SEC("tp_btf/kfree_skb")
int dye_kfree_skb(__u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	__u64 location = ctx[1];
	__u32 reason = (__u32)ctx[2];
	__u8 ip[40];
	__u8 marker[MARKER_LEN];
	__u32 nh, ip_len, tail;
	__u8 version, proto;

	if (!skb)
		return 0;
	nh = skb->network_header;
	if (nh == HEADER_UNSET)
		return 0;
	unsigned char *head = skb->head;
	if (bpf_probe_read_kernel(ip, 20, head + nh) < 0)
		return 0;
	version = ip[0] >> 4;
	if (version == 4) {
		ip_len = ((__u32)ip[2] << 8) | ip[3];
		proto = ip[9];
	} else if (version == 6) {
		if (bpf_probe_read_kernel(ip, 40, head + nh) < 0)
			return 0;
		ip_len = 40 + (((__u32)ip[4] << 8) | ip[5]);
		proto = ip[6];
	} else {
		return 0;
	}
	/* The marker ends the IP packet; only the linear part is read (dye's probes are small). */
	tail = skb->tail;
	if (ip_len < MARKER_LEN + 20 || nh + ip_len > tail)
		return 0;
	if (bpf_probe_read_kernel(marker, MARKER_LEN, head + nh + ip_len - MARKER_LEN) < 0)
		return 0;
	if (be32(marker) != DYE_MAGIC || be32(marker + 4) != DYE_TRACE_ID)
		return 0;

	struct drop_event *e = bpf_ringbuf_reserve(&DYE_DROPS, sizeof(*e), 0);
	if (!e)
		return 0;
	struct net_device *dev = skb->dev;
	e->ts_ns = bpf_ktime_get_ns();
	e->location = location;
	e->reason = reason;
	e->netns = netns_of(skb, dev);
	e->ifindex = dev ? dev->ifindex : 0;
	e->seq = be32(marker + 8);
	e->version = version;
	e->proto = proto;
	e->pad[0] = 0;
	e->pad[1] = 0;
	__builtin_memset(e->src, 0, sizeof(e->src));
	__builtin_memset(e->dst, 0, sizeof(e->dst));
	if (version == 4) {
		__builtin_memcpy(e->src, ip + 12, 4);
		__builtin_memcpy(e->dst, ip + 16, 4);
	} else {
		__builtin_memcpy(e->src, ip + 8, 16);
		__builtin_memcpy(e->dst, ip + 24, 16);
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* GPL-compatible: bpf_probe_read_kernel is a GPL-only helper. */
char LICENSE[] SEC("license") = "GPL";
