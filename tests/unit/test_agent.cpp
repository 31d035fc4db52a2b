// The agent's pure parts: the Prometheus exposition and the listen address syntax.
#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <sstream>

#include "agent/http.hpp"
#include "agent/metrics.hpp"

namespace etherctl::agent {
namespace {

TEST(Metrics, ExpositionIsWellFormedAndGroupedByFamily) {
  AgentStats stats;
  stats.reconciles = {5, 1, 2, 0};
  stats.reconcile_reruns = 3;
  stats.changes_applied = 7;
  stats.in_sync = true;
  stats.digest = "sha256:ab";
  const auto members = nlohmann::json::parse(R"([
    {"pool": "web", "member": "10.1.0.21:80", "location": "local", "configured_weight": 2,
     "effective_weight": 2},
    {"pool": "we\"b", "member": "10.1.0.22:80", "location": "remote", "configured_weight": 1,
     "effective_weight": 0}])");
  const auto tunnels = nlohmann::json::parse(R"({"dcx": {"tx_packets": 3, "tx_bytes": 300,
    "rx_packets": 4, "rx_bytes": 400, "rx_fragments": 2, "reassembled": 1,
    "drops": {"wrong_peer": 9, "bad_version": 0}},
    "dcy": {"tx_packets": 0, "tx_bytes": 0, "rx_packets": 0, "rx_bytes": 0, "rx_fragments": 0,
    "reassembled": 0, "drops": {},
    "ipsec": {"established": true, "receive_problem": "no ESP GRO",
              "ike": {"established_seconds": 30, "rekey_seconds": 14000},
              "child": {"installed_seconds": 20, "rekey_seconds": 3500, "bytes_in": 10,
                        "packets_in": 1, "bytes_out": 20, "packets_out": 2},
              "connection_loaded": true}},
    "dcz": {"tx_packets": 0, "tx_bytes": 0, "rx_packets": 0, "rx_bytes": 0, "rx_fragments": 0,
    "reassembled": 0, "drops": {},
    "ipsec": {"established": false, "connection_loaded": false, "xfrm_states": 0,
              "larval_states": 0}}})");
  const std::string text = render_metrics(stats, members, tunnels);

  // Every sample line is NAME{labels} VALUE or NAME VALUE, after its family's TYPE line, and
  // a family's samples are contiguous (Prometheus rejects interleaved families).
  const std::regex sample(R"(^([a-z_]+)(\{([a-z_]+="([^"\\]|\\.)*",?)+\})? [0-9.e+-]+$)");
  std::set<std::string> typed, finished;
  std::string current;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::string family = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_TRUE(typed.insert(family).second) << "family typed twice: " << family;
      if (!current.empty()) finished.insert(current);
      current = family;
      continue;
    }
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, sample)) << line;
    std::string name = m[1];
    EXPECT_TRUE(name.rfind(current, 0) == 0) << name << " outside its family " << current;
  }
  EXPECT_NE(text.find("etherctl_reconciles_total{result=\"lock_held\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("etherctl_reconcile_duration_seconds_count 8\n"), std::string::npos);
  EXPECT_NE(text.find("etherctl_reconcile_reruns_total 3\n"), std::string::npos);
  EXPECT_NE(text.find("etherctl_member_weight{pool=\"we\\\"b\",member=\"10.1.0.22:80\"} 0\n"),
            std::string::npos);
  EXPECT_NE(text.find("etherctl_member_location{pool=\"web\",member=\"10.1.0.21:80\","
                      "location=\"local\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("etherctl_tunnel_packets_total{tunnel=\"dcx\",direction=\"rx\"} 4\n"),
            std::string::npos);
  EXPECT_NE(text.find("etherctl_tunnel_drops_total{tunnel=\"dcx\",reason=\"wrong_peer\"} 9\n"),
            std::string::npos);
  EXPECT_NE(text.find("etherctl_tunnel_ipsec_established{tunnel=\"dcy\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("etherctl_tunnel_ipsec_receive_ready{tunnel=\"dcy\"} 0\n"),
            std::string::npos);
  EXPECT_NE(text.find("etherctl_tunnel_ipsec_sa_rekey_seconds{tunnel=\"dcy\"} 3500\n"),
            std::string::npos);
  EXPECT_NE(text.find("etherctl_tunnel_ipsec_sa_bytes{tunnel=\"dcy\",direction=\"out\"} 20\n"),
            std::string::npos);
  EXPECT_EQ(text.find("etherctl_tunnel_ipsec_established{tunnel=\"dcx\"}"), std::string::npos);
  EXPECT_NE(text.find("etherctl_tunnel_ipsec_connection_loaded{tunnel=\"dcy\"} 1\n"),
            std::string::npos);
  // A pair's standby: no connection here, nothing established, no SA gauges.
  EXPECT_NE(text.find("etherctl_tunnel_ipsec_connection_loaded{tunnel=\"dcz\"} 0\n"),
            std::string::npos);
  EXPECT_NE(text.find("etherctl_tunnel_ipsec_established{tunnel=\"dcz\"} 0\n"), std::string::npos);
  EXPECT_EQ(text.find("etherctl_tunnel_ipsec_sa_age_seconds{tunnel=\"dcz\"}"), std::string::npos);
  EXPECT_NE(text.find("etherctl_in_sync 1\n"), std::string::npos);
}

TEST(ListenAddress, Parses) {
  EXPECT_EQ(parse_listen_address("127.0.0.1:9717").port(), 9717);
  EXPECT_TRUE(parse_listen_address("[::1]:0").address().is_v6());
  EXPECT_EQ(parse_listen_address("localhost:80").address().to_string(), "127.0.0.1");
  EXPECT_THROW(parse_listen_address("127.0.0.1"), std::invalid_argument);
  EXPECT_THROW(parse_listen_address("127.0.0.1:99999"), std::invalid_argument);
  EXPECT_THROW(parse_listen_address("web:80"), std::invalid_argument);
  EXPECT_THROW(parse_listen_address("1.2.3.4:8x"), std::invalid_argument);
}

}  // namespace
}  // namespace etherctl::agent
