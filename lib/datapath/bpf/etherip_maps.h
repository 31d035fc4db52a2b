// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Every map of the EtherIP programs. Maps are pinned by the loader (lib/datapath/pins.cpp), not
 * by libbpf: it pins once a tunnel exists, under a per-namespace directory. Map value types shared
 * with user space are in etherip_common.h; the others are here. */
#ifndef ETHERCTL_ETHERIP_MAPS_H
#define ETHERCTL_ETHERIP_MAPS_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#include "etherip_common.h"

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, __u32);
  __type(value, struct etherip_tunnel);
} tunnels SEC(".maps");

/* Fast-path tunnels: the tunnel port T's ifindex -> the tunnel's key (eip's ifindex), for
 * etherip_encap_port on T's egress. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, __u32);
  __type(value, __u32);
} ports SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, struct etherip_peer_key);
  __type(value, __u32);
} peers SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 1024);
  __type(key, struct etherip_addr_key);
  __type(value, __u32);
} locals SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, 1025);
  __type(key, __u32);
  __type(value, struct etherip_stats);
} stats SEC(".maps");

/* The reassembly table (see etherip_reassembly.h for its design and locking). */
#define FRAG_BUCKET_BITS 6
#define FRAG_BUCKETS (1 << FRAG_BUCKET_BITS)
#define FRAG_WAYS 4
/* Datagrams up to ETHERIP_ESP_MAX bytes: EtherIP payloads (at most ETHERIP_FRAG_MAX) and, for
 * IPsec tunnels, ESP payloads. */
#define FRAG_WORDS ((ETHERIP_ESP_MAX / 8 + 63) / 64) /* bitmap words: one bit per 8 bytes */
/* Pieces are copied in chunks so that "offset < MAX" and "chunk <= FRAG_CHUNK" bound every
 * write for the verifier: the buffer needs FRAG_CHUNK bytes of slack, not another MAX. */
#define FRAG_CHUNK 512
#define FRAG_CHUNKS ((ETHERIP_ESP_MAX + FRAG_CHUNK - 1) / FRAG_CHUNK)

enum frag_state {
  FRAG_FREE = 0,
  FRAG_OPEN, /* collecting pieces */
  FRAG_DONE, /* complete: one CPU is delivering it */
  FRAG_DEAD, /* dropped while writers were copying: free once the last one leaves */
};

struct frag_slot {
  __u64 ident;    /* tunnel key << 32 | IP identification */
  __u64 first_ns; /* arrival of the first piece */
  __u32 total;    /* datagram payload length, known once the last piece arrived; 0 before */
  __u32 received; /* payload bytes copied into the buffer */
  __u32 writers;  /* CPUs copying into or delivering from the buffer right now */
  __u32 state;    /* enum frag_state */
  __u64 blocks[FRAG_WORDS]; /* 8-byte blocks claimed by pieces, to refuse overlaps */
};

struct frag_bucket {
  struct bpf_spin_lock lock;
  __u32 pad;
  struct frag_slot slot[FRAG_WAYS];
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, FRAG_BUCKETS);
  __type(key, __u32);
  __type(value, struct frag_bucket);
} frag_buckets SEC(".maps");

/* Payload of slot `way` of bucket `b`: entry b * FRAG_WAYS + way. */
struct frag_buf {
  __u8 data[ETHERIP_ESP_MAX + FRAG_CHUNK];
};
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, FRAG_BUCKETS *FRAG_WAYS);
  __type(key, __u32);
  __type(value, struct frag_buf);
} frag_bufs SEC(".maps");

/* Never written: zero bytes for padding short frames. */
struct zeroes {
  __u8 bytes[ETH_ZLEN];
};
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct zeroes);
} zeroes SEC(".maps");

/* Scratch for the copy path of short frames (see decap_whole). */
struct scratch {
  __u8 buf[2 * ETHERIP_FRAG_MAX];
};
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct scratch);
} scratch SEC(".maps");

#endif
