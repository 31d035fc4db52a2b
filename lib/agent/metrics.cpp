#include "agent/metrics.hpp"

#include <fmt/format.h>

namespace etherctl::agent {

namespace {

// Label values escape backslash, double quote and newline (the exposition format's rule).
std::string escape(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

class Writer {
 public:
  void family(const char* name, const char* type, const char* help) {
    text_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  template <typename T>
  void sample(const char* name, const std::string& labels, T value) {
    text_ += labels.empty() ? fmt::format("{} {}\n", name, value)
                            : fmt::format("{}{{{}}} {}\n", name, labels, value);
  }
  std::string take() { return std::move(text_); }

 private:
  std::string text_;
};

std::string label(const char* name, const std::string& value) {
  return fmt::format("{}=\"{}\"", name, escape(value));
}

}  // namespace

std::string render_metrics(const AgentStats& stats, const nlohmann::json& members,
                           const nlohmann::json& tunnels) {
  Writer w;
  w.family("etherctl_reconciles_total", "counter", "Reconciles run by the agent, by result.");
  for (size_t i = 0; i < stats.reconciles.size(); ++i) {
    w.sample("etherctl_reconciles_total", label("result", kReconcileResults[i]),
             stats.reconciles[i]);
  }
  w.family("etherctl_reconcile_reruns_total", "counter",
           "Reconciles that failed and were run again at once from a fresh look at the kernel.");
  w.sample("etherctl_reconcile_reruns_total", "", stats.reconcile_reruns);
  w.family("etherctl_reconcile_changes_total", "counter", "Kernel changes made by reconciles.");
  w.sample("etherctl_reconcile_changes_total", "", stats.changes_applied);
  w.family("etherctl_reconcile_errors_total", "counter", "Reconciles that failed.");
  w.sample("etherctl_reconcile_errors_total", "", stats.reconciles[1]);
  w.family("etherctl_reconcile_duration_seconds", "summary", "Time spent in reconciles.");
  uint64_t count = 0;
  for (auto n : stats.reconciles) count += n;
  w.sample("etherctl_reconcile_duration_seconds_sum", "", stats.duration_seconds_sum);
  w.sample("etherctl_reconcile_duration_seconds_count", "", count);
  w.family("etherctl_last_reconcile_duration_seconds", "gauge", "Duration of the last reconcile.");
  w.sample("etherctl_last_reconcile_duration_seconds", "", stats.last_duration_seconds);
  w.family("etherctl_last_reconcile_timestamp_seconds", "gauge", "When the last reconcile ran.");
  w.sample("etherctl_last_reconcile_timestamp_seconds", "", stats.last_reconcile_unix);
  w.family("etherctl_last_success_timestamp_seconds", "gauge", "When a reconcile last succeeded.");
  w.sample("etherctl_last_success_timestamp_seconds", "", stats.last_success_unix);
  w.family("etherctl_in_sync", "gauge",
           "1 when the last reconcile left the kernel as the file says.");
  w.sample("etherctl_in_sync", "", stats.in_sync ? 1 : 0);
  w.family("etherctl_config_reloads_total", "counter", "Site file reloads (SIGHUP), by result.");
  w.sample("etherctl_config_reloads_total", label("result", "ok"), stats.reloads_ok);
  w.sample("etherctl_config_reloads_total", label("result", "failed"), stats.reloads_failed);
  w.family("etherctl_config_info", "gauge", "The configuration in force (its digest).");
  w.sample("etherctl_config_info", label("digest", stats.digest), 1);
  w.family("etherctl_events_total", "counter", "Kernel notifications received, by kind.");
  for (size_t i = 0; i < stats.events.size(); ++i) {
    w.sample("etherctl_events_total", label("kind", event_kind_name(static_cast<EventKind>(i))),
             stats.events[i]);
  }
  w.family("etherctl_event_overruns_total", "counter",
           "Times the kernel dropped notifications (a full reconcile followed).");
  w.sample("etherctl_event_overruns_total", "", stats.event_overruns);
  w.family("etherctl_start_time_seconds", "gauge", "When the agent started.");
  w.sample("etherctl_start_time_seconds", "", stats.started_unix);

  w.family("etherctl_member_weight", "gauge", "Effective IPVS weight of a pool member.");
  for (const auto& m : members) {
    w.sample("etherctl_member_weight",
             label("pool", m.value("pool", "")) + "," + label("member", m.value("member", "")),
             m.value("effective_weight", 0));
  }
  w.family("etherctl_member_configured_weight", "gauge", "Weight of a pool member in the file.");
  for (const auto& m : members) {
    w.sample("etherctl_member_configured_weight",
             label("pool", m.value("pool", "")) + "," + label("member", m.value("member", "")),
             m.value("configured_weight", 0));
  }
  w.family("etherctl_member_location", "gauge",
           "1 for the location of a pool member (local, remote or unknown).");
  for (const auto& m : members) {
    for (const char* where : {"local", "remote", "unknown"}) {
      w.sample("etherctl_member_location",
               label("pool", m.value("pool", "")) + "," + label("member", m.value("member", "")) +
                   "," + label("location", where),
               m.value("location", "") == where ? 1 : 0);
    }
  }

  struct Counter {
    const char* metric;
    const char* help;
    const char* field;
    const char* direction;  // nullptr: no direction label
  };
  const Counter counters[] = {
      {"etherctl_tunnel_packets_total", "Frames through a tunnel.", "tx_packets", "tx"},
      {"etherctl_tunnel_packets_total", nullptr, "rx_packets", "rx"},
      {"etherctl_tunnel_bytes_total", "Bytes of frames through a tunnel.", "tx_bytes", "tx"},
      {"etherctl_tunnel_bytes_total", nullptr, "rx_bytes", "rx"},
      {"etherctl_tunnel_fragments_total", "Outer fragments received.", "rx_fragments", nullptr},
      {"etherctl_tunnel_reassembled_total", "Outer packets reassembled from fragments.",
       "reassembled", nullptr},
  };
  for (const auto& c : counters) {
    if (c.help) w.family(c.metric, "counter", c.help);
    for (const auto& [tunnel, t] : tunnels.items()) {
      std::string labels = label("tunnel", tunnel);
      if (c.direction) {
        labels += ',';  // not `"," + label(...)`: GCC 12 -O3 misjudges it (false -Wrestrict)
        labels += label("direction", c.direction);
      }
      w.sample(c.metric, labels, t.value(c.field, uint64_t{0}));
    }
  }
  // IPsec, for tunnels that have it: whether an SA carries the tunnel, its age, time to rekey,
  // what went through it (the SA's own counters: they restart with each rekeyed SA).
  struct Gauge {
    const char* metric;
    const char* help;
    const char* sa;  // "ike" or "child"
    const char* field;
  };
  const Gauge gauges[] = {
      {"etherctl_tunnel_ipsec_ike_age_seconds", "Age of the tunnel's IKE SA.", "ike",
       "established_seconds"},
      {"etherctl_tunnel_ipsec_ike_rekey_seconds", "Seconds until the IKE SA is rekeyed.", "ike",
       "rekey_seconds"},
      {"etherctl_tunnel_ipsec_sa_age_seconds", "Age of the tunnel's ESP SA.", "child",
       "installed_seconds"},
      {"etherctl_tunnel_ipsec_sa_rekey_seconds", "Seconds until the ESP SA is rekeyed.", "child",
       "rekey_seconds"},
  };
  struct Flag {
    const char* metric;
    const char* help;
    bool (*value)(const nlohmann::json& ipsec);
  };
  const Flag flags[] = {
      {"etherctl_tunnel_ipsec_established",
       "1 when an ESP SA negotiated by charon carries the tunnel, else 0.",
       [](const nlohmann::json& ipsec) { return ipsec.value("established", false); }},
      {"etherctl_tunnel_ipsec_connection_loaded",
       "1 when the tunnel's IPsec connection is loaded here (0: a failover pair's standby).",
       [](const nlohmann::json& ipsec) { return ipsec.value("connection_loaded", true); }},
      {"etherctl_tunnel_ipsec_receive_ready",
       "1 when the kernel can decrypt what the tunnel receives (ESP GRO), else 0.",
       [](const nlohmann::json& ipsec) { return !ipsec.contains("receive_problem"); }},
  };
  for (const auto& f : flags) {
    w.family(f.metric, "gauge", f.help);
    for (const auto& [tunnel, t] : tunnels.items()) {
      if (!t.contains("ipsec")) continue;
      w.sample(f.metric, label("tunnel", tunnel), f.value(t["ipsec"]) ? 1 : 0);
    }
  }
  for (const auto& g : gauges) {
    w.family(g.metric, "gauge", g.help);
    for (const auto& [tunnel, t] : tunnels.items()) {
      if (!t.contains("ipsec") || !t["ipsec"].contains(g.sa)) continue;
      w.sample(g.metric, label("tunnel", tunnel), t["ipsec"][g.sa].value(g.field, int64_t{0}));
    }
  }
  for (const char* unit : {"bytes", "packets"}) {
    const std::string metric = fmt::format("etherctl_tunnel_ipsec_sa_{}", unit);
    const std::string help =
        fmt::format("{} through the tunnel's current ESP SA, by direction.", unit);
    w.family(metric.c_str(), "gauge", help.c_str());
    for (const auto& [tunnel, t] : tunnels.items()) {
      if (!t.contains("ipsec") || !t["ipsec"].contains("child")) continue;
      for (const char* direction : {"in", "out"}) {
        w.sample(metric.c_str(), label("tunnel", tunnel) + "," + label("direction", direction),
                 t["ipsec"]["child"].value(fmt::format("{}_{}", unit, direction), int64_t{0}));
      }
    }
  }
  w.family("etherctl_tunnel_drops_total", "counter", "Packets a tunnel dropped, by reason.");
  for (const auto& [tunnel, t] : tunnels.items()) {
    if (!t.contains("drops")) continue;
    for (const auto& [reason, n] : t["drops"].items()) {
      w.sample("etherctl_tunnel_drops_total",
               label("tunnel", tunnel) + "," + label("reason", reason), n.get<uint64_t>());
    }
  }
  return w.take();
}

}  // namespace etherctl::agent
