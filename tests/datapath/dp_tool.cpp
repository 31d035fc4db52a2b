// Test helper: drives the datapath loader from shell/Python tests, in the caller's network
// namespace (run it under `ip netns exec`).
//   dp_tool apply NAME LOCAL REMOTE UNDERLAY[,UNDERLAY...] [--accept-reversed]
//   dp_tool remove NAME | remove-all | list | counters NAME | pin-dir
#include <fmt/format.h>

#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "datapath/datapath.hpp"
#include "datapath/pins.hpp"

using etherctl::datapath::Counters;
using etherctl::datapath::Datapath;
using etherctl::datapath::Drop;

namespace {

nlohmann::json to_json(const Counters& c) {
  nlohmann::json drops = nlohmann::json::object();
  for (std::size_t i = 0; i < etherctl::datapath::kDropReasons; ++i)
    drops[std::string(etherctl::datapath::drop_name(static_cast<Drop>(i)))] = c.drops[i];
  return {{"rx_packets", c.rx_packets},
          {"rx_bytes", c.rx_bytes},
          {"tx_packets", c.tx_packets},
          {"tx_bytes", c.tx_bytes},
          {"rx_fragments", c.rx_fragments},
          {"reassembled", c.reassembled},
          {"drops", drops}};
}

int usage() {
  std::cerr << "usage: dp_tool apply NAME LOCAL REMOTE UNDERLAY[,...] [--accept-reversed] "
               "[--fast-path] [--clamp-mss] [--port-encap]\n"
               "       dp_tool remove NAME | remove-all | list | counters NAME | pin-dir | gc\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  std::string cmd = argv[1];
  try {
    Datapath dp = Datapath::open();
    if (cmd == "apply" && argc >= 6) {
      etherctl::datapath::TunnelSpec spec;
      spec.name = argv[2];
      spec.local = argv[3];
      spec.remote = argv[4];
      std::stringstream list(argv[5]);
      for (std::string u; std::getline(list, u, ',');) spec.underlay.push_back(u);
      for (int i = 6; i < argc; ++i) {
        if (std::strcmp(argv[i], "--accept-reversed") == 0) spec.accept_reversed = true;
        if (std::strcmp(argv[i], "--fast-path") == 0) spec.fast_path = true;
        if (std::strcmp(argv[i], "--clamp-mss") == 0) spec.clamp_tcp_mss = true;
        if (std::strcmp(argv[i], "--port-encap") == 0) spec.port_encap = true;
      }
      dp.apply(spec);
    } else if (cmd == "remove" && argc == 3) {
      dp.remove(argv[2]);
    } else if (cmd == "remove-all") {
      dp.remove_all();
    } else if (cmd == "list") {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& t : dp.tunnels())
        out.push_back({{"name", t.name},
                       {"local", t.local},
                       {"remote", t.remote},
                       {"underlay", t.underlay},
                       {"accept_reversed", t.accept_reversed},
                       {"fast_path", t.fast_path},
                       {"clamp_tcp_mss", t.clamp_tcp_mss}});
      std::cout << out.dump() << '\n';
    } else if (cmd == "counters" && argc == 3) {
      if (std::string(argv[2]) == "-") {
        std::cout << to_json(dp.unattributed()).dump() << '\n';
      } else {
        auto c = dp.counters(argv[2]);
        if (!c) {
          std::cerr << "no tunnel " << argv[2] << '\n';
          return 1;
        }
        std::cout << to_json(*c).dump() << '\n';
      }
    } else if (cmd == "gc") {
      etherctl::datapath::collect_orphaned_pins();
    } else if (cmd == "pin-dir") {
      std::cout << dp.pin_dir() << '\n';
    } else {
      return usage();
    }
  } catch (const std::exception& e) {
    std::cerr << "dp_tool: " << e.what() << '\n';
    return 1;
  }
  return 0;
}
