#include "failover/keepalived.hpp"

#include <fmt/format.h>

#include <stdexcept>

namespace etherctl::failover {

namespace {

// keepalived splits configuration lines on whitespace and treats '#' and '!' as comments and
// '{' '}' '"' as syntax: a value containing any of them would change the meaning of the file.
void check_token(const std::string& value, const char* setting) {
  if (value.empty()) throw std::invalid_argument(fmt::format("keepalived: {} is empty", setting));
  for (unsigned char c : value) {
    if (c <= ' ' || c == 0x7f || c == '"' || c == '{' || c == '}' || c == '#' || c == '!' ||
        c == '\\') {
      throw std::invalid_argument(fmt::format(
          "keepalived: {} \"{}\" contains a character keepalived's configuration syntax cannot "
          "carry (whitespace, quotes, braces, '#', '!', '\\\\' or a control character)",
          setting, value));
    }
  }
}

void check_range(int value, int low, int high, const char* setting) {
  if (value < low || value > high) {
    throw std::invalid_argument(
        fmt::format("keepalived: {} {} is out of range {}..{}", setting, value, low, high));
  }
}

// 10 -> "0.1", 125 -> "1.25", 300 -> "3": keepalived reads decimal seconds.
std::string seconds_text(int centiseconds) {
  if (centiseconds % 100 == 0) return std::to_string(centiseconds / 100);
  if (centiseconds % 10 == 0)
    return fmt::format("{}.{}", centiseconds / 100, centiseconds % 100 / 10);
  return fmt::format("{}.{:02}", centiseconds / 100, centiseconds % 100);
}

}  // namespace

std::string marker_address(int virtual_router_id) {
  return "169.254.0." + std::to_string(virtual_router_id);
}

std::string render_keepalived_conf(const KeepalivedSettings& s) {
  check_token(s.group, "group name");
  check_token(s.device, "device name");
  check_token(s.interface, "interface");
  check_token(s.agent_ready_file, "agent ready file path");
  check_range(s.virtual_router_id, 1, 255, "virtual_router_id");
  check_range(s.priority, 1, 254, "priority");
  check_range(s.advert_centiseconds, kMinAdvertCentiseconds, kMaxAdvertCentiseconds,
              "advert interval (centiseconds)");
  check_range(s.preempt_delay_seconds, 0, 1000, "preempt_delay");
  for (const auto& link : s.track_interfaces) check_token(link, "tracked interface");
  for (const auto& peer : s.unicast_peers) check_token(peer, "unicast peer");
  if (!s.unicast_source.empty()) check_token(s.unicast_source, "unicast source");
  if (!s.netns.empty()) check_token(s.netns, "network namespace");

  std::string out = fmt::format(
      "# keepalived configuration of failover group \"{}\", device \"{}\".\n"
      "# Written by etherctl from the site file: edits are overwritten. keepalived runs the\n"
      "# VRRP election only; etherctl moves the floating addresses and gates the ports on the\n"
      "# transitions it reads from the notify FIFO.\n",
      s.group, s.device);
  // Top level only: inside global_defs keepalived ignores it (with a warning) and stays in
  // whatever namespace it was started in.
  if (!s.netns.empty()) out += fmt::format("net_namespace {}\n", s.netns);
  out += fmt::format(
      "global_defs {{\n"
      "  router_id etherctl-{}\n"
      "  vrrp_priority {}\n"
      "  vrrp_no_swap\n"
      "  enable_script_security\n"
      "  script_user root\n"
      "}}\n",
      s.device, kKeepalivedNice);
  out += fmt::format(
      "track_file {} {{\n"
      "  file \"{}\"\n"
      "  weight 0\n"
      "  init_file 1\n"
      "}}\n",
      kAgentTrackFile, s.agent_ready_file);
  out += fmt::format(
      "vrrp_instance {} {{\n"
      "  state BACKUP\n"
      "  interface {}\n"
      "  virtual_router_id {}\n"
      "  priority {}\n"
      "  advert_int {}\n"
      "  version 3\n",
      s.group, s.interface, s.virtual_router_id, s.priority, seconds_text(s.advert_centiseconds));
  if (!s.preempt) {
    out += "  nopreempt\n";
  } else if (s.preempt_delay_seconds > 0) {
    out += fmt::format("  preempt_delay {}\n", s.preempt_delay_seconds);
  }
  out += fmt::format(
      "  track_file {{\n"
      "    {}\n"
      "  }}\n",
      kAgentTrackFile);
  if (!s.track_interfaces.empty()) {
    out += "  track_interface {\n";
    for (const auto& link : s.track_interfaces) out += fmt::format("    {}\n", link);
    out += "  }\n";
  }
  if (!s.unicast_peers.empty()) {
    if (!s.unicast_source.empty()) out += fmt::format("  unicast_src_ip {}\n", s.unicast_source);
    out += "  unicast_peer {\n";
    for (const auto& peer : s.unicast_peers) out += fmt::format("    {}\n", peer);
    out += "  }\n";
  }
  out += fmt::format(
      "  virtual_ipaddress {{\n"
      "    {}/32 dev lo scope host\n"
      "  }}\n"
      "}}\n",
      marker_address(s.virtual_router_id));
  return out;
}

std::vector<std::string> keepalived_argv(const std::string& binary, const KeepalivedFiles& files) {
  return {binary,       "--vrrp", "--dont-fork",  "--log-console", "--no-syslog",      "--use-file",
          files.config, "--pid",  files.pid_file, "--vrrp_pid",    files.vrrp_pid_file};
}

}  // namespace etherctl::failover
