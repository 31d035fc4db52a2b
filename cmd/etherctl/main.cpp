// etherctl command line: parse arguments, run the engine, print, map outcomes to exit codes.
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <optional>

#include "agent/agent.hpp"
#include "engine/confirm.hpp"
#include "engine/duration.hpp"
#include "engine/engine.hpp"
#include "ipsec/connection.hpp"
#include "plan/render.hpp"

namespace {

using etherctl::engine::Command;
using etherctl::engine::Outcome;

// Exit codes (documented in etherctl(8)): sysexits.h values for usage and data errors.
constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitChanges = 2;  // with --detailed-exitcodes
constexpr int kExitLockHeld = 3;
constexpr int kExitNotEstablished = 4;  // apply: applied, but IPsec SAs not up (see warnings)
constexpr int kExitUsage = 64;
constexpr int kExitInvalid = 65;
// Plans shorter than this finish before a progress line would be worth reading.
constexpr size_t kProgressMinChanges = 50;

struct Cli {
  etherctl::engine::Options options;
  bool watch = false;
  etherctl::agent::WatchOptions watch_options;
  std::string interval = "30s";
  std::string debounce = "20ms";
  bool json = false;
  bool detailed_exitcodes = false;
  std::string color = "auto";
};

bool use_color(const std::string& mode) {
  if (mode == "always") return true;
  if (mode == "never") return false;
  return isatty(STDOUT_FILENO) && std::getenv("NO_COLOR") == nullptr;
}

std::string error_line(const std::string& site_file, const etherctl::model::Problem& problem) {
  if (!problem.path.empty()) return problem.path + ": " + problem.message;
  return site_file.empty() ? problem.message : site_file + ": " + problem.message;
}

// What the last apply, destroy or revert in this namespace did.
void print_last_applied(const nlohmann::json& status) {
  const auto& last = status.contains("last_applied") ? status["last_applied"] : nlohmann::json();
  if (last.is_object() && last.value("command", "") == "revert") {
    fmt::print("last apply, from {}, was not confirmed in time: {} ({} changes)\n",
               last.value("site_file", "?"), last.value("outcome", "?"), last.value("changes", 0));
  } else if (last.is_object()) {
    fmt::print("last {} digest {} from {}\n", last.value("command", "?"), last.value("digest", ""),
               last.value("site_file", "?"));
  }
}

// A time of day for `status` (local time, milliseconds).
std::string clock_text(double unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm local{};
  localtime_r(&t, &local);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &local);
  return fmt::format("{}.{:03}", text, static_cast<int>((unix_seconds - t) * 1000));
}

// A unit of a failover group: its role, the peer, the last transition, split brain.
void print_failover(const nlohmann::json& status) {
  if (!status.contains("failover") || !status["failover"].is_object()) return;
  const auto& f = status["failover"];
  std::string devices;
  for (const auto& d : f.value("devices", nlohmann::json::array())) {
    devices += (devices.empty() ? "" : ", ") + d.get<std::string>();
  }
  fmt::print("failover group {} ({}), virtual router {}, advert {} s\n", f.value("group", ""),
             devices, f.value("virtual_router_id", 0), f.value("advert_int", 0.0));
  std::string role = f.value("role", "unknown");
  for (auto& c : role) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  fmt::print("  role {}{}{} ({})\n", role,
             f.contains("since") ? " since " + clock_text(f["since"].get<double>()) : "",
             f.contains("cause") ? ": " + f["cause"].get<std::string>() : "",
             f.value("role_source", ""));
  if (!f.value("agent_running", false)) {
    fmt::print(
        "  no failover agent runs: the role's objects are left as they are and keepalived "
        "stays out of the election (run etherctl watch)\n");
  }
  if (f.contains("keepalived") && f["keepalived"].is_object()) {
    const auto& k = f["keepalived"];
    fmt::print("  keepalived: {}{}\n",
               k.value("running", false) ? fmt::format("running (pid {})", k.value("pid", 0))
                                         : std::string("not running"),
               k.value("master", false) ? ", master" : "");
  }
  if (f.contains("peer") && f["peer"].is_object()) {
    const auto& p = f["peer"];
    std::string last =
        p.contains("last_advert_ms_ago") && !p["last_advert_ms_ago"].is_null()
            ? fmt::format(", last advert {} ms ago", p["last_advert_ms_ago"].get<int64_t>())
            : "";
    if (p.contains("said_standby_ms_ago") && !p["said_standby_ms_ago"].is_null()) {
      last += fmt::format(", its agent said standby {} ms ago",
                          p["said_standby_ms_ago"].get<int64_t>());
    }
    fmt::print("  peer {}{}: {}{}\n", p.value("address", "?"),
               p.contains("priority") ? fmt::format(" (priority {})", p.value("priority", 0)) : "",
               p.value("state", "?"), last);
  }
  if (f.contains("last_transition") && f["last_transition"].is_object() &&
      !f["last_transition"].empty()) {
    const auto& t = f["last_transition"];
    fmt::print("  last transition: {} -> {} at {}: {}{}\n", t.value("from", "?"),
               t.value("to", "?"), clock_text(t.value("at", 0.0)), t.value("cause", ""),
               t.contains("applied_ms")
                   ? fmt::format(" (applied in {:.1f} ms)", t.value("applied_ms", 0.0))
                   : "");
  }
  if (f.contains("split_brain") && f["split_brain"].is_object()) {
    const auto& b = f["split_brain"];
    if (b.value("now", false)) {
      fmt::print("  SPLIT BRAIN since {}: {}\n", clock_text(b.value("since", 0.0)),
                 b.value("reason", ""));
    } else if (b.value("count", 0) > 0) {
      fmt::print("  split brain: none now ({} seen)\n", b.value("count", 0));
    }
  }
  fmt::print("  group digest {}\n", f.value("group_digest", ""));
}

