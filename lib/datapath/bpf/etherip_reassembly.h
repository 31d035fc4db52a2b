// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Reassembly of outer IPv4 and IPv6 fragments in BPF (TC ingress runs before IP reassembly). The
 * table and its buffers are defined in etherip_maps.h. */
#ifndef ETHERCTL_ETHERIP_REASSEMBLY_H
#define ETHERCTL_ETHERIP_REASSEMBLY_H

#include "etherip_deliver.h"
#include "etherip_ipsec.h"

/* Reassembly of outer fragments.
 *
 * Fragments of one datagram can be processed at the same moment on different CPUs (RSS or RPS
 * spreading, several underlay queues, senders pinned to CPUs), so the table must be safe under
 * concurrency: no datagram lost because two of its pieces raced, none delivered twice, none
 * delivered with bytes of another datagram. The design:
 *
 * - An ARRAY of FRAG_BUCKETS buckets, each a bpf_spin_lock and FRAG_WAYS slots; a datagram
 *   (tunnel, IP id) belongs to one bucket (hash), so every CPU handling one of its pieces
 *   takes the same lock and finds or creates the same slot: two racing first pieces cannot
 *   create two partial datagrams. bpf_spin_lock works in ARRAY and HASH values but not in
 *   LRU_HASH ones (EOPNOTSUPP on 6.1 and 6.18 alike), and an array's memory is never freed or
 *   recycled behind our back: hash and LRU elements are reused at once after a delete or an
 *   eviction (no RCU grace period), so a CPU still copying into one could write into another
 *   datagram. Slots are recycled only by this code, under the lock.
 * - The lock is held only for bookkeeping (find/claim a slot, check and mark the 8-byte blocks
 *   a piece covers, count): no helper may be called while holding it (the verifier refuses),
 *   and it disables interrupts, so a softirq cannot spin on a lock its own CPU holds. The copy
 *   into the slot's buffer happens outside the lock, under a reference (`writers`): a slot
 *   with writers is never recycled, and the blocks a writer marked are its alone (overlapping
 *   pieces are refused before they copy anything).
 * - `received` counts bytes whose copy finished; the CPU that makes it equal to the datagram's
 *   length (known from the last piece) moves the slot to DONE under the lock: exactly one CPU
 *   delivers, after every copy. It then frees the slot.
 * Rejected alternatives: lock-free bitmaps (__sync_fetch_and_or) with a per-entry generation in
 * a hash/LRU map detect a recycled entry only after writing into it; a CAS "assembler" flag
 * makes a CPU that finds it taken either spin without the interrupt protection of
 * bpf_spin_lock or drop its piece.
 * Capacity: FRAG_BUCKETS * FRAG_WAYS datagrams under reassembly. A piece of a new datagram that
 * finds its bucket full pushes out the oldest incomplete datagram nobody is copying into
 * (counted: frag_timeout when it was older than ETHERIP_FRAG_TIMEOUT_NS, else frag_evicted). */

/* Bitmap arithmetic without branches: each branch in a loop over FRAG_WORDS words multiplies
 * the paths the verifier walks (with branches, frag_claim exceeded its million instructions). The
 * OPAQUEs keep clang from turning the arithmetic back into comparisons. */

/* x clamped to [0, 64]. */
static __always_inline __u64 clamp64(__s64 x) {
  __s64 sign = x >> 63;
  OPAQUE(sign);
  x &= ~sign; /* negative: 0 */
  __s64 over = 64 - x;
  __s64 over_sign = over >> 63;
  OPAQUE(over_sign);
  x += over & over_sign; /* above 64: 64 */
  return (__u64)x;
}

/* Bits 0..n-1 set, n in [0, 64] (two shifts: a shift by 64 is undefined). */
static __always_inline __u64 low_bits(__u64 n) {
  __u64 half = n >> 1;
  return ~((~0ULL << half) << (n - half));
}

/* Bits of bitmap word `word` that cover 8-byte blocks first..last (none when last < first). */
static __always_inline __u64 block_mask(__u32 first, __u32 last, __u32 word) {
  __s64 lo = (__s64)word * 64;
  __u64 from = clamp64((__s64)first - lo), to = clamp64((__s64)last + 1 - lo);
  return low_bits(to) & ~low_bits(from);
}

#define SLOT(bk, way) (&(bk)->slot[(way) & (FRAG_WAYS - 1)])

/* `now` was read before taking the lock, so another CPU may have opened the slot later than
 * that: signed, or such a fresh datagram would look billions of years old. */
