#include "datapath/tc.hpp"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "datapath/support.hpp"
#include "datapath/types.hpp"
#include "kernel/netlink.hpp"

namespace etherctl::datapath {

namespace {

bpf_tc_hook hook_of(int ifindex, Side side) {
  bpf_tc_hook hook{};
  hook.sz = sizeof(hook);
  hook.ifindex = ifindex;
  hook.attach_point = side == Side::Egress ? BPF_TC_EGRESS : BPF_TC_INGRESS;
  return hook;
}

bpf_tc_opts our_filter() {
  bpf_tc_opts opts{};
  opts.sz = sizeof(opts);
  opts.handle = kTcHandle;
  opts.priority = kTcPriority;
  return opts;
}

// Filters on one clsact side of a link (RTM_GETTFILTER dump).
std::size_t filter_count(kernel::Netlink& netlink, int ifindex, uint32_t side) {
  kernel::Message message(RTM_GETTFILTER, 0);
  auto* tcm = message.put_header<tcmsg>();
  tcm->tcm_family = AF_UNSPEC;
  tcm->tcm_ifindex = ifindex;
  tcm->tcm_parent = TC_H_MAKE(TC_H_CLSACT, side);
  std::size_t count = 0;
  netlink.dump(message, [&](const nlmsghdr* reply) {
    if (reply->nlmsg_type == RTM_NEWTFILTER) ++count;
  });
  return count;
}

}  // namespace

void tc_attach(int ifindex, int prog_fd, const std::string& ifname, Side side) {
  bpf_tc_hook hook = hook_of(ifindex, side);
  int err;
  {
    Quiet quiet;  // EEXIST is the normal case
    err = bpf_tc_hook_create(&hook);
  }
  if (err && err != -EEXIST) fail(err, fmt::format("creating clsact on {}", ifname));
  bpf_tc_opts opts = our_filter();
  opts.prog_fd = prog_fd;
  opts.flags = BPF_TC_F_REPLACE;
  err = bpf_tc_attach(&hook, &opts);
  if (err) fail(err, fmt::format("attaching EtherIP program to {}", ifname));
}

void tc_detach(int ifindex, bool tidy, Side side) {
  if (ifindex <= 0) return;
  bpf_tc_hook hook = hook_of(ifindex, side);
  bpf_tc_opts opts = our_filter();
  Quiet quiet;
  int err = bpf_tc_detach(&hook, &opts);
  if (err && err != -ENOENT && err != -ENODEV && err != -EINVAL)
    fail(err, fmt::format("detaching EtherIP program from ifindex {}", ifindex));
  if (!tidy) return;
  try {
    kernel::Netlink netlink;
    if (filter_count(netlink, ifindex, TC_H_MIN_INGRESS) == 0 &&
        filter_count(netlink, ifindex, TC_H_MIN_EGRESS) == 0) {
      hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
      bpf_tc_hook_destroy(&hook);
    }
  } catch (const kernel::KernelError&) {
    // The link is gone or the dump failed: leaving an empty clsact is harmless.
  }
}

uint32_t attached_prog_id(int ifindex, Side side) {
  bpf_tc_hook hook = hook_of(ifindex, side);
  bpf_tc_opts opts = our_filter();
  Quiet quiet;
  if (bpf_tc_query(&hook, &opts) != 0) return 0;
  return opts.prog_id;
}

bool program_attached(const std::string& ifname, std::string_view program, Side side) {
  use_libbpf_log();  // inspect() may run without open(): keep queries quiet
  const unsigned ifindex = if_nametoindex(ifname.c_str());
  if (ifindex == 0) return false;
  const uint32_t prog_id = attached_prog_id(static_cast<int>(ifindex), side);
  if (!prog_id) return false;
  Fd prog(bpf_prog_get_fd_by_id(prog_id));
  // Opening a program by id needs CAP_SYS_ADMIN; without it (CAP_NET_ADMIN, CAP_BPF and
  // CAP_PERFMON suffice for everything else) our filter, by its handle and priority, has to
  // do, or every apply would fail its verification.
  if (prog.get() < 0) return errno == EPERM;
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(prog.get(), &info, &len) != 0) return false;
  return std::string_view(info.name, strnlen(info.name, sizeof(info.name))) == program;
}

}  // namespace etherctl::datapath