// Confirm-or-revert lines of `status`.
void print_pending(const nlohmann::json& status) {
  const auto& pending =
      status.contains("pending_confirmation") ? status["pending_confirmation"] : nlohmann::json();
  if (pending.is_object()) {
    fmt::print("confirmation pending: reverted at {} (in {} s) unless `etherctl confirm` runs\n",
               pending.value("deadline_text", ""), pending.value("seconds_left", 0));
    if (!pending.value("waiter_alive", false)) {
      fmt::print(
          "warning: the revert waiter (pid {}) is gone: nothing will revert; run "
          "`etherctl confirm` to clear\n",
          pending.value("waiter_pid", 0));
    }
  }
  if (status.value("interrupted_run", false)) {
    fmt::print("an interrupted run left a journal; the next apply or destroy repairs it\n");
  }
}

// One or two lines on a tunnel's IPsec SAs (engine: ipsec::sa_status).
// `role`: the unit's failover role ("" when it is in no failover group).
void print_ipsec(const std::string& tunnel, const nlohmann::json& sa, const std::string& role) {
  if (!sa.value("connection_loaded", true)) {
    const int64_t states = sa.value("xfrm_states", int64_t{0});
    const int64_t larval = sa.value("larval_states", int64_t{0});
    const std::string held =
        states == 0 ? "no SA in the kernel"
                    : fmt::format("{} xfrm state{} in the kernel{}", states, states == 1 ? "" : "s",
                                  larval > 0 ? fmt::format(" ({} larval: a packet met the policy "
                                                           "and was dropped; the kernel drops the "
                                                           "state within 30 s)",
                                                           larval)
                                             : "");
    if (role == "standby") {
      fmt::print(
          "tunnel {}: IPsec: standby: no connection here (the active unit negotiates the "
          "tunnel's SAs), {}; the policies keep clear EtherIP off the wire\n",
          tunnel, held);
    } else {
      fmt::print(
          "tunnel {}: IPsec: NOT established: no connection loaded in charon (the next apply "
          "loads it), {}; nothing is sent in clear\n",
          tunnel, held);
    }
    return;
  }
  if (sa.contains("receive_problem"))
    fmt::print("tunnel {}: IPsec: {}\n", tunnel, sa["receive_problem"].get<std::string>());
  if (sa.contains("error")) {
    fmt::print("tunnel {}: IPsec: unknown ({})\n", tunnel, sa["error"].get<std::string>());
    return;
  }
  if (!sa.value("established", false)) {
    fmt::print("tunnel {}: IPsec: NOT established{}; nothing is sent in clear\n", tunnel,
               sa.contains("state") ? " (IKE SA " + sa["state"].get<std::string>() + ")" : "");
    return;
  }
  const auto& ike = sa["ike"];
  const auto& child = sa["child"];
  fmt::print(
      "tunnel {}: IPsec established ({} {}), IKE SA {} s old (rekey in {} s), ESP SA {} s old "
      "(rekey in {} s), in {} packets {} bytes, out {} packets {} bytes\n",
      tunnel, child.value("mode", ""), child.value("encryption", ""),
      ike.value("established_seconds", int64_t{-1}), ike.value("rekey_seconds", int64_t{-1}),
      child.value("installed_seconds", int64_t{-1}), child.value("rekey_seconds", int64_t{-1}),
      child.value("packets_in", int64_t{0}), child.value("bytes_in", int64_t{0}),
      child.value("packets_out", int64_t{0}), child.value("bytes_out", int64_t{0}));
}

