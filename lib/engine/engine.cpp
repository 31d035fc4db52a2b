#include "engine/engine.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <map>

#include "datapath/datapath.hpp"
#include "datapath/tunnel_kind.hpp"
#include "engine/confirm.hpp"
#include "engine/internal.hpp"
#include "engine/journal.hpp"
#include "engine/lock.hpp"
#include "kernel/kind.hpp"
#include "kernel/snapshot.hpp"
#include "location/location.hpp"
#include "location/observe.hpp"
#include "model/site.hpp"
#include "plan/render.hpp"

namespace etherctl::engine {

namespace internal {

using plan::Change;
using plan::Object;
using plan::Op;

namespace {

std::string hostname() {
  char buffer[256] = {};
  gethostname(buffer, sizeof buffer - 1);
  std::string name = buffer;
  return name.substr(0, name.find('.'));
}

}  // namespace

void register_kinds() {
  static const bool registered = (kernel::register_kind(datapath::tunnel_kind_ops()), true);
  (void)registered;
}

void enter_netns_or_throw(const std::string& name) {
  std::string path = "/run/netns/" + name;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw RunError{"", "network namespace \"" + name + "\" does not exist (" + path + ": " +
                           std::strerror(errno) + ")"};
  }
  int rc = setns(fd, CLONE_NEWNET);
  int saved = errno;
  close(fd);
  if (rc != 0) {
    throw RunError{"", "cannot enter network namespace \"" + name + "\": " + std::strerror(saved)};
  }
}

// The lock is per network namespace (its inode), so runs in different namespaces proceed.
std::string lock_path(const std::string& lock_dir) {
  struct stat st {};
  if (stat("/proc/self/ns/net", &st) != 0) return lock_dir + "/etherctl.lock";
  return lock_dir + "/netns-" + std::to_string(st.st_ino) + ".lock";
}

std::string sibling_path(const std::string& lock_dir, const std::string& suffix) {
  std::string lock = lock_path(lock_dir);
  return lock.substr(0, lock.size() - std::string(".lock").size()) + suffix;
}

plan::Objects observe(const kernel::Snapshot& snapshot, const kernel::Ownership& ownership) {
  plan::Objects observed;
  for (const auto& ops : kernel::kinds()) {
    plan::Objects objects = ops.observe(snapshot, ownership);
    observed.insert(observed.end(), std::make_move_iterator(objects.begin()),
                    std::make_move_iterator(objects.end()));
  }
  return observed;
}

plan::Objects observe(kernel::Netlink& netlink, const kernel::Ownership& ownership) {
  return observe(kernel::Snapshot::read(netlink), ownership);
}

namespace {

// Virtual Location: where each pool member is and the weight it gets. Members in the other
// data center are quiesced (weight 0) while enough local members remain (location.hpp); the
// desired ipvs_member objects take the effective weights, so plan, apply and verify all see
// them. With `resolve`, members whose neighbour entry is missing or stale get an ARP/ND probe
// (the next run, or `watch` woken by the answer, sees the result).
nlohmann::json locate_members(const model::Site& site, const model::Device& device,
                              kernel::Netlink& netlink, const kernel::Snapshot& snapshot,
                              bool resolve, plan::Objects& desired) {
  nlohmann::json members = nlohmann::json::array();
  if (device.pools.empty()) return members;
  const location::Observation observation = location::read_observation(netlink, snapshot);
  std::map<std::string, int> effective;  // ipvs_member key -> weight
  for (const auto& [name, pool] : device.pools) {
    const std::string service =
        plan::ipvs_service_key(pool.protocol, pool.address.str(), pool.port);
    for (const auto& assessed : location::assess_pool(site, device, pool, observation)) {
      const model::PoolMember& member = pool.members.at(assessed.key);
      const std::string key = plan::ipvs_member_key(service, member.address.str(), member.port);
      effective[key] = assessed.effective;
      const auto& where = assessed.where;
      nlohmann::json entry = {{"pool", name},
                              {"member", assessed.key},
                              {"key", key},
                              {"path", member.path},
                              {"location", location::to_string(where.location)},
                              {"configured_weight", assessed.configured},
                              {"effective_weight", assessed.effective},
                              {"vlan_group", where.group},
                              {"mac", where.mac},
                              {"port", where.port},
                              {"reason", where.reason}};
      if (resolve && where.resolve && !where.group.empty()) {
        try {
          location::resolve_neighbour(netlink, snapshot, where.group, member.address);
          entry["resolving"] = true;
        } catch (const std::exception& e) {
          entry["resolve_error"] = e.what();  // a missing group is a plan change, not an error
        }
      }
      members.push_back(std::move(entry));
    }
  }
  for (auto& object : desired) {
    if (object.kind != plan::kIpvsMember) continue;
    auto it = effective.find(object.key);
    if (it != effective.end()) object.attrs["weight"] = it->second;
  }
  return members;
}

void execute_one(kernel::Netlink& netlink, const Change& change, const kernel::Ownership& ownership,
                 Journal& journal) {
  const auto& ops = kernel::kind_ops(change.subject().kind);
  switch (change.op) {
    case Op::Create:
      journal.begin_create(change.desired);
      ops.create(netlink, change.desired, ownership);
      journal.end_create();
      break;
    case Op::Modify:
      ops.modify(netlink, change.desired, change.observed);
      break;
    case Op::Delete:
      ops.remove(netlink, change.observed);
      break;
  }
}

std::string describe(const Change& change) {
  const Object& o = change.subject();
  return plan::to_string(change.op) + " " + o.kind + " " + o.name;
}

// Undoes the changes already done, newest first, against freshly observed state: created
// objects are removed, modified ones get their old attributes back, deleted ones come back.
// Returns the problems met on the way (empty when the kernel is back where it was).
std::vector<std::string> roll_back(kernel::Netlink& netlink, const std::vector<Change>& done,
                                   const kernel::Ownership& ownership, Journal& journal,
                                   const Trace& trace) {
  std::vector<std::string> failures;
  for (auto it = done.rbegin(); it != done.rend(); ++it) {
    const Change& change = *it;
    trace("rollback/" + plan::to_string(change.op) + "/" + change.subject().kind + " " +
          change.subject().name);
    try {
      const auto& ops = kernel::kind_ops(change.subject().kind);
      if (change.op == Op::Delete) {
        Object again = change.observed;
        journal.begin_create(again);
        ops.create(netlink, again, ownership);
        journal.end_create();
        continue;
      }
      // Find the object as the kernel holds it now.
      plan::Objects now = observe(netlink, ownership);
      const Object* current = nullptr;
      for (const auto& o : now) {
        if (o.kind == change.desired.kind && o.key == change.desired.key) current = &o;
      }
      if (!current) continue;  // already gone
      if (change.op == Op::Create) {
        ops.remove(netlink, *current);
      } else {
        Object previous = change.desired;
        for (auto& [attr, value] : previous.attrs.items()) {
          auto old = change.observed.attrs.find(attr);
          if (old != change.observed.attrs.end()) value = *old;
        }
        ops.modify(netlink, previous, *current);
      }
    } catch (const std::exception& e) {
      failures.push_back("undo of " + describe(change) + " failed: " + e.what());
    }
  }
  return failures;
}

}  // namespace

std::vector<std::string> recover(kernel::Netlink& netlink, const std::string& lock_dir) {
  std::vector<std::string> repairs =
      Journal::recover(Journal::path_for(lock_path(lock_dir)), netlink);
  for (const auto& ops : kernel::kinds()) {
    if (!ops.repair) continue;
    for (auto& repair : ops.repair(netlink)) repairs.push_back(std::move(repair));
  }
  return repairs;
}

Execution execute(kernel::Netlink& netlink, const plan::Plan& plan,
                  const kernel::Ownership& ownership, Journal& journal,
                  std::optional<size_t> fail_at_step, const Trace& trace,
                  const std::function<void(size_t, size_t, const Change&)>& on_step) {
  Execution result;
  std::vector<Change> done;
  for (size_t step = 0; step < plan.changes.size(); ++step) {
    const Change& change = plan.changes[step];
    result.executed = true;
    trace("execute/" + plan::to_string(change.op) + "/" + change.subject().kind + " " +
          change.subject().name + " (" + std::to_string(step + 1) + "/" +
          std::to_string(plan.changes.size()) + ")");
    if (on_step) on_step(step, plan.changes.size(), change);
    try {
      if (fail_at_step && *fail_at_step == step) {
        throw std::runtime_error("injected failure (test hook) at step " + std::to_string(step));
      }
      execute_one(netlink, change, ownership, journal);
      done.push_back(change);
    } catch (const std::exception& e) {
      // Kernel errors already name the operation and object; others get it here.
      bool named = dynamic_cast<const kernel::KernelError*>(&e) != nullptr;
      result.errors.push_back(
          {change.subject().path.empty() ? change.desired.path : change.subject().path,
           named ? e.what() : describe(change) + ": " + e.what()});
      result.failed_step = step;
      for (const auto& failure : roll_back(netlink, done, ownership, journal, trace)) {
        result.errors.push_back({"", failure});
      }
      result.rolled_back = true;
      break;
    }
  }
  journal.finish();
  return result;
}

}  // namespace internal