static __always_inline int expired(const struct frag_slot *s, __u64 now) {
  return (__s64)(now - s->first_ns) > (__s64)ETHERIP_FRAG_TIMEOUT_NS;
}

/* A slot whose datagram is dropped or delivered: free now, or once its last writer leaves. */
static __always_inline void retire(struct frag_slot *s) {
  s->state = s->writers ? FRAG_DEAD : FRAG_FREE;
}

static __always_inline struct frag_bucket *bucket_of(__u64 ident, __u32 *b) {
  *b = (__u32)((ident * 0x9E3779B97F4A7C15ULL) >> (64 - FRAG_BUCKET_BITS));
  return bpf_map_lookup_elem(&frag_buckets, b);
}

/* The reassembly steps are global (not inlined) functions: the verifier checks each once on its
 * own, with arguments as unknown scalars, rather than once per caller and caller state, which
 * keeps the decap program within its budget on 6.1 (inlined, the 19-word bitmap and 19-chunk
 * copy loops exceeded the million instructions). BPF functions take at most five arguments.
 *
 * Step 1, under the bucket lock: finds the datagram's slot or opens one, checks the piece
 * (datagram offset foff, plen bytes; more_max = more | max << 1, more: not the last piece, max:
 * the datagram's largest size) against the blocks claimed so far, claims its blocks and takes a
 * writer reference. Returns the slot (0..FRAG_WAYS-1), or -1
 * when the piece is refused (counted). */
__noinline int frag_claim(__u64 ident, __u32 foff, __u32 plen, __u32 more_max, __u64 now) {
  __u32 key = (__u32)(ident >> 32), b;
  __u32 more = more_max & 1, max = more_max >> 1;
  struct frag_bucket *bk = bucket_of(ident, &b);
  if (!bk) {
    drop(key, ETHERIP_DROP_HELPER);
    return -1;
  }
  int oversize = max > ETHERIP_ESP_MAX || plen > max || foff >= max || foff + plen > max;
  __u32 end = foff + plen, first = foff / 8, last = (end - 1) / 8;

  /* Under the lock: no helper calls. Drops are counted after unlocking. */
  int bad = 0, stale = 0, evicted = 0;
  __u32 victim = 0, way = FRAG_WAYS;
  bpf_spin_lock(&bk->lock);
  for (__u32 i = 0; i < FRAG_WAYS; i++)
    if (bk->slot[i].state == FRAG_OPEN && bk->slot[i].ident == ident) way = i;
  if (way < FRAG_WAYS && expired(SLOT(bk, way), now)) {
    /* The stale datagram is dropped; this piece starts a new one. */
    retire(SLOT(bk, way));
    stale = 1;
    way = FRAG_WAYS;
  }
  if (oversize) {
    if (way < FRAG_WAYS) retire(SLOT(bk, way));
    bad = ETHERIP_DROP_FRAG_OVERSIZE;
    goto unlock;
  }
  if (way >= FRAG_WAYS) {
    /* A free slot, else the oldest incomplete datagram that nobody is copying into. */
    __u32 oldest = FRAG_WAYS;
    for (__u32 i = 0; i < FRAG_WAYS; i++) {
      struct frag_slot *c = &bk->slot[i];
      if (c->state == FRAG_FREE) {
        if (way >= FRAG_WAYS) way = i;
      } else if (c->state == FRAG_OPEN && c->writers == 0 &&
                 (oldest >= FRAG_WAYS || c->first_ns < SLOT(bk, oldest)->first_ns)) {
        oldest = i;
      }
    }
    if (way >= FRAG_WAYS && oldest < FRAG_WAYS) {
      way = oldest;
      victim = (__u32)(SLOT(bk, way)->ident >> 32);
      evicted = expired(SLOT(bk, way), now) ? ETHERIP_DROP_FRAG_TIMEOUT : ETHERIP_DROP_FRAG_EVICTED;
    }
    if (way >= FRAG_WAYS) {
      bad = ETHERIP_DROP_FRAG_EVICTED; /* every slot busy: no room for this datagram */
      goto unlock;
    }
    struct frag_slot *n = SLOT(bk, way);
    n->ident = ident;
    n->first_ns = now;
    n->total = 0;
    n->received = 0;
    n->writers = 0;
    n->state = FRAG_OPEN;
    for (__u32 w = 0; w < FRAG_WORDS; w++) n->blocks[w] = 0;
  }
  {
    struct frag_slot *s = SLOT(bk, way);
    __u64 overlap = 0, beyond = 0;
    for (__u32 w = 0; w < FRAG_WORDS; w++) {
      overlap |= s->blocks[w] & block_mask(first, last, w);
      beyond |= s->blocks[w] & block_mask(last + 1, FRAG_WORDS * 64 - 1, w);
    }
    if (overlap)
      bad = ETHERIP_DROP_FRAG_OVERLAP;
    else if (s->total && end > s->total)
      bad = ETHERIP_DROP_FRAG_MALFORMED;
    else if (!more && s->total)
      bad = ETHERIP_DROP_FRAG_OVERLAP; /* a second last piece */
    else if (!more && beyond)
      bad = ETHERIP_DROP_FRAG_MALFORMED; /* pieces beyond the end this one declares */
    if (bad) {
      retire(s);
      goto unlock;
    }
    if (!more) s->total = end;
    for (__u32 w = 0; w < FRAG_WORDS; w++) s->blocks[w] |= block_mask(first, last, w);
    s->writers++;
  }
unlock:
  bpf_spin_unlock(&bk->lock);
  if (stale) drop(key, ETHERIP_DROP_FRAG_TIMEOUT);
  if (evicted) drop(victim, evicted);
  if (bad) {
    drop(key, bad);
    return -1;
  }
  return way & (FRAG_WAYS - 1);
}