// Datapath counters of each tunnel (status, with or without a site file).
void print_tunnel_counters(const nlohmann::json& status) {
  const std::string role = status.contains("failover") && status["failover"].is_object()
                               ? status["failover"].value("role", "")
                               : "";
  for (const auto& o : status["objects"]) {
    if (!o.contains("counters")) continue;
    const auto& c = o["counters"];
    std::string drops;
    for (const auto& [reason, count] : c["drops"].items()) {
      if (count.get<uint64_t>() > 0) drops += fmt::format(" {}={}", reason, count.get<uint64_t>());
    }
    fmt::print(
        "\ntunnel {}: tx {} packets {} bytes, rx {} packets {} bytes, {} fragments received, {} "
        "reassembled, drops:{}\n",
        o["name"].get<std::string>(), c["tx_packets"].get<uint64_t>(),
        c["tx_bytes"].get<uint64_t>(), c["rx_packets"].get<uint64_t>(),
        c["rx_bytes"].get<uint64_t>(), c["rx_fragments"].get<uint64_t>(),
        c["reassembled"].get<uint64_t>(), drops.empty() ? " none" : drops);
    if (o.contains("ipsec")) print_ipsec(o["name"].get<std::string>(), o["ipsec"], role);
  }
}

void print_status_table(const nlohmann::json& status) {
  fmt::print("{:<16} {:<36} {:<6} {}\n", "KIND", "NAME", "OWNED", "STATE");
  for (const auto& o : status["objects"]) {
    std::string name = o["name"].get<std::string>();
    if (o["key"] != o["name"]) name += " (" + o["key"].get<std::string>() + ")";
    fmt::print("{:<16} {:<36} {:<6} {}\n", o["kind"].get<std::string>(), name,
               o["owned"].get<bool>() ? "yes" : "no", o["state"].get<std::string>());
  }
  if (status.contains("members") && !status["members"].empty()) {
    fmt::print("\n{:<12} {:<24} {:<8} {:>6} {:>9}  {}\n", "POOL", "MEMBER", "LOCATION", "WEIGHT",
               "EFFECTIVE", "WHY");
    for (const auto& m : status["members"]) {
      fmt::print("{:<12} {:<24} {:<8} {:>6} {:>9}  {}\n", m["pool"].get<std::string>(),
                 m["member"].get<std::string>(), m["location"].get<std::string>(),
                 m["configured_weight"].get<int>(), m["effective_weight"].get<int>(),
                 m["reason"].get<std::string>());
    }
  }
  print_tunnel_counters(status);
}

// `status` without a site file: what etherctl owns here, by the kernel's own marks.
void print_owned(const nlohmann::json& status) {
  const auto& objects = status["objects"];
  fmt::print("etherctl's objects in this network namespace (from the kernel's marks):\n");
  if (objects.empty()) {
    fmt::print("none\n");
    return;
  }
  fmt::print("{:<13} {:<40} {:<12} {}\n", "KIND", "NAME", "DEVICE", "DETAILS");
  for (const auto& o : objects) {
    std::string details;
    for (const auto& [attr, value] : o["attrs"].items()) {
      if (attr == "type" || attr == "service" || attr == "family") continue;
      details += fmt::format("{}{}={}", details.empty() ? "" : " ", attr,
                             value.is_string() ? value.get<std::string>() : value.dump());
    }
    const std::string device = o.value("device", "");
    fmt::print("{:<13} {:<40} {:<12} {}\n", o["kind"].get<std::string>(),
               o["name"].get<std::string>(), device.empty() ? "-" : device, details);
  }
}

