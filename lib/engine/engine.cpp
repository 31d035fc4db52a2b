#include "engine/engine.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "datapath/datapath.hpp"
#include "datapath/host.hpp"
#include "datapath/tunnel_kind.hpp"
#include "engine/confirm.hpp"
#include "engine/failover.hpp"
#include "engine/internal.hpp"
#include "engine/journal.hpp"
#include "engine/lock.hpp"
#include "failover/keepalived_kind.hpp"
#include "ipsec/connection.hpp"
#include "ipsec/connection_kind.hpp"
#include "kernel/kind.hpp"
#include "kernel/snapshot.hpp"
#include "kernel/xfrm_states.hpp"
#include "location/location.hpp"
#include "location/observe.hpp"
#include "model/failover.hpp"
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
  static const bool registered = (kernel::register_kind(datapath::tunnel_kind_ops()),
                                  kernel::register_kind(ipsec::connection_kind_ops()),
                                  kernel::register_kind(failover::keepalived_kind_ops()), true);
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

// Runs `join`, the creation of `object`; through the gate when it is a gated port (false when
// the gate refused: the unit is no longer active, or no agent's gate is there).
bool through_gate(const JoinGate& gate, const Object& object, const std::function<void()>& join) {
  if (object.kind != plan::kPort || !gate.ports.count(object.key)) {
    join();
    return true;
  }
  return gate.pass && gate.pass(join);
}

const char* const kRefused =
    "not joined: the unit is not (or no longer) the active unit of its failover group, or "
    "this run is not its agent's (only the agent joins the segments, through its role gate); "
    "the next run applies the role the unit has now";