namespace {

using namespace internal;
using plan::Object;
using plan::Op;

std::string sha256_hex(const std::string& text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

// The effective configuration: what the objects are, not how the file spells or orders them.
std::string configuration_digest(const plan::Objects& desired) {
  nlohmann::json objects = nlohmann::json::array();
  for (const auto& o : desired) {
    objects.push_back({{"kind", o.kind}, {"key", o.key}, {"attrs", o.attrs}});
  }
  std::sort(objects.begin(), objects.end());
  return "sha256:" + sha256_hex(objects.dump());
}

// What the last successful apply or destroy in this namespace applied (status reports it).
std::string applied_record_path(const std::string& lock_dir) {
  return sibling_path(lock_dir, ".applied.json");
}

void record_applied(const std::string& lock_dir, const nlohmann::json& record) {
  std::string path = applied_record_path(lock_dir);
  std::ofstream out(path + ".tmp");
  out << record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)  // file name
      << "\n";
  out.close();
  if (out) std::rename((path + ".tmp").c_str(), path.c_str());  // atomic: never half a record
}

nlohmann::json read_applied(const std::string& lock_dir) {
  std::ifstream in(applied_record_path(lock_dir));
  if (!in) return nullptr;
  auto record = nlohmann::json::parse(in, nullptr, false);
  return record.is_discarded() ? nlohmann::json() : record;
}

}  // namespace