void print_text(const Cli& cli, const etherctl::engine::Report& report) {
  const auto& command = cli.options.command;
  bool color = use_color(cli.color);
  for (const auto& repair : report.recovered) {
    fmt::print(stderr, "etherctl: repaired after an interrupted run: {}\n", repair);
  }
  if (!report.held_back.empty()) {
    fmt::print("device {}: nothing applied: {}.\n", report.device, report.held_back);
    return;
  }
  if (command == Command::Confirm) {
    if (report.outcome == Outcome::Ok) {
      fmt::print("confirmed: the apply of {} (device {}) is kept; its revert is cancelled\n",
                 report.pending.value("site_file", "?"), report.device);
      if (!report.pending.value("waiter_alive", true)) {
        fmt::print("(its revert waiter was already gone)\n");
      }
    }
  } else if (report.outcome == Outcome::Ok || report.outcome == Outcome::Failed) {
    if (command == Command::Validate) {
      fmt::print("{}: valid{}\n", cli.options.site_file,
                 report.device.empty() ? "" : " (device " + report.device + ")");
    } else if (command == Command::Status && report.status.is_object() &&
               report.status.contains("site_file") && report.status["site_file"].is_null()) {
      print_owned(report.status);
      print_last_applied(report.status);
      print_pending(report.status);
      print_tunnel_counters(report.status);
      fmt::print(
          "\nGive the site file (etherctl status site.json) to compare: each object's state "
          "(in sync, missing, drifted, not in the file), the configuration digest, pool "
          "members.\n");
    } else if (command == Command::Status && report.status.is_object()) {
      fmt::print("device {}\nconfiguration digest {}{}\n", report.device, report.digest,
                 report.status.value("in_sync", false) ? " (in sync)" : " (not in sync)");
      print_failover(report.status);
      print_last_applied(report.status);
      print_pending(report.status);
      if (report.status.contains("objects")) print_status_table(report.status);
    } else if (!report.device.empty() && command != Command::Status) {
      const char* verb = command == Command::Plan ? "Plan"
                         : report.failed_step     ? "Planned changes"
                                                  : "Changes";
      if (report.plan.empty() && report.errors.empty()) {
        fmt::print("device {}: no changes ({} objects in sync).\n", report.device,
                   report.plan.unchanged);
      } else if (!report.plan.empty()) {
        fmt::print("{} for device {}:\n{}", verb, report.device,
                   etherctl::plan::render_text(report.plan, color));
      }
      if (report.failed_step) {
        fmt::print("Apply failed at change {} of {}; {}.\n", *report.failed_step + 1,
                   report.plan.changes.size(),
                   report.errors.size() > 1 ? "rolling back was incomplete (see below)"
                                            : "the changes made before it were rolled back");
      }
      if (report.pending.is_object()) {
        fmt::print(
            "These changes are reverted at {} (in {} s) unless `etherctl{} confirm` runs "
            "before.\n",
            report.pending.value("deadline_text", ""), cli.options.confirm_within.value_or(0),
            cli.options.netns ? " --netns " + *cli.options.netns : "");
      } else if (cli.options.confirm_within && report.plan.empty() && report.errors.empty()) {
        fmt::print("Nothing changed, so there is nothing to confirm.\n");
      }
    }
  }
  for (const auto& e : report.errors) {
    fmt::print(stderr, "etherctl: {}\n", error_line(cli.options.site_file, e));
  }
  for (const auto& w : report.warnings) {
    fmt::print(stderr, "etherctl: warning: {}\n", error_line(cli.options.site_file, w));
  }
}

// Whoever can write the site file decides what etherctl, as root, does to this host's network:
// a file (or a directory that lets it be replaced) writable by group or others gets a warning
// on stderr. The run goes on. A sticky directory (/tmp) lets no one else replace the file.
void warn_if_writable_by_others(const std::string& site_file) {
  auto check = [](const std::string& what, const std::string& name, mode_t ignore) {
    struct stat st {};
    if (::stat(name.c_str(), &st) != 0 || (st.st_mode & ignore)) return;
    mode_t writers = st.st_mode & (S_IWGRP | S_IWOTH);
    if (!writers) return;
    fmt::print(stderr, "etherctl: warning: {} {} is writable by {} (mode {:04o})\n", what, name,
               writers == S_IWGRP   ? "its group"
               : writers == S_IWOTH ? "others"
                                    : "its group and others",
               st.st_mode & 07777);
  };
  check("site file", site_file, 0);
  std::string dir = std::filesystem::path(site_file).parent_path().string();
  check("the site file's directory", dir.empty() ? "." : dir, S_ISVTX);
}

