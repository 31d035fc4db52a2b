// `etherctl watch`: the event-driven agent. One thread, one Boost.Asio io_context:
//   kernel notifications --(debounce)--> reconcile (apply; repairs drift, re-weights members)
//   a timer              -------------> full reconcile with neighbour probes (safety net)
//   SIGHUP -> reload the file (a bad file keeps the running configuration), SIGTERM -> exit
//   HTTP on a loopback address: /metrics (Prometheus), /status (JSON), /healthz
// Every reconcile is an ordinary `apply` through the engine and takes the same per-namespace
// lock, so cron (or an operator) and the agent never run at once; a held lock is retried.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace etherctl::agent {

struct WatchOptions {
  std::string site_file;
  std::optional<std::string> device;
  std::optional<std::string> netns;
  std::string lock_dir = "/run/etherctl";
  std::string listen = "127.0.0.1:9717";       // "" or "none": no HTTP server
  std::chrono::milliseconds interval{30'000};  // full reconcile at least this often
  std::chrono::milliseconds debounce{20};      // wait for a burst of events to settle
  bool drop_capabilities = true;
};

// Runs until SIGTERM or SIGINT. Returns the process exit status: 0 on a clean stop, 1 when
// the agent cannot start (bad file at start, namespace, listen address), with the reason on
// stderr.
int watch(const WatchOptions& options);

}  // namespace etherctl::agent
