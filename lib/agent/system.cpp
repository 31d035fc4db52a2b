#include "agent/system.hpp"

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <system_error>

#ifndef CAP_BPF
#define CAP_BPF 39  // Linux 5.8; older headers lack the name
#endif

namespace etherctl::agent {

void notify(const std::string& state) { sd_notify(0, state.c_str()); }

uint64_t watchdog_usec() {
  uint64_t usec = 0;
  return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}

std::vector<int> kept_capabilities(bool failover) {
  std::vector<int> kept = {CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF};
  if (failover) kept.insert(kept.end(), {CAP_NET_RAW, CAP_SYS_NICE, CAP_IPC_LOCK});
  return kept;
}

namespace {

int last_capability() {
  std::ifstream in("/proc/sys/kernel/cap_last_cap");
  int last = CAP_LAST_CAP;
  in >> last;
  return last;
}

const char* capability_name(int cap) {
  switch (cap) {
    case CAP_NET_ADMIN:
      return "cap_net_admin";
    case CAP_SYS_ADMIN:
      return "cap_sys_admin";
    case CAP_BPF:
      return "cap_bpf";
    case CAP_NET_RAW:
      return "cap_net_raw";
    case CAP_SYS_NICE:
      return "cap_sys_nice";
    case CAP_IPC_LOCK:
      return "cap_ipc_lock";
  }
  return "?";
}

}  // namespace

std::vector<std::string> drop_capabilities(bool failover) {
  const auto kept = kept_capabilities(failover);
  auto keep = [&](int cap) { return std::find(kept.begin(), kept.end(), cap) != kept.end(); };
  // The bounding set first: dropping from it needs CAP_SETPCAP, which goes next.
  for (int cap = 0; cap <= last_capability(); ++cap) {
    if (keep(cap)) continue;
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
      throw std::system_error(errno, std::generic_category(), "PR_CAPBSET_DROP");
    }
  }
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &header, data) != 0) {
    throw std::system_error(errno, std::generic_category(), "capget");
  }
  __user_cap_data_struct wanted[2] = {};
  std::vector<std::string> held;
  for (int cap : kept) {
    const unsigned word = static_cast<unsigned>(cap) / 32;
    const uint32_t bit = 1U << (static_cast<unsigned>(cap) % 32);
    if (!(data[word].permitted & bit)) continue;  // never had it: nothing to keep
    wanted[word].permitted |= bit;
    wanted[word].effective |= bit;
    held.emplace_back(capability_name(cap));
  }
  if (syscall(SYS_capset, &header, wanted) != 0) {
    throw std::system_error(errno, std::generic_category(), "capset");
  }
  // Keep them only in this process: no exec'd program (there is none) could regain more.
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  return held;
}

}  // namespace etherctl::agent
