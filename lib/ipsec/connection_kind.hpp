// Kind "ipsec_connection": a tunnel's strongSwan connection, loaded into charon over VICI and
// kept as a swanctl.conf file for charon's restarts (ipsec::Settings says where).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "ipsec/vici.hpp"
#include "kernel/kind.hpp"

namespace etherctl::ipsec {

const kernel::KindOps& connection_kind_ops();

// The IKE and CHILD SAs of a tunnel's connection as charon reports them (list-sas): for status
// and /metrics. {"established": bool, "ike": {...}, "child": {...}} or {"error": "..."}.
nlohmann::json sa_status(const std::string& tunnel);

// charon's log lines about etherctl's connections, from the moment it is made. apply opens it
// before it loads connections: charon starts negotiating a loaded connection at once, and a
// reason given then (a peer's AUTHENTICATION_FAILED) would be missed by a later subscription.
// Without charon it reads nothing. Never throws.
class NegotiationLog {
 public:
  NegotiationLog();
  ~NegotiationLog();
  NegotiationLog(const NegotiationLog&) = delete;
  NegotiationLog& operator=(const NegotiationLog&) = delete;

  // Reads the lines already there and those that arrive until `until`, giving each to
  // `on_line(tunnel, text)`.
  void read_until(std::chrono::steady_clock::time_point until,
                  const std::function<void(const std::string&, const std::string&)>& on_line);

 private:
  std::unique_ptr<vici::Client> client_;
};

// Waits until every tunnel's connection has an established IKE SA with an installed CHILD_SA,
// at most `timeout`. Returns, for each tunnel that is not up, why (charon's own log line of the
// attempt, e.g. "received AUTHENTICATION_FAILED notify error", read from `log`). A connection
// of which charon holds no SA at all, not even one being negotiated (charon gave up), is
// initiated once: at once when this run did not load it (`loaded_now`), else 2 s into the wait
// (charon starts a connection it has just loaded by itself). Never throws.
std::map<std::string, std::string> await_established(const std::vector<std::string>& tunnels,
                                                     std::chrono::milliseconds timeout,
                                                     NegotiationLog& log,
                                                     const std::set<std::string>& loaded_now);

}  // namespace etherctl::ipsec
