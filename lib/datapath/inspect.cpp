// Read-only observation of the namespace's datapath: what `etherctl status`, observe and repair
// see, without loading programs.
#include <filesystem>

#include "datapath/datapath.hpp"
#include "datapath/entries.hpp"
#include "datapath/host.hpp"
#include "datapath/pins.hpp"
#include "datapath/tc.hpp"

namespace etherctl::datapath {

std::vector<TunnelStatus> inspect(const Options& options) {
  auto maps = shared_maps(pin_dir_for(options.bpffs));
  auto fd = [&](const char* name) {
    auto it = maps.find(name);
    return it == maps.end() ? -1 : it->second.get();
  };
  if (fd("tunnels") < 0 || fd("stats") < 0) return {};
  std::vector<TunnelStatus> out;
  Quiet quiet;  // queries of filters that are not there are expected
  for (auto& [key, value] : tunnel_entries(fd("tunnels"))) {
    TunnelSpec spec = spec_of(value);
    bool attached = program_attached(eip_name(spec.name), "etherip_encap");
    for (const auto& underlay : spec.underlay)
      attached = attached && program_attached(underlay, "etherip_decap");
    if (spec.ipsec_reqid)
      attached = attached && program_attached(dec_name(spec.name), "etherip_decap");
    std::vector<std::string> drift;
    if (entry_alive(key, value)) {
      try {
        drift = link_drift(spec.name, value.family == ETHERIP_FAMILY_V6, spec.underlay,
                           spec.ipsec_reqid != 0);
      } catch (const DatapathError& e) {
        drift.emplace_back(e.what());  // a link gone meanwhile
      }
    }
    out.push_back({spec, read_counters(fd("stats"), key).value_or(Counters{}), attached,
                   entry_complete(key, value, fd("peers"), fd("locals")), std::move(drift)});
  }
  return out;
}

bool needs_pruning(const Options& options) {
  const std::string dir = pin_dir_for(options.bpffs);
  auto maps = shared_maps(dir);
  auto tunnels = maps.find("tunnels");
  if (tunnels == maps.end()) {
    std::error_code ec;
    return std::filesystem::exists(dir, ec);  // pins (some) without the tunnels map
  }
  auto entries = tunnel_entries(tunnels->second.get());
  for (auto& [key, value] : entries)
    if (!entry_alive(key, value)) return true;
  std::error_code ec;
  return entries.empty() && std::filesystem::exists(dir, ec);
}

}  // namespace etherctl::datapath