static_assert(model::kMaxTunnelMtu == datapath::kMaxTunnelMtu,
              "the site validator must refuse tunnel MTUs the datapath cannot carry");

nlohmann::json tunnel_counters() {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& tunnel : datapath::inspect()) {
    const auto& c = tunnel.counters;
    nlohmann::json drops = nlohmann::json::object();
    for (size_t i = 0; i < datapath::kDropReasons; ++i) {
      drops[std::string(datapath::drop_name(static_cast<datapath::Drop>(i)))] = c.drops[i];
    }
    out[tunnel.spec.name] = {{"tx_packets", c.tx_packets},
                             {"tx_bytes", c.tx_bytes},
                             {"rx_packets", c.rx_packets},
                             {"rx_bytes", c.rx_bytes},
                             {"rx_fragments", c.rx_fragments},
                             {"reassembled", c.reassembled},
                             {"drops", drops}};
  }
  return out;
}

namespace {

nlohmann::json status_of(const plan::Objects& desired, const plan::Objects& observed,
                         const plan::Plan& plan, const nlohmann::json& members) {
  std::map<std::string, std::string> state;  // kind:key -> state
  for (const auto& change : plan.changes) {
    const Object& o = change.subject();
    state[o.kind + ":" + o.key] = change.op == Op::Create   ? "missing"
                                  : change.op == Op::Modify ? "drifted"
                                  : change.desired.key.empty()
                                      ? "not in the site file (deleted on next apply)"
                                      : "to be re-created";
  }
  for (const auto& conflict : plan.conflicts) state["conflict:" + conflict.path] = conflict.message;
  nlohmann::json objects = nlohmann::json::array();
  std::map<std::string, const Object*> observed_by_key;
  for (const auto& o : observed) observed_by_key[o.kind + ":" + o.key] = &o;
  auto add = [&](const Object& o, const std::string& path) {
    auto it = state.find(o.kind + ":" + o.key);
    auto seen = observed_by_key.find(o.kind + ":" + o.key);
    nlohmann::json attrs = seen != observed_by_key.end() ? seen->second->attrs : o.attrs;
    attrs.erase("ifindex");
    objects.push_back({{"kind", o.kind},
                       {"name", o.name},
                       {"key", o.key},
                       {"path", path},
                       {"owned", seen != observed_by_key.end() && seen->second->owned},
                       {"state", it == state.end() ? "in sync" : it->second},
                       {"attrs", attrs}});
  };
  for (const auto& o : desired) add(o, o.path);
  nlohmann::json counters = tunnel_counters();
  for (auto& object : objects) {
    if (object["kind"] == plan::kTunnel && counters.contains(object["key"])) {
      object["counters"] = counters[object["key"].get<std::string>()];
    }
  }
  for (const auto& change : plan.changes) {
    if (change.op == Op::Delete && change.desired.key.empty() && change.reason.empty()) {
      add(change.observed, "");
    }
  }
  return {{"objects", objects}, {"members", members}};
}

std::string file_sha256(const std::string& path) {
  std::ifstream site(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(site)), std::istreambuf_iterator<char>());
  return "sha256:" + sha256_hex(text);
}

