#include "ipsec/connection.hpp"

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace etherctl::ipsec {

namespace {

std::string seconds(int s) { return std::to_string(s) + "s"; }

// A traffic selector for protocol 97 (EtherIP) between the two endpoints.
std::string selector(const std::string& address) {
  return address + (address.find(':') != std::string::npos ? "/128[97]" : "/32[97]");
}

std::string read_file(const std::string& file, const std::string& what) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw vici::Error("cannot read the " + what + " " + file);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The connection tree; `for_file`: certificates by path (swanctl reads them), else as data.
vici::Message connection_tree(const ConnectionSpec& spec, bool for_file) {
  using M = vici::Message;
  M local = M::object(), remote = M::object();
  if (spec.uses_psk()) {
    local["auth"] = "psk";
    remote["auth"] = "psk";
  } else {
    local["auth"] = "pubkey";
    remote["auth"] = "pubkey";
  }
  local["id"] = spec.local_id;
  remote["id"] = spec.remote_id;
  if (!spec.uses_psk()) {
    if (for_file) {
      local["certs"] = M::array({spec.certificate});
      remote["cacerts"] = M::array({spec.ca});
    } else {
      local["certs"] = M::array({read_file(spec.certificate, "certificate")});
      remote["cacerts"] = M::array({read_file(spec.ca, "CA certificate")});
    }
  }
  M child = M::object();
  child["mode"] = spec.mode;
  child["policies"] = "no";  // etherctl's own (see the header)
  child["reqid"] = std::to_string(spec.reqid);
  child["local_ts"] = M::array({selector(spec.local)});
  child["remote_ts"] = M::array({selector(spec.remote)});
  child["esp_proposals"] = M::array({spec.esp_proposal});
  child["rekey_time"] = seconds(spec.child_rekey);
  // Large enough for GRO and several CPUs reordering a fast stream.
  child["replay_window"] = "1024";
  child["start_action"] = "start";
  child["dpd_action"] = "restart";
  child["close_action"] = "start";

  M conn = M::object();
  conn["version"] = "2";
  conn["local_addrs"] = M::array({spec.local});
  conn["remote_addrs"] = M::array({spec.remote});
  conn["proposals"] = M::array({spec.ike_proposal});
  conn["rekey_time"] = seconds(spec.ike_rekey);
  conn["dpd_delay"] = seconds(spec.dpd);
  conn["keyingtries"] = "0";  // retry for ever
  conn["mobike"] = "no";
  conn["encap"] = "no";
  conn["local"] = local;
  conn["remote"] = remote;
  conn["children"] = M::object({{spec.tunnel, child}});
  return conn;
}

// swanctl.conf syntax: sections in braces, "key = value", lists comma-separated. Every value is
// quoted: identities may hold spaces and commas (model::parse_ipsec refuses quotes and
// backslashes in them, and the other values are etherctl's own).
void write_section(std::ostringstream& out, const vici::Message& section, int depth) {
  const std::string indent(static_cast<size_t>(depth) * 2, ' ');
  for (const auto& [key, value] : section.items()) {
    if (value.is_object()) {
      out << indent << key << " {\n";
      write_section(out, value, depth + 1);
      out << indent << "}\n";
    } else if (value.is_array()) {
      std::string joined;
      for (const auto& item : value) {
        if (!joined.empty()) joined += ',';  // not `"," + string`: GCC 12 -O3 false -Wrestrict
        joined += item.get<std::string>();
      }
      out << indent << key << " = \"" << joined << "\"\n";
    } else {
      out << indent << key << " = " << value.get<std::string>() << "\n";
    }
  }
}

std::string hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out = "0x";
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

constexpr const char* kOwnerLine = "# owner: ";
constexpr const char* kSpecLine = "# spec: ";

}  // namespace

nlohmann::json ConnectionSpec::attrs() const {
  nlohmann::json a = {{"local", local},
                      {"remote", remote},
                      {"local_id", local_id},
                      {"remote_id", remote_id},
                      {"mode", mode},
                      {"reqid", reqid},
                      {"ike_proposal", ike_proposal},
                      {"esp_proposal", esp_proposal},
                      {"ike_rekey", ike_rekey},
                      {"child_rekey", child_rekey},
                      {"dpd", dpd}};
  if (uses_psk()) {
    a["psk_file"] = psk_file;
    a["psk_fingerprint"] = psk_fingerprint;
  } else {
    a["certificate"] = certificate;
    a["key"] = key;
    a["ca"] = ca;
  }
  return a;
}

ConnectionSpec ConnectionSpec::from_attrs(const std::string& tunnel, const nlohmann::json& a) {
  ConnectionSpec s;
  s.tunnel = tunnel;
  auto str = [&](const char* k) {
    return a.contains(k) && a[k].is_string() ? a[k].get<std::string>() : "";
  };
  auto num = [&](const char* k) {
    return a.contains(k) && a[k].is_number() ? a[k].get<int64_t>() : 0;
  };
  s.local = str("local");
  s.remote = str("remote");
  s.local_id = str("local_id");
  s.remote_id = str("remote_id");
  s.mode = str("mode");
  s.reqid = static_cast<uint32_t>(num("reqid"));
  s.ike_proposal = str("ike_proposal");
  s.esp_proposal = str("esp_proposal");
  s.ike_rekey = static_cast<int>(num("ike_rekey"));
  s.child_rekey = static_cast<int>(num("child_rekey"));
  s.dpd = static_cast<int>(num("dpd"));
  s.psk_file = str("psk_file");
  s.psk_fingerprint = str("psk_fingerprint");
  s.certificate = str("certificate");
  s.key = str("key");
  s.ca = str("ca");
  return s;
}

std::string connection_name(const std::string& tunnel) { return "etherctl-" + tunnel; }
std::string shared_key_id(const std::string& tunnel) { return "ike-" + connection_name(tunnel); }

bool only_the_key_changed(nlohmann::json before, nlohmann::json after) {
  if (before.value("psk_fingerprint", "") == after.value("psk_fingerprint", "")) return false;
  for (auto* attrs : {&before, &after})
    for (const char* key : {"loaded", "psk_file", "psk_fingerprint"}) attrs->erase(key);
  return before == after;
}

vici::Message load_conn_message(const ConnectionSpec& spec) {
  vici::Message message = vici::Message::object();
  message[connection_name(spec.tunnel)] = connection_tree(spec, false);
  return message;
}

std::string render_file(const ConnectionSpec& spec, const std::string& owner,
                        const std::string& psk) {
  std::ostringstream out;
  out << "# strongSwan connection of the EtherIP tunnel \"" << spec.tunnel
      << "\", written by etherctl: do not edit\n"
      << "# (etherctl apply rewrites it from the site file; removing the tunnel's \"ipsec\" "
         "removes it).\n"
      << kOwnerLine << owner << "\n"
      << kSpecLine << spec.attrs().dump() << "\n";
  vici::Message file = vici::Message::object();
  file["connections"] =
      vici::Message::object({{connection_name(spec.tunnel), connection_tree(spec, true)}});
  vici::Message secret = vici::Message::object();
  if (spec.uses_psk()) {
    secret["id-1"] = "\"" + spec.local_id + "\"";
    secret["id-2"] = "\"" + spec.remote_id + "\"";
    secret["secret"] = hex(psk);
    file["secrets"] = vici::Message::object({{shared_key_id(spec.tunnel), secret}});
  }
  // Quote identities in the connection too (they may hold spaces or commas).
  auto& conn = file["connections"][connection_name(spec.tunnel)];
  conn["local"]["id"] = "\"" + spec.local_id + "\"";
  conn["remote"]["id"] = "\"" + spec.remote_id + "\"";
  write_section(out, file, 0);
  return out.str();
}

std::optional<FileHeader> parse_file_header(const std::string& text) {
  std::istringstream in(text);
  FileHeader header;
  bool have_owner = false, have_spec = false;
  for (std::string line; std::getline(in, line) && line.rfind('#', 0) == 0;) {
    if (line.rfind(kOwnerLine, 0) == 0) {
      header.owner = line.substr(std::string(kOwnerLine).size());
      have_owner = true;
    } else if (line.rfind(kSpecLine, 0) == 0) {
      header.attrs =
          nlohmann::json::parse(line.substr(std::string(kSpecLine).size()), nullptr, false);
      have_spec = header.attrs.is_object();
    }
  }
  if (!have_owner || !have_spec) return std::nullopt;
  return header;
}

Settings& Settings::current() {
  static Settings settings = [] {
    Settings s;
    if (const char* uri = std::getenv("ETHERCTL_VICI_URI"); uri && *uri) s.vici_uri = uri;
    if (const char* dir = std::getenv("ETHERCTL_SWANCTL_DIR"); dir && *dir) s.swanctl_dir = dir;
    return s;
  }();
  return settings;
}

}  // namespace etherctl::ipsec
