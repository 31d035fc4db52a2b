// Site file loading: JSON text -> typed Site, with structural checks (types, ranges, unknown
// keys, names). Cross-object rules (references, duplicates) live in validate.cpp.
#include "model/site.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "model/failover.hpp"
#include "model/fields.hpp"
#include "model/pools.hpp"
#include "model/validate.hpp"

namespace etherctl::model {

namespace {

using nlohmann::json;

constexpr size_t kMaxFileBytes = size_t{16} * 1024 * 1024;
constexpr int kMaxDepth = 32;
const std::vector<std::string> kModes = {"transparent", "translucent", "opaque", "virtual-wire"};

// A SAX pass over the text that reports duplicate keys (which nlohmann would silently merge)
// and excessive nesting with a pointer, and records a syntax error. Linear in the input, unlike
// nlohmann's callback parser, which rescans a parent object each time a child object ends.
class StructureChecker : public nlohmann::json_sax<json> {
 public:
  explicit StructureChecker(Problems& problems) : problems_(problems) {}

  bool null() override { return value(); }
  bool boolean(bool) override { return value(); }
  bool number_integer(number_integer_t) override { return value(); }
  bool number_unsigned(number_unsigned_t) override { return value(); }
  bool number_float(number_float_t, const string_t&) override { return value(); }
  bool string(string_t&) override { return value(); }
  bool binary(binary_t&) override { return value(); }
  bool start_object(std::size_t) override { return open(false); }
  bool start_array(std::size_t) override { return open(true); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }
  bool key(string_t& key) override {
    auto& top = stack_.back();
    top.key = key;
    if (!top.keys.insert(key).second) {
      problems_.push_back({pointer(), "duplicate key \"" + key + "\""});
    }
    return true;
  }
  // Syntax errors, and numbers out of range (out_of_range.406: "1e400"), which parse() would
  // throw as well.
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& error) override {
    const auto* syntax = dynamic_cast<const json::parse_error*>(&error);
    error_.emplace(SyntaxError{syntax ? syntax->byte : position, error.what()});
    return false;
  }

  struct SyntaxError {
    size_t byte;  // one past the offending byte, counted from 1
    std::string what;
  };
  // The error met, if any.
  const std::optional<SyntaxError>& error() const { return error_; }

 private:
  struct Level {
    bool is_array;
    int index;
    std::string key;
    std::set<std::string> keys;
  };
  bool value() {
    if (!stack_.empty() && stack_.back().is_array) ++stack_.back().index;
    return true;
  }
  bool open(bool is_array) {
    value();
    if (stack_.size() > static_cast<size_t>(kMaxDepth) && !too_deep_) {
      too_deep_ = true;
      problems_.push_back(
          {pointer(), "nesting is deeper than " + std::to_string(kMaxDepth) + " levels"});
    }
    stack_.push_back({is_array, -1, "", {}});
    return true;
  }
  bool close() {
    stack_.pop_back();
    return true;
  }
  std::string pointer() const {
    std::string p;
    for (const auto& level : stack_) {
      if (level.is_array) {
        if (level.index >= 0) p = pointer_append(p, std::to_string(level.index));
      } else if (!level.key.empty()) {
        p = pointer_append(p, level.key);
      }
    }
    return p;
  }
  std::vector<Level> stack_;
  Problems& problems_;
  bool too_deep_ = false;
  std::optional<SyntaxError> error_;
};

// The text with every byte that is not part of a well-formed UTF-8 sequence written as "\xNN":
// nlohmann's syntax errors quote the bytes they stopped at, and problems must be valid UTF-8
// (they are printed as JSON, which cannot carry anything else).
std::string valid_utf8(const std::string& text) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
    unsigned char c = byte(i);
    size_t length = c < 0x80             ? 1
                    : (c & 0xe0) == 0xc0 ? 2
                    : (c & 0xf0) == 0xe0 ? 3
                    : (c & 0xf8) == 0xf0 ? 4
                                         : 0;
    bool ok = length > 0 && i + length <= text.size();
    for (size_t k = 1; ok && k < length; ++k) ok = (byte(i + k) & 0xc0) == 0x80;
    if (ok && length > 1) {
      // no overlong forms, no surrogates, nothing beyond U+10FFFF
      uint32_t cp = c & (0x7f >> length);
      for (size_t k = 1; k < length; ++k) cp = (cp << 6) | (byte(i + k) & 0x3f);
      const uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
      ok = cp >= smallest[length] && cp <= 0x10ffff && (cp < 0xd800 || cp > 0xdfff);
    }
    if (!ok) {
      static const char* hex = "0123456789ABCDEF";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
      ++i;
      continue;
    }
    out.append(text, i, length);
    i += length;
  }
  return out;
}