void record_success(const Options& options, const Report& report) {
  bool destroyed = options.command == Command::Destroy;
  record_applied(options.lock_dir,
                 {{"device", report.device},
                  {"command", destroyed ? "destroy" : "apply"},
                  {"digest", destroyed ? std::string() : report.digest},
                  {"site_file", options.site_file},
                  {"site_sha256", options.preloaded_site ? options.preloaded_sha256
                                                         : file_sha256(options.site_file)},
                  {"at", static_cast<int64_t>(std::time(nullptr))}});
}

// A hangup of the operator's terminal, Ctrl-C or a stop request must not interrupt a run
// half-way through its changes: they are held while it executes and verifies, and take
// effect when it is done (kill -9 cannot be held; the journal covers it).
class HoldSignals {
 public:
  HoldSignals() {
    sigset_t set;
    sigemptyset(&set);
    for (int signal : {SIGHUP, SIGINT, SIGTERM, SIGQUIT}) sigaddset(&set, signal);
    sigprocmask(SIG_BLOCK, &set, &old_);
  }
  ~HoldSignals() { sigprocmask(SIG_SETMASK, &old_, nullptr); }
  HoldSignals(const HoldSignals&) = delete;
  HoldSignals& operator=(const HoldSignals&) = delete;

 private:
  sigset_t old_;
};

// The caller's own network namespace, open before run() enters another: the revert waiter of
// `apply --confirm-within` lives there.
struct HomeNetns {
  int fd = -1;
  explicit HomeNetns(bool wanted) {
    if (wanted) fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  }
  ~HomeNetns() {
    if (fd >= 0) close(fd);
  }
  HomeNetns(const HomeNetns&) = delete;
  HomeNetns& operator=(const HomeNetns&) = delete;
};

}  // namespace

