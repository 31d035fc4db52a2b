#include "datapath/support.hpp"

#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <linux/capability.h>
#include <net/if.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "datapath/types.hpp"

namespace etherctl::datapath {

std::string errno_text(int error) { return std::strerror(error < 0 ? -error : error); }

bool has_effective_capability(int cap) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (syscall(SYS_capget, &header, data) != 0) return false;
  const auto index = static_cast<unsigned>(cap);
  return (data[index / 32].effective & (1U << (index % 32))) != 0;
}

[[noreturn]] void fail(int error, const std::string& what) {
  if (error < 0) error = -error;
  throw DatapathError(error, fmt::format("{}: {}", what, errno_text(error)));
}

int ifindex_or_zero(const std::string& name) {
  return static_cast<int>(::if_nametoindex(name.c_str()));
}

int ifindex_of(const std::string& name) {
  int index = ifindex_or_zero(name);
  if (index == 0) fail(errno ? errno : ENODEV, fmt::format("interface {}", name));
  return index;
}

std::string if_name(int ifindex) {
  char name[IF_NAMESIZE] = {};
  if (ifindex > 0 && ::if_indextoname(static_cast<unsigned>(ifindex), name)) return name;
  return {};
}

namespace {

thread_local bool libbpf_quiet = false;

int libbpf_print(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG || libbpf_quiet) return 0;
  return std::vfprintf(stderr, format, args);
}

}  // namespace

void use_libbpf_log() { libbpf_set_print(libbpf_print); }

Quiet::Quiet() { libbpf_quiet = true; }
Quiet::~Quiet() { libbpf_quiet = false; }

}  // namespace etherctl::datapath