int exit_code(const Cli& cli, const etherctl::engine::Report& report) {
  switch (report.outcome) {
    case Outcome::Invalid:
      return kExitInvalid;
    case Outcome::LockHeld:
      return kExitLockHeld;
    case Outcome::Failed:
      return kExitFailed;
    case Outcome::Ok:
      break;
  }
  if (!report.warnings.empty()) return kExitNotEstablished;
  bool changes = !report.plan.empty() &&
                 (cli.options.command == Command::Plan || cli.options.command == Command::Apply ||
                  cli.options.command == Command::Destroy);
  return cli.detailed_exitcodes && changes && report.held_back.empty() ? kExitChanges : kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  Cli cli;
  CLI::App app{"etherctl: stretch L2 segments between data centers with EtherIP, declaratively"};
  app.set_version_flag("--version", std::string("etherctl ") + ETHERCTL_VERSION);
  app.require_subcommand(1);
  app.fallthrough();
  app.add_flag("--json", cli.json, "Print exactly one JSON object on stdout");
  app.add_option("--device", cli.options.device,
                 "Device of the site file to act on (default: the only one, else the host name)");
  app.add_option("--netns", cli.options.netns,
                 "Operate inside the named network namespace (like ip -n)");
  app.add_flag("--wait", cli.options.wait_for_lock,
               "Wait for another run's lock instead of exiting 3");
  app.add_flag("--respect-revert", cli.options.respect_revert,
               "apply: do nothing if this configuration was reverted for lack of confirmation");
  app.add_flag("--detailed-exitcodes", cli.detailed_exitcodes,
               "plan/apply/destroy exit 2 when there are (or were) changes");
  app.add_option("--color", cli.color, "Colour the plan: auto, always or never")
      ->check(CLI::IsMember({"auto", "always", "never"}));
  auto& ipsec =
      etherctl::ipsec::Settings::current();  // defaults, or ETHERCTL_VICI_URI/_SWANCTL_DIR
  app.add_option("--vici-uri", ipsec.vici_uri, "strongSwan's VICI socket (env ETHERCTL_VICI_URI)")
      ->capture_default_str();
  app.add_option("--swanctl-dir", ipsec.swanctl_dir,
                 "swanctl's directory: connection files go to its conf.d/ (env "
                 "ETHERCTL_SWANCTL_DIR)")
      ->capture_default_str();
  app.add_option_function<std::string>(
         "--ipsec-wait",
         [&cli](const std::string& text) {
           auto wait = etherctl::engine::parse_duration(text);
           if (!wait) {
             throw CLI::ValidationError("--ipsec-wait",
                                        "\"" + text + "\" is not a duration (30s, 2m, 0)");
           }
           cli.options.ipsec_wait = *wait;
         },
         "apply: wait this long for IPsec SAs, then report those not up and exit 4 (default "
         "30s)")
      ->type_name("DURATION");

  struct Sub {
    const char* name;
    const char* help;
    Command command;
  };
  const Sub subs[] = {
      {"validate", "Check a site file; nothing touches the kernel", Command::Validate},
      {"plan", "Show what apply would change", Command::Plan},
      {"apply", "Make the kernel match the site file", Command::Apply},
      {"destroy", "Remove everything etherctl owns for the device", Command::Destroy},
      {"status",
       "Show what etherctl owns and its state (without a site file: what it owns in this "
       "namespace)",
       Command::Status},
  };
  for (const auto& sub : subs) {
    CLI::App* command = app.add_subcommand(sub.name, sub.help);
    CLI::Option* site =
        command->add_option("site", cli.options.site_file, "The site file (site.json)");
    if (sub.command != Command::Status) site->required();
    command->callback([&cli, c = sub.command] { cli.options.command = c; });
  }

  // Confirm or revert (lib/engine/confirm.hpp).
  app.add_option_function<std::string>(
         "--confirm-within",
         [&cli](const std::string& text) {
           cli.options.confirm_within = etherctl::engine::parse_confirm_within(text);
           if (!cli.options.confirm_within) {
             throw CLI::ValidationError("--confirm-within", "\"" + text +
                                                                "\" is not a duration of 1s..24h "
                                                                "(120s, 2m, 90)");
           }
         },
         "apply: revert to the previous state unless `etherctl confirm` runs within this "
         "time (120s, 2m, 90)")
      ->type_name("DURATION");
  app.add_subcommand("confirm", "Keep the changes of apply --confirm-within: cancel the revert")
      ->callback([&cli] { cli.options.command = Command::Confirm; });
  std::string waiter_record, waiter_token;
  CLI::App* waiter = app.add_subcommand("_revert-waiter", "")->group("");  // hidden, internal
  waiter->add_option("record", waiter_record)->required();
  waiter->add_option("token", waiter_token)->required();

  CLI::App* watch = app.add_subcommand(
      "watch", "Keep the kernel matching the site file: react to events, serve metrics");
  watch->add_option("site", cli.options.site_file, "The site file (site.json)")->required();
  watch
      ->add_option("--listen", cli.watch_options.listen,
                   "HTTP address for /metrics, /status and /healthz, or \"none\"")
      ->capture_default_str();
  watch
      ->add_option("--interval", cli.interval,
                   "Full reconcile at least this often (also a pool monitor's interval)")
      ->capture_default_str();
  watch->add_option("--debounce", cli.debounce, "Let a burst of kernel events settle this long")
      ->capture_default_str();
  watch->callback([&cli] { cli.watch = true; });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  if (const char* lock_dir = std::getenv("ETHERCTL_LOCK_DIR")) cli.options.lock_dir = lock_dir;
  if (const char* step = std::getenv("ETHERCTL_TEST_FAIL_AT_STEP")) {
    cli.options.fail_at_step = std::strtoul(step, nullptr, 10);
  }
  cli.options.trace = std::getenv("ETHERCTL_TEST_TRACE") != nullptr;
  if (waiter->parsed()) return etherctl::engine::revert_waiter(waiter_record, waiter_token);
  if (cli.options.confirm_within && (cli.watch || cli.options.command != Command::Apply)) {
    fmt::print(stderr, "etherctl: --confirm-within is an option of apply only\n");
    return kExitUsage;
  }

  // Every command; watch once, at start (a reload does not warn again). `confirm` has none.
  if (!cli.options.site_file.empty()) warn_if_writable_by_others(cli.options.site_file);

  if (cli.watch) {
    auto& w = cli.watch_options;
    auto interval = etherctl::engine::parse_duration(cli.interval);
    auto debounce = etherctl::engine::parse_duration(cli.debounce);
    if (!interval || interval->count() < 100 || !debounce) {
      fmt::print(stderr,
                 "etherctl: --interval and --debounce take a duration such as 30s, 500ms "
                 "or 2m (interval at least 100ms)\n");
      return kExitUsage;
    }
    w.site_file = cli.options.site_file;
    w.device = cli.options.device;
    w.netns = cli.options.netns;
    w.lock_dir = cli.options.lock_dir;
    w.interval = *interval;
    w.debounce = *debounce;
    return etherctl::agent::watch(w);
  }

  // Progress of long applies on a terminal: one line, redrawn at most every 100 ms.
  const bool show_progress =
      !cli.json && isatty(STDERR_FILENO) &&
      (cli.options.command == Command::Apply || cli.options.command == Command::Destroy);
  auto last_drawn = std::chrono::steady_clock::time_point{};
  bool drew_progress = false;
  if (show_progress) {
    cli.options.on_step = [&](size_t step, size_t total, const etherctl::plan::Change& change) {
      const auto now = std::chrono::steady_clock::now();
      if (total < kProgressMinChanges || now - last_drawn < std::chrono::milliseconds(100)) return;
      last_drawn = now;
      drew_progress = true;
      const auto& o = change.subject();
      fmt::print(stderr, "\r\033[K[{}/{}] {} {} {}", step + 1, total,
                 etherctl::plan::to_string(change.op), o.kind, o.name);
      std::fflush(stderr);
    };
  }

  etherctl::engine::Report report;
  try {
    report = cli.options.command == Command::Confirm ? etherctl::engine::confirm(cli.options)
                                                     : etherctl::engine::run(cli.options);
  } catch (const std::exception& e) {  // the engine reports errors as values; this is a bug
    fmt::print(stderr, "etherctl: internal error: {}\n", e.what());
    return kExitFailed;
  }
  if (drew_progress) fmt::print(stderr, "\r\033[K");
  if (cli.json) {
    // Names from the command line (file, namespace) need not be UTF-8; JSON must be.
    std::cout << etherctl::engine::report_json(report, cli.options.command)
                     .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
              << "\n";
  } else {
    print_text(cli, report);
  }
  return exit_code(cli, report);
}
