// Kind "ipsec_connection": a tunnel's strongSwan connection, loaded into charon over VICI and
// kept as a swanctl.conf file for charon's restarts (ipsec::Settings says where).
#pragma once

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernel/kind.hpp"

namespace etherctl::ipsec {

const kernel::KindOps& connection_kind_ops();

// The IKE and CHILD SAs of a tunnel's connection as charon reports them (list-sas): for status
// and /metrics. {"established": bool, "ike": {...}, "child": {...}} or {"error": "..."}.
nlohmann::json sa_status(const std::string& tunnel);

// Waits until every tunnel's connection has an established IKE SA with an installed CHILD_SA,
// at most `timeout`. Returns, for each tunnel that is not up, why (charon's own log line of the
// attempt, e.g. "received AUTHENTICATION_FAILED notify error"). A connection of which charon
// holds no SA at all, not even one being negotiated, 2 s into the wait (charon gave up), is
// initiated once. Never throws.
std::map<std::string, std::string> await_established(const std::vector<std::string>& tunnels,
                                                     std::chrono::milliseconds timeout);

}  // namespace etherctl::ipsec
