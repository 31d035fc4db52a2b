#include "failover/keepalived_kind.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "failover/process.hpp"
#include "kernel/detail.hpp"
#include "kernel/ipvs.hpp"
#include "model/failover.hpp"

namespace etherctl::failover {

namespace {

using kernel::KernelError;

constexpr std::string_view kHeader = "# keepalived configuration of failover group \"";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// FNV-1a, 64 bits: a stable digest of the configuration text for the plan to compare.
std::string digest(const std::string& text) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  return fmt::format("{:016x}", hash);
}

// The group and device of a configuration etherctl wrote (its first line), or false.
bool parse_header(const std::string& text, std::string* group, std::string* device) {
  const std::string first = text.substr(0, text.find('\n'));
  if (first.rfind(kHeader, 0) != 0) return false;
  const size_t group_end = first.find('"', kHeader.size());
  const std::string middle = "\", device \"";
  if (group_end == std::string::npos || first.compare(group_end, middle.size(), middle) != 0) {
    return false;
  }
  const size_t device_start = group_end + middle.size();
  const size_t device_end = first.find('"', device_start);
  if (device_end == std::string::npos) return false;
  *group = first.substr(kHeader.size(), group_end - kHeader.size());
  *device = first.substr(device_start, device_end - device_start);
  return true;
}

plan::Objects observe(const kernel::Snapshot&, const kernel::Ownership& ownership) {
  plan::Objects objects;
  for (const RunningKeepalived& running : keepalived_here()) {
    const std::string text = read_text(running.config_file);
    std::string group, device;
    plan::Object& object = objects.emplace_back();
    object.kind = plan::kKeepalived;
    if (parse_header(text, &group, &device)) {
      object.key = group;
      object.owned = ownership.device.empty() || device == ownership.device;
    } else {
      object.key = running.config_file;  // somebody else's keepalived: never touched
    }
    object.name = object.key;
    object.attrs = {{"config_file", running.config_file},
                    {"config_digest", digest(text)},
                    {"pid", running.pid}};
    if (!running.vrrp_pid_file.empty()) object.attrs["vrrp_pid_file"] = running.vrrp_pid_file;
  }
  return objects;
}

std::string attr(const plan::Object& object, const char* name, std::string_view operation) {
  return kernel::detail::require_string(object, name, operation);
}

void write_config(const plan::Object& desired, const std::string& what) {
  const std::string path = attr(desired, "config_file", "write");
  std::error_code ignored;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ignored);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << attr(desired, "config", "write");
    if (!out.flush()) throw KernelError(EIO, "", what + ": cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    throw KernelError(error, "", what + ": cannot write " + path + ": " + std::strerror(error));
  }
}

void create(kernel::Netlink&, const plan::Object& desired, const kernel::Ownership&) {
  const std::string what = kernel::detail::what("create", desired);
  if (access(kKeepalivedBinary, X_OK) != 0) {
    throw KernelError(ENOENT, "",
                      what + ": " + kKeepalivedBinary +
                          " is missing: failover groups need keepalived (Debian "
                          "package keepalived)");
  }
  write_config(desired, what);
  const KeepalivedFiles files{attr(desired, "config_file", "create"),
                              attr(desired, "pid_file", "create"),
                              attr(desired, "vrrp_pid_file", "create")};
  try {
    start_keepalived(keepalived_argv(kKeepalivedBinary, files), files,
                     attr(desired, "log_file", "create"));
  } catch (const std::runtime_error& e) {
    throw KernelError(EIO, "", what + ": " + e.what());
  }
}

// A new configuration: keepalived reloads it (its state survives a reload; keepalived.hpp).
void modify(kernel::Netlink&, const plan::Object& desired, const plan::Object& observed) {
  const std::string what = kernel::detail::what("modify", desired);
  write_config(desired, what);
  const auto pid = kernel::detail::int_attr(observed, "pid");
  if (!pid) throw KernelError(ESRCH, "", what + ": no keepalived process");
  try {
    reload_keepalived(static_cast<pid_t>(*pid));
  } catch (const std::runtime_error& e) {
    throw KernelError(EIO, "", what + ": " + e.what());
  }
}

