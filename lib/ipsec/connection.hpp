// A tunnel's strongSwan connection: one IKEv2 connection "etherctl-<tunnel>" with one CHILD_SA
// "<tunnel>" for protocol 97 between the two endpoints. charon installs the SAs (with the
// tunnel's reqid) but no policies ("policies = no"): the policies are etherctl's (xfrm_policy
// kind), so that no EtherIP leaves in clear whatever charon does. The same tree is rendered as
// a swanctl.conf file (read by `swanctl --load-all` when charon restarts) and sent over VICI.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "ipsec/vici.hpp"

namespace etherctl::ipsec {

struct ConnectionSpec {
  std::string tunnel;
  std::string local, remote;        // endpoint addresses
  std::string local_id, remote_id;  // IKE identities
  std::string mode = "transport";   // "transport" or "tunnel"
  uint32_t reqid = 0;
  std::string ike_proposal, esp_proposal;
  int ike_rekey = 0, child_rekey = 0, dpd = 0;  // seconds
  // Authentication: a pre-shared key file, or certificate + key + CA (PEM files).
  std::string psk_file;
  std::string certificate, key, ca;
  std::string psk_fingerprint;  // of the key, never the key (see model::psk_fingerprint)

  bool uses_psk() const { return !psk_file.empty(); }
  // The spec as plan attributes (no secret) and back.
  nlohmann::json attrs() const;
  static ConnectionSpec from_attrs(const std::string& tunnel, const nlohmann::json& attrs);
};

// Whether two specs (as attrs) differ in the pre-shared key only. charon sees no change in
// such a connection (the key is loaded apart from it), so etherctl renegotiates it itself;
// every other change replaces the connection in charon, which renegotiates it.
bool only_the_key_changed(nlohmann::json before, nlohmann::json after);

// "etherctl-<tunnel>": the IKE connection; its CHILD_SA is named like the tunnel.
std::string connection_name(const std::string& tunnel);
// Secret ids as swanctl names them: "ike-etherctl-<tunnel>", "private-etherctl-<tunnel>".
std::string shared_key_id(const std::string& tunnel);

// The load-conn argument: { "etherctl-<tunnel>": { ... } }. Certificates are given as their
// PEM data (read from the spec's files), as VICI wants them.
vici::Message load_conn_message(const ConnectionSpec& spec);

// The swanctl.conf file for the tunnel: a header naming its owner and holding the spec (how
// etherctl observes it), the connection (certificates by path) and its secrets section (the
// pre-shared key, hex-encoded; the file is written with mode 0600). `psk` is "" for certificates.
std::string render_file(const ConnectionSpec& spec, const std::string& owner,
                        const std::string& psk);

// The header of a file written by render_file: its owner ("etherctl:<device>") and spec, or
// nullopt when the text is not an etherctl connection file.
struct FileHeader {
  std::string owner;
  nlohmann::json attrs;
};
std::optional<FileHeader> parse_file_header(const std::string& text);

// Where charon is and where its configuration lives. Defaults: the system's charon
// (unix:///var/run/charon.vici) and /etc/swanctl; `ETHERCTL_VICI_URI` and `ETHERCTL_SWANCTL_DIR`
// (or etherctl's --vici-uri and --swanctl-dir) point elsewhere, e.g. at a test's own charon.
struct Settings {
  std::string vici_uri = vici::kDefaultUri;
  std::string swanctl_dir = "/etc/swanctl";
  static Settings& current();  // process-wide; main() and tests set it before any run
  std::string conf_dir() const { return swanctl_dir + "/conf.d"; }
  std::string private_dir() const { return swanctl_dir + "/private"; }
  std::string file_of(const std::string& tunnel) const {
    return conf_dir() + "/" + connection_name(tunnel) + ".conf";
  }
};

}  // namespace etherctl::ipsec
