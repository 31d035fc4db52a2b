// libFuzzer target: arbitrary bytes -> site parser and validator (model::load_site) -> the
// desired objects and plans of every device of a valid site. No kernel, no files.
//
// Invariants (a violation prints what and aborts, which libFuzzer reports as a crash):
//   - loading never throws; a site is returned exactly when there are no problems;
//   - every problem has a message and a JSON pointer path that is "" or starts with "/" (with
//     "~" only as "~0" or "~1"); path and message are valid UTF-8 (the CLI prints them as JSON);
//   - when the text is well-formed JSON without duplicate keys, every pointer names a value
//     that exists in the document;
//   - for every device of a valid site: select_device finds it; each desired object has a known
//     kind, a key, a pointer into the document and no identity shared with another object;
//     planning against an empty kernel creates (or reports conflicts), never modifies or
//     deletes; planning against a kernel that already holds exactly the desired objects is
//     empty and conflict-free; against a kernel with just the adopted interfaces, every create
//     comes after the creation of the interfaces it refers to; plans render as text and JSON;
//   - a unit of a failover group: the above for both roles; the unit is its peer's peer, in the
//     same group; the standby's objects are exactly the active's without its gated ports and
//     floating self IPs (a transition changes nothing else); only ports are gated; the group's
//     shared configuration (the digest both units compare) serialises.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "model/failover.hpp"
#include "model/site.hpp"
#include "plan/plan.hpp"
#include "plan/render.hpp"