Report run(const Options& options) {
  auto started = std::chrono::steady_clock::now();
  register_kinds();
  const Trace trace{options.trace};
  trace("start");
  Report report;
  auto finish = [&](Outcome outcome) {
    report.outcome = outcome;
    report.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now() - started)
                             .count();
    return report;
  };

  std::shared_ptr<const model::Site> site_ptr = options.preloaded_site;
  if (!site_ptr) {
    model::LoadResult loaded = model::load_site_file(options.site_file);
    if (!loaded.site) {
      report.errors = loaded.problems;
      return finish(Outcome::Invalid);
    }
    site_ptr = std::make_shared<const model::Site>(std::move(*loaded.site));
  }
  const model::Site& site = *site_ptr;
  // The file is valid as a whole; a device only matters when one is asked for.
  if (options.command == Command::Validate && !options.device) return finish(Outcome::Ok);
  std::string error;
  const model::Device* device = model::select_device(site, options.device, hostname(), &error);
  if (!device) {
    report.errors.push_back({"/devices", error});
    return finish(Outcome::Invalid);
  }
  report.device = device->name;
  if (options.command == Command::Validate) return finish(Outcome::Ok);

  try {
    const bool confirm = options.command == Command::Apply && options.confirm_within;
    HomeNetns home(confirm && options.netns);
    if (options.netns) enter_netns_or_throw(*options.netns);
    RunLock lock;
    std::string holder;
    bool writes = options.command == Command::Apply || options.command == Command::Destroy;
    // Read-only commands take the lock too, so they never observe a half-applied state.
    trace("lock");
    if (!lock.acquire(lock_path(options.lock_dir), options.wait_for_lock, &holder)) {
      report.errors.push_back({"", "the lock " + lock_path(options.lock_dir) + " is held by " +
                                       holder + "; retry later or use --wait"});
      return finish(Outcome::LockHeld);
    }

    kernel::Ownership ownership{device->name};
    kernel::Netlink netlink;
    if (writes) {
      // A pending revert plans from the state before its apply: no other change may come
      // between (confirm.hpp).
      nlohmann::json pending = read_pending(options.lock_dir);
      if (!pending.is_null()) {
        report.errors.push_back(
            {"", describe_pending(pending) +
                     "; run `etherctl confirm` to keep it (or wait for its revert) and apply "
                     "again"});
        return finish(Outcome::LockHeld);
      }
      trace("recover");
      report.recovered = recover(netlink, options.lock_dir);
    }
    plan::Objects desired = options.command == Command::Destroy
                                ? plan::Objects{}
                                : plan::desired_objects(site, *device);
    // The digest covers the file's configuration, not the weights location gives members.
    report.digest = configuration_digest(desired);
    trace("observe");
    const kernel::Snapshot snapshot = kernel::Snapshot::read(netlink);
    if (options.command != Command::Destroy) {
      report.members =
          locate_members(site, *device, netlink, snapshot,
                         options.command == Command::Apply && options.resolve_neighbours, desired);
    }
    plan::Objects observed = observe(snapshot, ownership);
    trace("plan");
    report.plan = plan::make_plan(desired, observed);
    auto count_netlink = [&] {
      report.netlink_requests = netlink.read_requests() + netlink.write_requests();
      report.netlink_writes = netlink.write_requests();
    };

    if (options.command == Command::Status) {
      report.status = status_of(desired, observed, report.plan, report.members);
      report.status["digest"] = report.digest;
      report.status["in_sync"] = report.plan.empty() && report.plan.conflicts.empty();
      report.status["last_applied"] = read_applied(options.lock_dir);
      report.status["pending_confirmation"] = pending_status(read_pending(options.lock_dir));
      // A run was killed; the next apply or destroy repairs what it left (journal.hpp).
      report.status["interrupted_run"] =
          access(Journal::path_for(lock_path(options.lock_dir)).c_str(), F_OK) == 0;
    }
    if (!report.plan.conflicts.empty()) {
      report.errors = report.plan.conflicts;
      count_netlink();
      return finish(Outcome::Failed);
    }
    if (!writes) {
      count_netlink();
      return finish(Outcome::Ok);
    }
    if (options.command == Command::Apply && options.respect_revert && !report.plan.empty()) {
      const nlohmann::json last = read_applied(options.lock_dir);
      if (last.is_object() && last.value("command", "") == "revert" &&
          last.value("reverted_digest", "") == report.digest) {
        report.held_back = "configuration " + report.digest +
                           " was reverted for lack of confirmation; not applying it again "
                           "(change the site file, or run apply without --respect-revert)";
        count_netlink();
        return finish(Outcome::Ok);
      }
    }

    HoldSignals hold;
    // Armed before the first change: whatever happens to this process from here on, the
    // waiter reverts at the deadline unless confirmed.
    nlohmann::json pending;
    if (confirm && !report.plan.empty()) {
      pending = arm_revert(options, device->name, report.digest, previous_state(observed, desired),
                           home.fd);
      report.pending = pending_status(pending);
    }
    Journal journal(Journal::path_for(lock_path(options.lock_dir)));
    Execution execution = execute(netlink, report.plan, ownership, journal, options.fail_at_step,
                                  trace, options.on_step);
    report.executed = execution.executed;
    report.failed_step = execution.failed_step;
    report.rolled_back = execution.rolled_back;
    for (auto& error : execution.errors) report.errors.push_back(std::move(error));
    if (execution.failed_step) {
      if (!pending.is_null()) disarm_revert(options.lock_dir, pending);  // nothing to revert
      report.pending = nullptr;
      count_netlink();
      return finish(Outcome::Failed);
    }

    // Verify: read the kernel back; the same plan must now be empty.
    if (report.plan.empty()) {
      count_netlink();
      trace("record");
      record_success(options, report);
      trace("done");
      return finish(Outcome::Ok);
    }
    trace("verify");
    plan::Plan after = plan::make_plan(desired, observe(netlink, ownership));
    for (const auto& change : after.changes) {
      report.errors.push_back(
          {change.desired.path, "verify: " + describe(change) + " is still needed after apply"});
    }
    count_netlink();
    trace("record");
    if (report.errors.empty()) record_success(options, report);
    trace("done");
    return finish(report.errors.empty() ? Outcome::Ok : Outcome::Failed);
  } catch (const RunError& e) {
    report.errors.push_back({e.path, e.message});
  } catch (const std::exception& e) {
    report.errors.push_back({"", e.what()});
  }
  return finish(Outcome::Failed);
}