/* Step 2, without the lock: copies the piece (plen bytes at skb offset off) to datagram offset
 * foff in buffer idx; the claimed blocks are this writer's alone. Returns 1 when copied. */
__noinline int frag_copy(struct __sk_buff *skb, __u32 idx, __u32 off, __u32 foff, __u32 plen) {
  struct frag_buf *buf = bpf_map_lookup_elem(&frag_bufs, &idx);
  if (!skb || !buf) return 0;
  __u32 done = 0;
  for (int i = 0; i < FRAG_CHUNKS && done < plen; i++) {
    __u32 pos = foff + done, left = plen - done;
    OPAQUE(pos);
    if (pos >= ETHERIP_ESP_MAX) return 0;
    BOUNDED_SIZE(n, left > FRAG_CHUNK ? FRAG_CHUNK : left, FRAG_CHUNK, return 0);
    if (bpf_skb_load_bytes(skb, off + done, buf->data + pos, n)) return 0;
    done += n;
  }
  return done == plen;
}

/* Step 3, under the lock: drops the writer reference of slot `way` and counts the piece's plen
 * bytes when it was copied. Returns the datagram's length when this piece completed it: the
 * slot is then DONE and this CPU holds a reference to deliver it. Else 0. */
__noinline int frag_written(__u64 ident, __u32 way, __u32 plen, __u32 copied) {
  __u32 b, total = 0;
  struct frag_bucket *bk = bucket_of(ident, &b);
  if (!bk) return 0;
  bpf_spin_lock(&bk->lock);
  struct frag_slot *s = SLOT(bk, way);
  s->writers--;
  if (s->state == FRAG_OPEN && !copied) {
    retire(s);
  } else if (s->state == FRAG_OPEN) {
    s->received += plen;
    if (s->total && s->received == s->total) {
      s->state = FRAG_DONE;
      s->writers++;
      total = s->total;
    }
  } else if (s->state == FRAG_DEAD && s->writers == 0) {
    s->state = FRAG_FREE;
  }
  bpf_spin_unlock(&bk->lock);
  return total;
}

/* Step 4: the datagram was delivered (or dropped): frees its slot. */
__noinline int frag_release(__u64 ident, __u32 way) {
  __u32 b;
  struct frag_bucket *bk = bucket_of(ident, &b);
  if (!bk) return 0;
  bpf_spin_lock(&bk->lock);
  struct frag_slot *s = SLOT(bk, way);
  s->writers--;
  retire(s);
  bpf_spin_unlock(&bk->lock);
  return 0;
}

/* The whole ESP packet of a reassembled datagram (len bytes of ESP in buf) replaces the packet:
 * Ethernet to dec-<tunnel>, an IPv4 header from the peer to the tunnel's local address without
 * fragmentation, the ESP bytes. AEAD and ESP authentication cover the ESP bytes only, so a
 * rebuilt outer header decrypts alike. Checksum handling as in emit(). */