// Undoes the changes already done, newest first, against freshly observed state: created
// objects are removed, modified ones get their old attributes back, deleted ones come back.
// Returns the problems met on the way (empty when the kernel is back where it was).
std::vector<std::string> roll_back(kernel::Netlink& netlink, const std::vector<Change>& done,
                                   const kernel::Ownership& ownership, Journal& journal,
                                   const JoinGate& gate, const Trace& trace) {
  std::vector<std::string> failures;
  for (auto it = done.rbegin(); it != done.rend(); ++it) {
    const Change& change = *it;
    trace("rollback/" + plan::to_string(change.op) + "/" + change.subject().kind + " " +
          change.subject().name);
    try {
      const auto& ops = kernel::kind_ops(change.subject().kind);
      if (change.op == Op::Delete) {
        Object again = change.observed;
        const bool created = through_gate(gate, again, [&] {
          journal.begin_create(again);
          ops.create(netlink, again, ownership);
          journal.end_create();
        });
        if (!created) failures.push_back("undo of " + describe(change) + ": " + kRefused);
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

std::vector<std::string> recover(kernel::Netlink& netlink, const StateDir& state) {
  std::vector<std::string> repairs = Journal::recover(state.journal(), netlink);
  for (const auto& ops : kernel::kinds()) {
    if (!ops.repair) continue;
    for (auto& repair : ops.repair(netlink)) repairs.push_back(std::move(repair));
  }
  return repairs;
}

Execution execute(kernel::Netlink& netlink, const plan::Plan& plan,
                  const kernel::Ownership& ownership, Journal& journal, const JoinGate& gate,
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
      const auto one = [&] { execute_one(netlink, change, ownership, journal); };
      if (change.op == Op::Create && !through_gate(gate, change.desired, one)) {
        result.refused.push_back({change.desired.path, describe(change) + ": " + kRefused});
        continue;
      }
      if (change.op != Op::Create) one();
      done.push_back(change);
    } catch (const std::exception& e) {
      // Kernel errors already name the operation and object; others get it here.
      bool named = dynamic_cast<const kernel::KernelError*>(&e) != nullptr;
      result.errors.push_back(
          {change.subject().path.empty() ? change.desired.path : change.subject().path,
           named ? e.what() : describe(change) + ": " + e.what()});
      result.failed_step = step;
      for (const auto& failure : roll_back(netlink, done, ownership, journal, gate, trace)) {
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

std::string file_sha256(const std::string& path) {
  std::ifstream site(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(site)), std::istreambuf_iterator<char>());
  return "sha256:" + sha256_hex(text);
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
    // A tunnel with IPsec (its connection file is there): its SAs as charon reports them.
    if (::access(ipsec::Settings::current().file_of(tunnel.spec.name).c_str(), F_OK) == 0) {
      auto& sa = out[tunnel.spec.name]["ipsec"] = ipsec::sa_status(tunnel.spec.name);
      sa["connection_loaded"] = true;
      // SAs up but nothing decrypted: the kernel cannot decrypt on the tunnel's receive path.
      if (std::string why = datapath::esp_gro_missing(); !why.empty()) sa["receive_problem"] = why;
    } else if (tunnel.spec.ipsec_reqid != 0) {
      // The datapath demands IPsec but no connection is loaded here: the standby of a failover
      // pair (the active unit holds the connection), or a tunnel whose connection the next
      // apply loads. The kernel's states of the tunnel say what is left: none, or a larval one
      // (a packet met the blocking policy; the kernel drops it within xfrm_acq_expires).
      const auto states = kernel::xfrm_states_of(tunnel.spec.ipsec_reqid);
      const auto larval = std::count_if(states.begin(), states.end(),
                                        [](const kernel::XfrmState& s) { return s.spi == 0; });
      out[tunnel.spec.name]["ipsec"] = {{"established", false},
                                        {"connection_loaded", false},
                                        {"xfrm_states", states.size()},
                                        {"larval_states", larval}};
    }
  }
  return out;
}

namespace {

// A tunnel object of `status` gets its datapath counters, and its IPsec state beside them.
void attach_counters(nlohmann::json& object, const nlohmann::json& counters) {
  const std::string key = object["key"].get<std::string>();
  if (!counters.contains(key)) return;
  nlohmann::json c = counters[key];
  if (c.contains("ipsec")) {
    object["ipsec"] = c["ipsec"];
    c.erase("ipsec");
  }
  object["counters"] = c;
}

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
    if (object["kind"] == plan::kTunnel) attach_counters(object, counters);
  }
  for (const auto& change : plan.changes) {
    if (change.op == Op::Delete && change.desired.key.empty() && change.reason.empty()) {
      add(change.observed, "");
    }
  }
  return {{"objects", objects}, {"members", members}};
}

// `status` without a site file: what etherctl owns here, from the kernel's own marks (link alias
// etherctl:<device>, address and route protocol 231, the IPVS timeout mark), like `wg show`.
// Each object names the device whose mark its link carries (the site file's device name).
nlohmann::json owned_objects(const plan::Objects& observed, const kernel::Snapshot& snapshot) {
  const std::string_view prefix = kernel::Ownership::kLinkAliasPrefix;
  std::map<std::string, std::string> device_of_link;
  for (const auto& link : snapshot.links) {
    if (link.alias.starts_with(prefix))
      device_of_link[link.name] = link.alias.substr(prefix.size());
  }
  const nlohmann::json counters = tunnel_counters();
  nlohmann::json objects = nlohmann::json::array();
  for (const auto& o : observed) {
    // Ports of etherctl's bridges count too: those of the interfaces it adopts carry no mark
    // of their own (nor do those a hypervisor adds, which it never touches).
    const bool port_of_ours =
        o.kind == plan::kPort && device_of_link.count(o.attrs.value("bridge", "")) > 0;
    if (!o.owned && !port_of_ours) continue;
    const std::string link = plan::kind_traits(o.kind).is_link ? o.key
                             : o.kind == plan::kPort           ? o.attrs.value("bridge", "")
                                                               : o.attrs.value("interface", "");
    auto device = device_of_link.find(link);
    nlohmann::json attrs = o.attrs;
    attrs.erase("ifindex");
    nlohmann::json object = {
        {"kind", o.kind},   {"name", o.name},
        {"key", o.key},     {"device", device == device_of_link.end() ? "" : device->second},
        {"owned", o.owned}, {"state", o.owned ? "owned" : "port of an etherctl bridge"},
        {"attrs", attrs}};
    if (o.kind == plan::kTunnel) attach_counters(object, counters);
    objects.push_back(std::move(object));
  }
  return objects;
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

// What one run carries from step to step. The steps below are in the order run() calls them;
// each returns false when the run stops there (report.outcome says why).
struct Run {
  explicit Run(const Options& run_options) : options(run_options) {}
  const Options& options;
  const Trace trace{options.trace};
  const std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  Report report;
  std::shared_ptr<const model::Site> site;
  const model::Device* device = nullptr;
  std::optional<HomeNetns> home;  // apply --confirm-within: where its waiter lives
  std::optional<StateDir> state;  // of the namespace the run acts on
  RunLock lock;
  std::optional<kernel::Netlink> netlink;
  kernel::Ownership ownership;
  plan::Objects desired;
  plan::Objects observed;
  FailoverRun failover;  // the device's failover group and role, if any

  // `status` without a site file lists what etherctl owns (any device's marks), compares nothing.
  bool without_site() const { return !site; }
  bool writes() const {
    return options.command == Command::Apply || options.command == Command::Destroy;
  }
  bool confirm() const { return options.command == Command::Apply && options.confirm_within; }
  bool stop(Outcome outcome) {
    report.outcome = outcome;
    return false;
  }
  Report finish() {
    if (netlink) {
      report.netlink_requests = netlink->read_requests() + netlink->write_requests();
      report.netlink_writes = netlink->write_requests();
    }
    report.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now() - started)
                             .count();
    return std::move(report);
  }
};

// Parse and validate the site file (or take the one `watch` keeps).
bool parse(Run& run) {
  run.site = run.options.preloaded_site;
  if (run.site) return true;
  if (run.options.command == Command::Status && run.options.site_file.empty()) return true;
  model::LoadResult loaded = model::load_site_file(run.options.site_file);
  if (!loaded.site) {
    run.report.errors = loaded.problems;
    return run.stop(Outcome::Invalid);
  }
  run.site = std::make_shared<const model::Site>(std::move(*loaded.site));
  return true;
}

// The device of the site file this host is.
bool select(Run& run) {
  if (run.without_site()) return true;  // every device's objects (Ownership{""})
  std::string error;
  run.device = model::select_device(*run.site, run.options.device, hostname(), &error);
  if (!run.device) {
    run.report.errors.push_back({"/devices", error});
    return run.stop(Outcome::Invalid);
  }
  run.report.device = run.device->name;
  run.ownership = kernel::Ownership{run.device->name};
  return true;
}

// Enter the namespace and take its lock. Read-only commands lock too, so they never observe a
// half-applied state.
bool lock(Run& run) {
  run.home.emplace(run.confirm() && run.options.netns);
  if (run.options.netns) enter_netns_or_throw(*run.options.netns);
  run.state = StateDir::of_current_netns(run.options.lock_dir);
  run.trace("lock");
  if (!run.lock.acquire(run.state->lock(), run.options.wait_for_lock)) {
    run.report.errors.push_back({"", run.lock.refusal()});
    return run.stop(Outcome::LockHeld);
  }
  run.netlink.emplace();
  return true;
}

// Runs that write: refuse while an apply awaits confirmation (its revert plans from the state
// before it: no other change may come between, confirm.hpp), then repair what a killed run
// left (journal.hpp).
bool recover(Run& run) {
  if (!run.writes()) return true;
  nlohmann::json pending = read_pending(*run.state);
  if (!pending.is_null()) {
    run.report.errors.push_back(
        {"", describe_pending(pending) +
                 "; run `etherctl confirm` to keep it (or wait for its revert) and apply again"});
    return run.stop(Outcome::LockHeld);
  }
  run.trace("recover");
  run.report.recovered = internal::recover(*run.netlink, *run.state);
  return true;
}

// Desired objects of the device, and every object the kernel holds (one dump per family).
void observe(Run& run, const kernel::Snapshot& snapshot) {
  run.observed = internal::observe(snapshot, run.ownership);
  if (run.without_site()) return;
  const model::Site& site = *run.site;
  const model::Device& device = *run.device;
  run.failover = failover_run(*run.state, site, device, run.options.role);
  const bool destroy = run.options.command == Command::Destroy;
  if (!destroy) {
    run.desired = run.failover.group ? failover_desired(run.failover, site, device, run.observed)
                                     : plan::desired_objects(site, device);
  }
  // The digest covers the file's configuration: not the weights location gives members, not
  // the role of a failover unit.
  run.report.digest =
      configuration_digest(destroy ? plan::Objects{} : plan::desired_objects(site, device));
  if (run.failover.group) {
    run.report.group_digest =
        "sha256:" + sha256_hex(model::shared_configuration(site, *run.failover.group).dump());
  }
  run.report.failover = failover_status(run.failover, run.report.group_digest);
}

// Virtual Location of pool members: their effective weights join the desired objects.
void locate(Run& run, const kernel::Snapshot& snapshot) {
  if (run.options.command == Command::Destroy || run.without_site()) return;
  const bool resolve = run.options.command == Command::Apply && run.options.resolve_neighbours;
  run.report.members =
      locate_members(*run.site, *run.device, *run.netlink, snapshot, resolve, run.desired);
}

// Desired against observed; conflicts with foreign objects stop the run (after status).
void make_plan(Run& run) {
  if (run.without_site()) return;
  run.trace("plan");
  run.report.plan = plan::make_plan(run.desired, run.observed);
}

// `status`: each object's state, the digests, a pending confirmation, an interrupted run.
// Without a site file: what etherctl owns here, nothing compared.
void status(Run& run, const kernel::Snapshot& snapshot) {
  Report& report = run.report;
  if (run.without_site()) {
    report.status = {{"site_file", nullptr},
                     {"objects", owned_objects(run.observed, snapshot)},
                     {"members", nlohmann::json::array()}};
  } else {
    report.status = status_of(run.desired, run.observed, report.plan, report.members);
    report.status["site_file"] = run.options.site_file;
    report.status["digest"] = report.digest;
    report.status["in_sync"] = report.plan.empty() && report.plan.conflicts.empty();
    if (!report.failover.is_null()) report.status["failover"] = report.failover;
  }
  report.status["last_applied"] = StateDir::read(run.state->applied());
  report.status["pending_confirmation"] = pending_status(read_pending(*run.state));
  // A run was killed; the next apply or destroy repairs it (journal.hpp).
  report.status["interrupted_run"] = access(run.state->journal().c_str(), F_OK) == 0;
}

// `apply --respect-revert`: the configuration last reverted for lack of confirmation stays
// reverted (the reconcile timer and `watch` must not undo a revert).
bool respect_revert(Run& run) {
  if (!run.options.respect_revert || run.options.command != Command::Apply ||
      run.report.plan.empty()) {
    return true;
  }
  const nlohmann::json last = StateDir::read(run.state->applied());
  if (!last.is_object() || last.value("command", "") != "revert" ||
      last.value("reverted_digest", "") != run.report.digest) {
    return true;
  }
  run.report.held_back = "configuration " + run.report.digest +
                         " was reverted for lack of confirmation; not applying it again "
                         "(change the site file, or run apply without --respect-revert)";
  return run.stop(Outcome::Ok);
}

// The plan's changes, in order, undone on failure. With --confirm-within the revert is armed
// before the first change: whatever happens to this process from then on, the waiter reverts
// at the deadline unless confirmed.
bool execute(Run& run) {
  Report& report = run.report;
  const plan::Objects active = plan::desired_objects(*run.site, *run.device, plan::Role::Active);
  internal::JoinGate gate;
  if (run.failover.group) {
    for (const auto& o : active) {
      if (o.kind == plan::kPort && o.attrs.value("gated", false)) gate.ports.insert(o.key);
    }
    gate.pass = run.options.join_gate;
  }
  nlohmann::json pending;
  if (run.confirm() && !report.plan.empty()) {
    const plan::Objects previous = previous_state(run.observed, run.desired);
    pending = arm_revert(
        run.options, *run.state, run.device->name, report.digest, previous,
        revert_gated_ports(previous, run.observed, run.failover.group != nullptr, active),
        run.home->fd);
    report.pending = pending_status(pending);
  }
  Journal journal(run.state->journal());
  Execution execution = internal::execute(*run.netlink, report.plan, run.ownership, journal, gate,
                                          run.options.fail_at_step, run.trace, run.options.on_step);
  report.executed = execution.executed;
  report.failed_step = execution.failed_step;
  report.rolled_back = execution.rolled_back;
  for (auto& error : execution.errors) report.errors.push_back(std::move(error));
  for (auto& refused : execution.refused) report.errors.push_back(std::move(refused));
  if (!execution.failed_step && execution.refused.empty()) return true;
  if (!pending.is_null()) disarm_revert(*run.state, pending);  // nothing to revert
  report.pending = nullptr;
  return run.stop(Outcome::Failed);
}

// Read the kernel back: the same plan must now be empty.
bool verify(Run& run) {
  if (run.report.plan.empty()) return true;
  run.trace("verify");
  plan::Plan after = plan::make_plan(run.desired, internal::observe(*run.netlink, run.ownership));
  for (const auto& change : after.changes) {
    run.report.errors.push_back(
        {change.desired.path, "verify: " + describe(change) + " is still needed after apply"});
  }
  return run.report.errors.empty() || run.stop(Outcome::Failed);
}

// What this namespace now runs, for status and --respect-revert.
void record(Run& run) {
  run.trace("record");
  const Options& options = run.options;
  const bool destroyed = options.command == Command::Destroy;
  try {
    StateDir::write(run.state->applied(),
                    {{"device", run.report.device},
                     {"command", destroyed ? "destroy" : "apply"},
                     {"digest", destroyed ? std::string() : run.report.digest},
                     {"site_file", options.site_file},
                     {"site_sha256", options.preloaded_site ? options.preloaded_sha256
                                                            : file_sha256(options.site_file)},
                     {"at", static_cast<int64_t>(std::time(nullptr))}});
  } catch (const std::exception&) {
    // Only status's "last applied" line is lost; the kernel is as the file says.
  }
  failover_cleanup(*run.state, run.failover.group && !destroyed);
  run.trace("done");
}

bool awaits_ipsec(const Run& run) {
  return run.options.command == Command::Apply &&
         std::any_of(run.desired.begin(), run.desired.end(),
                     [](const plan::Object& o) { return o.kind == plan::kIpsecConnection; });
}

// Apply waits for the SAs of each IPsec tunnel. One that does not come up (the peer is not
// configured yet, or refuses us: a wrong key) is reported, not rolled back: the configuration
// is right, charon (or the next apply) tries again, and the policies keep the tunnel from
// sending in clear.
void await_ipsec(Run& run, ipsec::NegotiationLog& log) {
  std::vector<std::string> tunnels;
  std::map<std::string, std::string> paths;
  for (const auto& o : run.desired) {
    if (o.kind != plan::kIpsecConnection) continue;
    tunnels.push_back(o.key);
    paths[o.key] = o.path;
  }
  std::set<std::string> loaded_now;  // charon starts these by itself
  for (const auto& change : run.report.plan.changes)
    if (change.op != plan::Op::Delete && change.desired.kind == plan::kIpsecConnection)
      loaded_now.insert(change.desired.key);
  run.trace("ipsec");
  std::map<std::string, std::string> problems =
      ipsec::await_established(tunnels, run.options.ipsec_wait, log, loaded_now);
  // Without ESP GRO the datapath cannot decrypt what the tunnels receive (lib/datapath/README.md).
  if (std::string why = datapath::esp_gro_missing(); !why.empty())
    for (const auto& tunnel : tunnels)
      problems[tunnel] += (problems[tunnel].empty() ? "" : "; ") + why;
  for (const auto& [tunnel, why] : problems)
    run.report.warnings.push_back({paths[tunnel], "tunnel " + tunnel + ": " + why});
}

}  // namespace

// The data flow of every command; commands differ only in where they stop (engine.hpp).
Report run(const Options& options) {
  register_kinds();
  Run run(options);
  run.trace("start");
  const Command command = options.command;
  if (!parse(run)) return run.finish();
  // The file is valid as a whole; a device only matters when one is asked for.
  if (command == Command::Validate && !options.device) return run.finish();
  if (!select(run) || command == Command::Validate) return run.finish();
  try {
    if (!lock(run) || !recover(run)) return run.finish();
    run.trace("observe");
    const kernel::Snapshot snapshot = kernel::Snapshot::read(*run.netlink);
    observe(run, snapshot);
    locate(run, snapshot);
    make_plan(run);
    if (command == Command::Status) status(run, snapshot);
    if (run.without_site()) return run.finish();  // status: nothing to compare
    if (!run.report.plan.conflicts.empty()) {
      run.report.errors = run.report.plan.conflicts;
      run.stop(Outcome::Failed);
      return run.finish();
    }
    if (!run.writes() || !respect_revert(run)) return run.finish();
    HoldSignals hold;
    // Listening to charon before execute loads its connections (ipsec::NegotiationLog).
    std::optional<ipsec::NegotiationLog> ipsec_log;
    if (awaits_ipsec(run)) ipsec_log.emplace();
    if (execute(run) && verify(run)) {
      record(run);
      if (ipsec_log) await_ipsec(run, *ipsec_log);
    }
  } catch (const RunError& e) {
    run.report.errors.push_back({e.path, e.message});
    run.stop(Outcome::Failed);
  } catch (const std::exception& e) {
    run.report.errors.push_back({"", e.what()});
    run.stop(Outcome::Failed);
  }
  return run.finish();
}

LoadedSite load(const std::string& site_file) {
  LoadedSite out;
  model::LoadResult loaded = model::load_site_file(site_file);
  out.problems = loaded.problems;
  if (loaded.site) out.site = std::make_shared<const model::Site>(std::move(*loaded.site));
  out.sha256 = file_sha256(site_file);
  return out;
}

std::string host_name() { return hostname(); }

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
  if (!report.warnings.empty()) {
    nlohmann::json warnings = nlohmann::json::array();
    for (const auto& w : report.warnings)
      warnings.push_back({{"path", w.path}, {"message", w.message}});
    out["warnings"] = warnings;
  }
  if (!report.failover.is_null()) out["failover"] = report.failover;
  return out;
}

}  // namespace etherctl::engine