LoadedSite load(const std::string& site_file) {
  LoadedSite out;
  model::LoadResult loaded = model::load_site_file(site_file);
  out.problems = loaded.problems;
  if (loaded.site) out.site = std::make_shared<const model::Site>(std::move(*loaded.site));
  out.sha256 = file_sha256(site_file);
  return out;
}

void enter_netns(const std::string& name) {
  try {
    enter_netns_or_throw(name);
  } catch (const RunError& e) {
    throw std::runtime_error(e.message);
  }
}

nlohmann::json report_json(const Report& report, Command command) {
  nlohmann::json errors = nlohmann::json::array();
  for (const auto& e : report.errors) errors.push_back({{"path", e.path}, {"message", e.message}});
  nlohmann::json out = {
      {"changed", report.changed()},
      {"device", report.device},
      {"summary", plan::summary_json(report.plan)},
      {"changes", plan::changes_json(report.plan)},
      {"errors", errors},
      {"duration_ms", report.duration_ms},
      {"digest", report.digest},
      {"netlink", {{"requests", report.netlink_requests}, {"writes", report.netlink_writes}}}};
  if (!report.members.empty()) out["members"] = report.members;
  if (report.rolled_back) out["rolled_back"] = true;
  if (report.failed_step) out["failed_step"] = *report.failed_step;
  if (command == Command::Status) out["status"] = report.status;
  if (!report.recovered.empty()) out["recovered"] = report.recovered;
  if (!report.pending.is_null()) out["pending_confirmation"] = report.pending;
  if (!report.held_back.empty()) out["held_back"] = report.held_back;
  return out;
}

}  // namespace etherctl::engine