static __always_inline int emit_esp4(struct __sk_buff *skb, const struct etherip_tunnel *t,
                                     __u8 *buf, __u32 len) {
  const __u32 hlen = ETH_HLEN + sizeof(struct iphdr);
  if (len < 8 || len > ETHERIP_ESP_MAX) return -1;
  __u32 want = hlen + len;
  if (skb->len < want && bpf_skb_change_tail(skb, want, 0)) return -1;
  struct ethhdr eth;
  __builtin_memcpy(eth.h_dest, t->dec_mac, ETH_ALEN);
  __builtin_memcpy(eth.h_source, t->mac, ETH_ALEN);
  eth.h_proto = bpf_htons(ETH_P_IP);
  struct iphdr ip = ipv4_header(t->remote, t->local, IPPROTO_ESP, len, 0);
  if (bpf_skb_store_bytes(skb, 0, &eth, ETH_HLEN, 0) ||
      bpf_skb_store_bytes(skb, ETH_HLEN, &ip, sizeof(ip), BPF_F_RECOMPUTE_CSUM))
    return -1;
  BOUNDED_SIZE(n, len, ETHERIP_ESP_MAX, return -1);
  if (bpf_skb_store_bytes(skb, hlen, buf, n, BPF_F_RECOMPUTE_CSUM)) return -1;
  if (skb->len > want && bpf_skb_change_tail(skb, want, 0)) return -1;
  return 0;
}

/* One fragment of datagram `id` of tunnel `key`: payload of plen bytes at skb offset off,
 * belonging at datagram offset foff; more: not the last piece; esp: a piece of an ESP packet
 * (IPsec tunnels, IPv4), which is sent whole to be decrypted (send_esp) rather than delivered.
 * See the comment at frag_buckets for the locking. Global too, packed arguments:
 * geometry = foff << 32 | plen, flags_off = off | more << 31 | esp << 30. */
__noinline int etherip_reassemble(struct __sk_buff *skb, __u32 key, __u32 id, __u64 geometry,
                                  __u32 flags_off) {
  __u32 plen = (__u32)geometry, foff = (__u32)(geometry >> 32);
  __u32 off = flags_off & 0x3fffffff, more = flags_off >> 31, esp = (flags_off >> 30) & 1;
  struct etherip_tunnel *t = bpf_map_lookup_elem(&tunnels, &key);
  if (!skb || !t) return drop(ETHERIP_UNATTRIBUTED, ETHERIP_DROP_NO_TUNNEL);
  if (plen == 0 || (more && (plen & 7))) return drop(key, ETHERIP_DROP_FRAG_MALFORMED);
  /* ESP and EtherIP datagrams of one tunnel never share a slot: IPv4 ids have 16 bits. */
  __u64 ident = ((__u64)key << 32) | id | (esp ? 1u << 16 : 0);
  __u32 max = esp ? ETHERIP_ESP_MAX : ETHERIP_FRAG_MAX;
  int way = frag_claim(ident, foff, plen, more | max << 1, bpf_ktime_get_ns());
  if (way < 0) return TC_ACT_SHOT;
  way &= FRAG_WAYS - 1;
  __u32 b;
  if (!bucket_of(ident, &b)) return drop(key, ETHERIP_DROP_HELPER); /* not reached */
  __u32 idx = b * FRAG_WAYS + way;
  int copied = frag_copy(skb, idx, off, foff, plen);
  struct etherip_stats *st = stats_of(key);
  if (copied && st) st->rx_fragments++;
  __u32 total = frag_written(ident, way, plen, copied);
  if (!copied) return drop(key, ETHERIP_DROP_TRUNCATED);
  /* Held: not a drop, the datagram is still incomplete (or another piece dropped it). */
  if (!total) return TC_ACT_STOLEN;

  /* This CPU completed the datagram: every other piece's copy finished before its count. */
  int verdict;
  struct frag_buf *buf = bpf_map_lookup_elem(&frag_bufs, &idx);
  if (!buf) {
    verdict = drop(key, ETHERIP_DROP_HELPER);
  } else if (esp) {
    if (emit_esp4(skb, t, buf->data, total)) {
      verdict = drop(key, ETHERIP_DROP_HELPER);
    } else {
      if (st) st->reassembled++;
      verdict = send_esp(skb, t, key);
    }
  } else if (total < 2 + ETH_HLEN || total > ETHERIP_FRAG_MAX) {
    verdict = drop(key, ETHERIP_DROP_TRUNCATED);
  } else if (!version_ok(t, key, *(__be16 *)buf->data)) {
    verdict = TC_ACT_SHOT;
  } else if (emit(skb, buf->data + 2, total - 2)) {
    verdict = drop(key, ETHERIP_DROP_HELPER);
  } else {
    if (st) st->reassembled++;
    verdict = deliver(skb, t, key, total - 2);
  }
  frag_release(ident, way);
  return verdict;
}

#endif