namespace {

using etherctl::model::Problems;
using nlohmann::json;
namespace plan = etherctl::plan;

[[noreturn]] void violated(const char* what, const std::string& detail) {
  std::fprintf(stderr, "site_fuzzer: invariant violated: %s\n  %s\n", what, detail.c_str());
  std::abort();
}

#define CHECK(condition, detail)                    \
  do {                                              \
    if (!(condition)) violated(#condition, detail); \
  } while (0)

bool valid_utf8(const std::string& text) {
  try {
    (void)json(text).dump();
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

bool well_formed_pointer(const std::string& pointer) {
  if (pointer.empty()) return true;
  if (pointer.front() != '/') return false;
  for (size_t i = 0; i < pointer.size(); ++i) {
    if (pointer[i] == '~' &&
        (i + 1 == pointer.size() || (pointer[i + 1] != '0' && pointer[i + 1] != '1'))) {
      return false;
    }
  }
  return true;
}

bool resolves(const json& document, const std::string& pointer) {
  try {
    (void)document.at(json::json_pointer(pointer));
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

std::string describe(const Problems& problems) {
  std::string out;
  for (const auto& p : problems) out += "\n    " + p.path + ": " + p.message;
  return out;
}

// Links share one name space whatever their kind (see plan.cpp).
std::string identity(const plan::Object& o) {
  return (plan::kind_traits(o.kind).is_link ? std::string("link") : o.kind) + ":" + o.key;
}

void check_plan_renders(const plan::Plan& p) {
  (void)plan::render_text(p, false);
  (void)plan::render_text(p, true);
  (void)plan::changes_json(p).dump();
  (void)plan::summary_json(p).dump();
}

// The interface names a desired object needs to exist before it can be created.
std::vector<std::string> needed_links(const plan::Object& o) {
  std::vector<std::string> links;
  auto add = [&](const char* attr) {
    auto it = o.attrs.find(attr);
    if (it != o.attrs.end() && it->is_string() && !it->get<std::string>().empty()) {
      links.push_back(it->get<std::string>());
    }
  };
  if (o.kind == plan::kPort) {
    add("bridge");
    add("link");
  } else if (o.kind != plan::kTunnel) {
    add("interface");  // a tagged VLAN's parent, a self IP's or a route's interface
  }
  return links;
}

void check_device(const json& document, const etherctl::model::Site& site,
                  const etherctl::model::Device& device, plan::Role role) {
  std::string error;
  const auto* selected = etherctl::model::select_device(site, device.name, "", &error);
  CHECK(selected == &device, "device " + device.name + ": " + error);

  plan::Objects desired = plan::desired_objects(site, device, role);
  std::set<std::string> identities;
  for (const auto& o : desired) {
    std::string what = o.kind + " " + o.key + " (" + o.path + ")";
    CHECK(!o.key.empty(), what);
    CHECK(!o.path.empty() && well_formed_pointer(o.path), what);
    CHECK(resolves(document, o.path), what);
    CHECK(identities.insert(identity(o)).second, "two desired objects are " + what);
    CHECK(valid_utf8(o.attrs.dump()), what);
  }

  // An empty kernel: everything is created, or a conflict (adopted interfaces are missing).
  plan::Plan fresh = plan::make_plan(desired, {});
  for (const auto& change : fresh.changes) {
    CHECK(change.op == plan::Op::Create, plan::to_string(change.op) + " " + change.desired.key);
  }
  for (const auto& conflict : fresh.conflicts) {
    CHECK(well_formed_pointer(conflict.path) && resolves(document, conflict.path),
          conflict.path + ": " + conflict.message);
  }
  check_plan_renders(fresh);

  // A kernel that holds exactly what the file wants (adopted interfaces unowned): no change.
  plan::Objects same = desired;
  for (auto& o : same) {
    o.owned = !o.adopted;
    o.adopted = false;
  }
  plan::Plan again = plan::make_plan(desired, same);
  CHECK(again.changes.empty() && again.conflicts.empty(),
        "planning against the desired state itself is not empty:\n" +
            plan::render_text(again, false) + describe(again.conflicts));
  CHECK(again.unchanged == static_cast<int>(desired.size()), "unchanged count");

  // A kernel with only the adopted interfaces: creates in an order the kernel accepts.
  plan::Objects adopted_only;
  std::set<std::string> present;
  for (const auto& o : desired) {
    if (!o.adopted) continue;
    adopted_only.push_back(o);
    adopted_only.back().adopted = false;
    present.insert(o.key);
  }
  plan::Plan first = plan::make_plan(desired, adopted_only);
  CHECK(first.conflicts.empty(),
        "conflicts on a kernel with the adopted interfaces:" + describe(first.conflicts));
  for (const auto& change : first.changes) {
    CHECK(change.op == plan::Op::Create, plan::to_string(change.op) + " " + change.desired.key);
    for (const auto& link : needed_links(change.desired)) {
      CHECK(present.count(link), change.desired.kind + " " + change.desired.key +
                                     " is created before interface \"" + link + "\"");
    }
    if (plan::kind_traits(change.desired.kind).is_link) present.insert(change.desired.key);
  }
  check_plan_renders(first);
}

// The two roles of a unit of a failover group against each other (the engine plans the unit's
// runs with one of them: lib/engine/failover.cpp).
void check_failover_unit(const etherctl::model::Site& site, const etherctl::model::Device& device,
                         const etherctl::model::FailoverGroup& group) {
  namespace model = etherctl::model;
  const model::Device* peer = model::failover_peer(site, device);
  CHECK(peer && peer != &device, "unit " + device.name + " has no peer");
  CHECK(model::failover_peer(site, *peer) == &device, "the peer of " + device.name + "'s peer");
  CHECK(model::failover_group_of(site, *peer) == &group, "the group of " + device.name + "'s peer");
  CHECK(valid_utf8(model::shared_configuration(site, group).dump()), "group " + group.name);

  std::map<std::string, const plan::Object*> active;
  const plan::Objects active_objects = plan::desired_objects(site, device, plan::Role::Active);
  const plan::Objects standby = plan::desired_objects(site, device, plan::Role::Standby);
  for (const auto& o : active_objects) {
    active[identity(o)] = &o;
    CHECK(!o.attrs.value("gated", false) || o.kind == plan::kPort, "gated " + identity(o));
  }
  for (const auto& o : standby) {
    auto it = active.find(identity(o));
    CHECK(it != active.end(), "the standby's " + identity(o) + " is not the active's");
    CHECK(it->second->attrs == o.attrs && it->second->path == o.path,
          identity(o) + " differs between the roles: " + it->second->attrs.dump() + " / " +
              o.attrs.dump());
    CHECK(!o.attrs.value("gated", false) && !o.attrs.value("floating", false),
          "the standby has " + identity(o));
    active.erase(it);
  }
  for (const auto& [id, o] : active) {
    const bool gated = o->kind == plan::kPort && o->attrs.value("gated", false);
    const bool floating = o->kind == plan::kSelfIp && o->attrs.value("floating", false);
    CHECK(gated || floating, "only the active role has " + id);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  etherctl::model::LoadResult result = etherctl::model::load_site(text);

  CHECK(result.site.has_value() == result.problems.empty(), describe(result.problems));
  bool duplicate_keys = false;
  for (const auto& p : result.problems) {
    CHECK(!p.message.empty(), p.path);
    CHECK(well_formed_pointer(p.path), p.path + ": " + p.message);
    CHECK(valid_utf8(p.path), "path of: " + p.message);
    CHECK(valid_utf8(p.message), "message at " + p.path);
    if (p.message.rfind("duplicate key", 0) == 0) duplicate_keys = true;
  }

  // Pointers name real places: checked against nlohmann's own reading of the text. Duplicate
  // keys are excluded (nlohmann keeps the last value, so an earlier one's pointer may vanish).
  json document = json::parse(text, nullptr, false);
  if (document.is_discarded()) {
    CHECK(!result.site, "invalid JSON accepted");
    return 0;
  }
  if (!duplicate_keys) {
    for (const auto& p : result.problems) {
      CHECK(resolves(document, p.path), p.path + ": " + p.message);
    }
  }
  if (!result.site) return 0;
  const etherctl::model::Site& site = *result.site;
  for (const auto& [name, device] : site.devices) {
    const etherctl::model::FailoverGroup* group = etherctl::model::failover_group_of(site, device);
    check_device(document, site, device, plan::Role::Active);
    if (!group) continue;
    check_device(document, site, device, plan::Role::Standby);
    check_failover_unit(site, device, *group);
  }
  return 0;
}