// Stops it (it resigns: a priority-0 advert, so the peer takes over at once) and removes its
// configuration, pid files and log.
void remove(kernel::Netlink&, const plan::Object& observed) {
  const auto pid = kernel::detail::int_attr(observed, "pid");
  const std::string vrrp_pid_file =
      kernel::detail::string_attr(observed, "vrrp_pid_file").value_or("");
  if (pid) stop_keepalived(static_cast<pid_t>(*pid), live_pid(vrrp_pid_file));
  const std::string config = kernel::detail::string_attr(observed, "config_file").value_or("");
  if (config.empty()) return;
  const std::filesystem::path dir = std::filesystem::path(config).parent_path();
  for (const char* file : {"keepalived.conf", "keepalived.pid", "vrrp.pid", "keepalived.log"}) {
    std::error_code ignored;
    std::filesystem::remove(dir / file, ignored);
  }
}

}  // namespace

const kernel::KindOps& keepalived_kind_ops() {
  static const kernel::KindOps ops{plan::kKeepalived, observe, create, modify, remove};
  return ops;
}

plan::Object desired_keepalived(const model::Site& site, const model::Device& device,
                                const model::FailoverGroup& group, const FailoverFiles& files) {
  KeepalivedSettings settings;
  settings.group = group.name;
  settings.device = device.name;
  settings.interface = device.ifname_of(group.vlan);
  settings.virtual_router_id = group.virtual_router_id;
  settings.priority = device.failover ? device.failover->priority : 1;
  settings.advert_centiseconds = group.advert_centiseconds;
  settings.preempt = group.preempt;
  settings.preempt_delay_seconds = group.preempt_delay;
  // With pools, a unit that returns takes the role back only once the connections made while
  // it was away reached it through the peer's sync daemon (refreshed by time, ipvs_sync.cpp);
  // preempting sooner resets them (the returning unit has no state for them).
  if (!device.pools.empty()) {
    settings.preempt_delay_seconds =
        std::max(settings.preempt_delay_seconds, kernel::kIpvsSyncSettleSeconds);
  }
  // The links the active role needs besides the VRRP interface: the VLANs its groups join.
  for (const auto& [name, vlan_group] : device.vlan_groups) {
    for (const auto& member : vlan_group.members) {
      auto vlan = device.vlans.find(member);
      if (vlan == device.vlans.end()) continue;  // a tunnel
      const std::string link = vlan->second.ifname();
      if (link != settings.interface &&
          std::find(settings.track_interfaces.begin(), settings.track_interfaces.end(), link) ==
              settings.track_interfaces.end()) {
        settings.track_interfaces.push_back(link);
      }
    }
  }
  if (group.unicast) {
    auto fixed_ipv4 = [&](const model::Device& unit) -> std::string {
      for (const auto& [name, self_ip] : unit.self_ips) {
        if (!self_ip.floating && self_ip.vlan == group.vlan &&
            self_ip.address.address.family == 4) {
          return self_ip.address.address.str();
        }
      }
      return "";
    };
    settings.unicast_source = fixed_ipv4(device);
    if (const model::Device* peer = model::failover_peer(site, device)) {
      settings.unicast_peers.push_back(fixed_ipv4(*peer));
    }
  }
  settings.agent_ready_file = files.ready();
  // No net_namespace: keepalived starts in the namespace of the run that starts it (etherctl
  // --netns enters it first), and a run with --netns and the agent (which entered it once)
  // must render the same file, or every other run would reload keepalived.
  const std::string config = render_keepalived_conf(settings);
  return {plan::kKeepalived,
          group.name,
          group.name,
          group.path,
          {{"config", config},
           {"config_digest", digest(config)},
           {"config_file", files.config()},
           {"pid_file", files.pid()},
           {"vrrp_pid_file", files.vrrp_pid()},
           {"log_file", files.log()}}};
}

plan::Object restorable_keepalived(const plan::Object& observed) {
  plan::Object object = observed;
  const std::string config_file = observed.attrs.value("config_file", "");
  const FailoverFiles files{std::filesystem::path(config_file).parent_path().string()};
  object.attrs["config"] = read_text(config_file);
  object.attrs["pid_file"] = files.pid();
  object.attrs["vrrp_pid_file"] = observed.attrs.value("vrrp_pid_file", files.vrrp_pid());
  object.attrs["log_file"] = files.log();
  object.attrs.erase("pid");  // the process's, not the configuration's
  return object;
}

}  // namespace etherctl::failover
