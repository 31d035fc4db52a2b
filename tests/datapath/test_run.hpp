// One BPF_PROG_TEST_RUN of a TC program, for the datapath's BPF tests.
#pragma once

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include <cstddef>
#include <cstdint>

#include "packets.hpp"

namespace etherctl::datapath::test {

struct TestRun {
  int error = 0;         // bpf_prog_test_run_opts' result (0 or -errno)
  uint32_t verdict = 0;  // the program's return value (TC_ACT_*)
  size_t out_len = 0;    // bytes of packet the program left (may exceed out's size: truncated)
  __sk_buff ctx{};       // the skb's fields after the run
};

// Runs prog once on `in` as if it arrived on ifindex (the kernel runs it on the calling CPU);
// the packet as the program left it goes into `out`, whose size is the room offered (it is not
// resized, so that threads that must not allocate can pass the same buffer every time).
inline TestRun test_run(int prog, const Bytes& in, int ifindex, Bytes& out, uint32_t mark = 0,
                        uint32_t gso_size = 0) {
  TestRun r;
  __sk_buff ctx{};
  ctx.ifindex = static_cast<uint32_t>(ifindex);
  ctx.ingress_ifindex = static_cast<uint32_t>(ifindex);
  ctx.mark = mark;
  ctx.gso_size = gso_size;
  if (gso_size) ctx.gso_segs = 2;
  bpf_test_run_opts opts{};
  opts.sz = sizeof(opts);
  opts.data_in = in.data();
  opts.data_size_in = static_cast<uint32_t>(in.size());
  opts.data_out = out.data();
  opts.data_size_out = static_cast<uint32_t>(out.size());
  opts.ctx_in = &ctx;
  opts.ctx_size_in = sizeof(ctx);
  opts.ctx_out = &r.ctx;
  opts.ctx_size_out = sizeof(r.ctx);
  r.error = bpf_prog_test_run_opts(prog, &opts);
  r.verdict = opts.retval;
  r.out_len = opts.data_size_out;
  return r;
}

}  // namespace etherctl::datapath::test