std::string syntax_message(const std::string& text, size_t byte, std::string reason) {
  // Count lines and columns ourselves: the position is a byte offset, one past the error.
  size_t offset = byte == 0 ? 0 : byte - 1;
  size_t line = 1, column = 1;
  for (size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  // "[json.exception.parse_error.101] parse error at line 1, column 2: syntax error ...",
  // "[json.exception.out_of_range.406] number overflow parsing '1e400'"
  auto bracket = reason.find("] ");
  if (reason.rfind("[json.exception.", 0) == 0 && bracket != std::string::npos) {
    reason = reason.substr(bracket + 2);
  }
  auto colon = reason.find(": ");
  if (reason.rfind("parse error", 0) == 0 && colon != std::string::npos) {
    reason = reason.substr(colon + 2);
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(column) + ": " +
         valid_utf8(reason);
}

std::optional<int> parse_mtu(Fields& fields) {
  auto mtu = fields.integer("mtu", false, 68, 65535);
  return mtu ? std::optional<int>(static_cast<int>(*mtu)) : std::nullopt;
}

void check_name(const std::string& name, const std::string& path, const std::string& what,
                Problems& problems, size_t max_bytes = 15) {
  std::string reason = interface_name_problem(name, max_bytes);
  if (!reason.empty()) problems.push_back({path, what + " \"" + name + "\" " + reason});
}

Vlan parse_vlan(const std::string& name, const json& value, const std::string& path,
                Problems& problems) {
  Vlan vlan{name, path, "", std::nullopt, std::nullopt};
  Fields fields(value, path, problems, {"interface", "tag", "mtu"});
  if (!fields.ok()) return vlan;
  if (auto interface = fields.string("interface", true)) {
    vlan.interface = *interface;
    check_name(vlan.interface, fields.path_of("interface"), "interface name", problems);
  }
  if (auto tag = fields.integer("tag", false, 1, 4094)) {
    vlan.tag = static_cast<int>(*tag);
  } else if (fields.has("tag")) {
    vlan.tag = 0;  // invalid (reported), but still a tagged VLAN: no cascade of adoption errors
  }
  vlan.mtu = parse_mtu(fields);
  // A tagged VLAN becomes an interface named after the VLAN.
  if (fields.has("tag")) check_name(name, path, "VLAN name (the interface name)", problems);
  return vlan;
}

VlanGroup parse_vlan_group(const std::string& name, const json& value, const std::string& path,
                           Problems& problems) {
  VlanGroup group{name, path, {}, "transparent", std::nullopt};
  check_name(name, path, "VLAN group name (the bridge's interface name)", problems);
  Fields fields(value, path, problems, {"members", "mode", "mtu"});
  if (!fields.ok()) return group;
  if (const auto* members = fields.array("members", true)) {
    for (size_t i = 0; i < members->size(); ++i) {
      const auto& member = (*members)[i];
      std::string member_path = pointer_append(fields.path_of("members"), std::to_string(i));
      if (!member.is_string()) {
        problems.push_back({member_path, "must be a VLAN or tunnel name (a string), not " +
                                             json_type_name(member)});
        continue;
      }
      group.members.push_back(member.get<std::string>());
    }
  }
  if (auto mode = fields.string("mode", false)) {
    if (*mode == "transparent") {
      group.mode = *mode;
    } else if (std::find(kModes.begin(), kModes.end(), *mode) != kModes.end()) {
      problems.push_back({fields.path_of("mode"),
                          "mode \"" + *mode +
                              "\" is not supported by etherctl: only \"transparent\" (frames "
                              "bridged unchanged) is implemented"});
    } else {
      std::string suggestion = closest_match(*mode, kModes);
      problems.push_back({fields.path_of("mode"),
                          "unknown mode \"" + *mode + "\"" +
                              (suggestion.empty() ? std::string(" (use \"transparent\")")
                                                  : "; did you mean \"" + suggestion + "\"?")});
    }
  }
  group.mtu = parse_mtu(fields);
  return group;
}

std::optional<IpPrefix> parse_prefix(Fields& fields, const std::string& key) {
  auto text = fields.string(key, true);
  if (!text) return std::nullopt;
  std::string error;
  auto prefix = IpPrefix::parse(*text, &error);
  if (!prefix) fields.problem(key, error);
  return prefix;
}

std::optional<IpAddress> parse_address(Fields& fields, const std::string& key, bool required) {
  auto text = fields.string(key, required);
  if (!text) return std::nullopt;
  auto address = IpAddress::parse(*text);
  if (!address) fields.problem(key, "\"" + *text + "\" is not an IPv4 or IPv6 address");
  return address;
}

SelfIp parse_self_ip(const std::string& name, const json& value, const std::string& path,
                     Problems& problems) {
  SelfIp self_ip{name, path, {}, "", false};
  Fields fields(value, path, problems, {"address", "vlan", "floating"});
  if (!fields.ok()) return self_ip;
  if (auto prefix = parse_prefix(fields, "address")) self_ip.address = *prefix;
  if (auto vlan = fields.string("vlan", true)) {
    self_ip.vlan = *vlan;
    if (vlan->empty()) fields.problem("vlan", "must name a VLAN or VLAN group, not be empty");
  }
  self_ip.floating = fields.boolean("floating").value_or(false);
  return self_ip;
}

Route parse_route(const std::string& name, const json& value, const std::string& path,
                  Problems& problems) {
  Route route{name, path, {}, std::nullopt, std::nullopt};
  Fields fields(value, path, problems, {"destination", "gateway", "vlan"});
  if (!fields.ok()) return route;
  if (auto destination = parse_prefix(fields, "destination")) {
    route.destination = *destination;
    if (!(destination->network() == *destination)) {
      fields.problem("destination", "\"" + destination->str() +
                                        "\" has host bits set; did you mean \"" +
                                        destination->network().str() + "\"?");
    }
  }
  route.gateway = parse_address(fields, "gateway", false);
  route.vlan = fields.string("vlan", false);
  if (fields.ok() && !fields.has("gateway") && !fields.has("vlan")) {
    problems.push_back({path, "a route needs \"gateway\", \"vlan\" or both"});
  }
  return route;
}

template <typename T, typename ParseOne>
void parse_map(Fields& parent, const std::string& key, std::map<std::string, T>& out,
               Problems& problems, ParseOne parse_one) {
  const json* objects = parent.object(key, false);
  if (!objects) return;
  for (const auto& [name, value] : objects->items()) {
    std::string path = pointer_append(parent.path_of(key), name);
    if (name.empty()) {
      problems.push_back({path, "names must not be empty"});
      continue;
    }
    out.emplace(name, parse_one(name, value, path, problems));
  }
}

Device parse_device(const std::string& name, const json& value, const std::string& path,
                    Problems& problems) {
  Device device{name, path, {}, {}, {}, {}, {}, std::nullopt};
  Fields fields(value, path, problems,
                {"vlans", "vlan_groups", "self_ips", "routes", "pools", "failover"});
  if (!fields.ok()) return device;
  device.failover = parse_device_failover(fields, problems);
  parse_map(fields, "vlans", device.vlans, problems, parse_vlan);
  parse_map(fields, "vlan_groups", device.vlan_groups, problems, parse_vlan_group);
  parse_map(fields, "self_ips", device.self_ips, problems, parse_self_ip);
  parse_map(fields, "routes", device.routes, problems, parse_route);
  parse_map(fields, "pools", device.pools, problems, parse_pool);
  return device;
}

// "198.51.100.1" (a device's self IP), or {"address": "203.0.113.7", "managed": false} (a
// peer that etherctl does not manage; "managed": true is the same as the string).
std::optional<TunnelEndpoint> parse_tunnel_endpoint(const json& value, const std::string& path,
                                                    Problems& problems) {
  TunnelEndpoint endpoint;
  std::optional<std::string> text;
  std::string address_path = path;
  if (value.is_string()) {
    text = value.get<std::string>();
  } else if (value.is_object()) {
    const size_t known_problems = problems.size();
    Fields fields(value, path, problems, {"address", "managed"});
    if (!fields.ok()) return std::nullopt;
    text = fields.string("address", true);
    endpoint.managed = fields.boolean("managed").value_or(true);
    address_path = fields.path_of("address");
    // A misspelt key ("manged") would make a peer look like an unknown device: one problem.
    if (problems.size() != known_problems) return std::nullopt;
  } else {
    problems.push_back({path,
                        "must be the device's endpoint address (a string) or an object "
                        "{\"address\": ..., \"managed\": false} for a peer etherctl does not "
                        "manage, not " +
                            json_type_name(value)});
  }
  if (!text) return std::nullopt;
  auto address = IpAddress::parse(*text);
  if (!address) {
    problems.push_back({address_path, "\"" + *text + "\" is not an IPv4 or IPv6 address"});
    return std::nullopt;
  }
  endpoint.address = *address;
  return endpoint;
}

Tunnel parse_tunnel(const std::string& name, const json& value, const std::string& path,
                    Problems& problems) {
  Tunnel tunnel{name, path, "etherip", {}, std::nullopt, false, false, true, std::nullopt};
  // The bridge port gets the tunnel's name; its datapath peer is "eip-<name>" (15 bytes max).
  check_name(name, path, "tunnel name (the interface name)", problems, 11);
  Fields fields(value, path, problems,
                {"profile", "endpoints", "mtu", "accept_reversed_header", "fast_path",
                 "clamp_tcp_mss", "ipsec"});
  if (!fields.ok()) return tunnel;
  if (auto profile = fields.string("profile", true)) {
    if (*profile != "etherip") {
      fields.problem("profile", "unknown tunnel profile \"" + *profile +
                                    "\" (etherctl supports \"etherip\", RFC 3378)");
    }
    tunnel.profile = *profile;
  }
  if (const json* endpoints = fields.object("endpoints", true)) {
    if (endpoints->size() != 2) {
      fields.problem("endpoints",
                     "an EtherIP tunnel needs exactly two endpoints (one per device), not " +
                         std::to_string(endpoints->size()));
    }
    for (const auto& [device, value] : endpoints->items()) {
      std::string endpoint_path = pointer_append(fields.path_of("endpoints"), device);
      if (auto endpoint = parse_tunnel_endpoint(value, endpoint_path, problems)) {
        tunnel.endpoints.emplace(device, *endpoint);
      }
    }
  }
  tunnel.mtu = parse_mtu(fields);
  if (tunnel.mtu && *tunnel.mtu > kMaxTunnelMtu) {
    fields.problem("mtu", std::to_string(*tunnel.mtu) + " is above " +
                              std::to_string(kMaxTunnelMtu) +
                              ", the largest tunnel MTU (the EtherIP datapath reassembles outer "
                              "datagrams of up to 9240 bytes: a 9216-byte packet in a "
                              "double-tagged Ethernet frame plus the EtherIP header)");
    tunnel.mtu.reset();
  }
  tunnel.accept_reversed_header = fields.boolean("accept_reversed_header").value_or(false);
  tunnel.fast_path = fields.boolean("fast_path").value_or(false);
  tunnel.clamp_tcp_mss = fields.boolean("clamp_tcp_mss").value_or(true);
  tunnel.ipsec = parse_ipsec(fields, problems);
  if (tunnel.ipsec && tunnel.fast_path) {
    fields.problem("fast_path",
                   "the fast path sends outer packets straight out of the underlay, past IPsec "
                   "(xfrm): it cannot be combined with \"ipsec\"");
  }
  return tunnel;
}

}  // namespace

std::string interface_name_problem(const std::string& name, size_t max_bytes) {
  if (name.empty()) return "is empty";
  if (name.size() > max_bytes) {
    return "is " + std::to_string(name.size()) + " bytes long; interface names allow at most " +
           std::to_string(max_bytes);
  }
  if (name == "." || name == "..") return "is not allowed as an interface name";
  for (unsigned char c : name) {
    if (c == '/' || c == ':' || std::isspace(c) || c < 0x20 || c == 0x7f) {
      return "contains a character not allowed in interface names ('/', ':', whitespace or "
             "control characters)";
    }
  }
  return "";
}

LoadResult load_site(const std::string& text) {
  LoadResult result;
  if (text.size() > kMaxFileBytes) {
    result.problems.push_back({"", "the file is " + std::to_string(text.size()) +
                                       " bytes; site files are limited to " +
                                       std::to_string(kMaxFileBytes) + " bytes"});
    return result;
  }
  StructureChecker checker(result.problems);
  json::sax_parse(text, &checker);
  if (checker.error()) {
    result.problems.push_back(
        {"", syntax_message(text, checker.error()->byte, checker.error()->what)});
    return result;
  }
  if (!result.problems.empty()) return result;  // duplicate keys or nesting: nothing reliable
  json document = json::parse(text);            // well-formed: checked above

  Site site;
  Problems& problems = result.problems;
  Fields top(document, "", problems,
             {"etherctl", "devices", "tunnels", "failover_groups", "$schema", "description"});
  if (!top.ok()) return result;
  if (auto version = top.integer("etherctl", true, 0, 1000000)) {
    if (*version != kSchemaVersion) {
      top.problem("etherctl", "schema version " + std::to_string(*version) +
                                  " is not supported; this etherctl reads version " +
                                  std::to_string(kSchemaVersion));
    }
  }
  top.string("$schema", false);
  top.string("description", false);
  parse_map(top, "devices", site.devices, problems, parse_device);
  if (top.ok() && !top.has("devices")) {
    problems.push_back({"", "missing required key \"devices\""});
  }
  parse_map(top, "tunnels", site.tunnels, problems, parse_tunnel);
  parse_map(top, "failover_groups", site.failover_groups, problems, parse_failover_group);
  validate(site, problems);
  if (problems.empty()) result.site = std::move(site);
  return result;
}

LoadResult load_site_file(const std::string& file_name) {
  std::ifstream in(file_name, std::ios::binary);
  if (!in) {
    LoadResult result;
    result.problems.push_back(
        {"", "cannot read " + valid_utf8(file_name) + ": " + std::strerror(errno)});
    return result;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return load_site(text.str());
}

const Device* select_device(const Site& site, const std::optional<std::string>& requested,
                            const std::string& hostname, std::string* error) {
  auto list = [&] {
    std::string names;
    for (const auto& [name, device] : site.devices) names += (names.empty() ? "" : ", ") + name;
    return names;
  };
  if (requested) {
    auto it = site.devices.find(*requested);
    if (it != site.devices.end()) return &it->second;
    *error = "device \"" + *requested + "\" is not in the site file (devices: " + list() + ")";
    return nullptr;
  }
  if (site.devices.size() == 1) return &site.devices.begin()->second;
  auto it = site.devices.find(hostname);
  if (it != site.devices.end()) return &it->second;
  *error = "the site file has several devices and none is named like this host (\"" + hostname +
           "\"); choose one with --device (devices: " + list() + ")";
  return nullptr;
}

}  // namespace etherctl::model
