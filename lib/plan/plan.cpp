#include "plan/plan.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>

namespace etherctl::plan {

namespace {

const std::vector<KindTraits> kTraits = {
    {kVlan, 0, true, {"interface", "tag", "mtu", "up"}, {"interface", "tag"}},
    {kVlanGroup, 0, true, {"mtu", "up"}, {}},
    // Before the tunnel: with IPsec its datapath must never find the way out open.
    {kIpsecPolicy, 1, false, {"reqid", "mode", "directions", "exact"}, {}},
    {kTunnel,
     2,
     true,
     {"local", "remote", "mtu", "accept_reversed", "fast_path", "clamp_tcp_mss", "underlay", "up",
      "attached", "link_settings", "ipsec_reqid", "esp_headroom"},
     {}},
    {kSelfIp, 3, false, {}, {}},
    {kRoute, 4, false, {"gateway", "interface"}, {}},
    // After the tunnel (the decrypted packets need its receive path) and after the local
    // endpoint address and the routes (charon initiates at once from that address: a floating
    // one is there only on the active unit). Removed before them: the peer is told.
    {kIpsecConnection,
     5,
     false,
     {"local", "remote", "local_id", "remote_id", "mode", "reqid", "ike_proposal", "esp_proposal",
      "ike_rekey", "child_rekey", "dpd", "psk_file", "psk_fingerprint", "certificate", "key", "ca",
      "loaded"},
     {}},
    {kIpvsService, 6, false, {"scheduler"}, {}, true},
    {kIpvsMember, 7, false, {"weight", "forward"}, {}},
    {kIpvsSync, 7, false, {"interface", "syncid"}, {"interface", "syncid"}, true},
    // Ports join their bridges after every other change and leave before any: a segment is
    // joined to another only once everything on this host is ready for it (addresses
    // announced), and split off before anything is taken away. A failover unit that goes
    // standby thus stops forwarding before it gives up its floating addresses, and one that
    // becomes active takes them before it forwards (docs/failover.md).
    {kPort, 8, false, {}, {}},
    // The election starts once everything is in place, and stops before anything goes.
    {kKeepalived, 9, false, {"config_digest", "config_file"}, {"config_file"}},
};

// Links share one name space (the interface name), whatever their kind.
std::string identity(const Object& o) {
  return (kind_traits(o.kind).is_link ? std::string("link") : o.kind) + ":" + o.key;
}

// The interface names an object depends on (it vanishes with them).
std::vector<std::string> links_referenced(const Object& o) {
  std::vector<std::string> links;
  for (const char* attr : {"bridge", "link", "interface"}) {
    if (o.kind == kVlan && std::string(attr) == "interface") continue;  // a parent survives
    auto it = o.attrs.find(attr);
    if (it != o.attrs.end() && it->is_string() && !it->get<std::string>().empty()) {
      links.push_back(it->get<std::string>());
    }
  }
  return links;
}

// Compared attributes that the desired object sets and the observed one does not match.
std::vector<std::string> differences(const Object& desired, const Object& observed) {
  std::vector<std::string> differing;
  for (const auto& attr : kind_traits(desired.kind).compared) {
    auto want = desired.attrs.find(attr);
    if (want == desired.attrs.end()) continue;  // not managed
    auto have = observed.attrs.find(attr);
    // The kernel layer leaves out what the kernel does not report; "" means "none" here.
    bool absent = have == observed.attrs.end();
    bool want_none = want->is_string() && want->get_ref<const std::string&>().empty();
    if (absent ? !want_none : *have != *want) differing.push_back(attr);
  }
  return differing;
}

std::string describe_link(const Object& o) {
  auto type = o.attrs.find("type");
  std::string kind = type != o.attrs.end() && type->is_string() && !type->get<std::string>().empty()
                         ? type->get<std::string>()
                         : "device";
  return "interface \"" + o.key + "\" (" + kind + ")";
}

}  // namespace

std::string to_string(Op op) {
  switch (op) {
    case Op::Create:
      return "create";
    case Op::Modify:
      return "modify";
    case Op::Delete:
      return "delete";
  }
  return "?";
}

const KindTraits& kind_traits(const std::string& kind) {
  for (const auto& traits : kTraits) {
    if (kind == traits.kind) return traits;
  }
  throw std::logic_error("unknown object kind " + kind);
}

// A modify shows only what changes; a create or delete shows the whole object.
nlohmann::json Change::before() const {
  if (op == Op::Create) return nullptr;
  nlohmann::json attrs = observed.attrs;
  attrs.erase("ifindex");
  if (op != Op::Modify) return attrs;
  nlohmann::json changed = nlohmann::json::object();
  for (const auto& attr : differences(desired, observed)) {
    auto it = attrs.find(attr);
    changed[attr] = it == attrs.end() ? nlohmann::json() : *it;
  }
  return changed;
}

nlohmann::json Change::after() const {
  if (op == Op::Delete) return nullptr;
  if (op != Op::Modify) return desired.attrs;
  nlohmann::json changed = nlohmann::json::object();
  for (const auto& attr : differences(desired, observed)) changed[attr] = desired.attrs[attr];
  return changed;
}

int Plan::count(Op op) const {
  return static_cast<int>(
      std::count_if(changes.begin(), changes.end(), [op](const Change& c) { return c.op == op; }));
}

Plan make_plan(const Objects& desired, const Objects& observed) {
  Plan plan;
  std::map<std::string, const Object*> observed_by_identity;
  std::map<std::string, const Object*> observed_port_by_link;
  for (const auto& o : observed) {
    observed_by_identity.emplace(identity(o), &o);
    if (o.kind == kPort) observed_port_by_link.emplace(o.attrs.value("link", ""), &o);
  }
  std::set<std::string> desired_links;  // interface names the file creates or adopts
  std::set<std::string> adopted_links;
  for (const auto& d : desired) {
    if (kind_traits(d.kind).is_link) desired_links.insert(d.key);
    if (d.adopted) adopted_links.insert(d.key);
  }
  auto link_exists = [&](const std::string& name) {
    return desired_links.count(name) || observed_by_identity.count("link:" + name);
  };

  std::vector<Change> deletes, creates;  // ordered later by rank
  std::set<const Object*> matched;
  std::set<std::string> recreated_links;  // deleted and created again: dependents go with them

  std::vector<const Object*> ordered;
  for (const auto& d : desired) ordered.push_back(&d);
  std::stable_sort(ordered.begin(), ordered.end(), [](const Object* a, const Object* b) {
    return kind_traits(a->kind).rank < kind_traits(b->kind).rank;
  });

  for (const Object* d : ordered) {
    const auto& traits = kind_traits(d->kind);
    auto found = observed_by_identity.find(identity(*d));
    const Object* o = found == observed_by_identity.end() ? nullptr : found->second;
    if (o) matched.insert(o);

    if (d->adopted) {
      if (!o) {
        plan.conflicts.push_back({d->path, "interface \"" + d->key + "\" does not exist"});
      } else if (!differences(*d, *o).empty()) {
        creates.push_back({Op::Modify, *d, *o, ""});
      } else {
        ++plan.unchanged;
      }
      continue;
    }

    // Objects on a link that is re-created vanish with it: plan them afresh.
    if (o && !traits.is_link) {
      for (const auto& link : links_referenced(*o)) {
        if (recreated_links.count(link)) {
          if (o->owned) deletes.push_back({Op::Delete, {}, *o, "its interface is re-created"});
          o = nullptr;
          break;
        }
      }
    }

    if (o && !o->owned) {
      if (traits.is_link) {
        plan.conflicts.push_back({d->path, describe_link(*o) +
                                               " already exists and was not created by "
                                               "etherctl; rename or remove it"});
      } else if (traits.exclusive) {
        plan.conflicts.push_back({d->path, d->kind + " " + d->key +
                                               " already exists and was not created by etherctl; "
                                               "remove it or choose another address"});
      } else if (!differences(*d, *o).empty()) {
        plan.conflicts.push_back({d->path, d->kind + " " + d->key +
                                               " already exists, differs and was not created by "
                                               "etherctl"});
      } else {
        ++plan.unchanged;  // someone else made exactly what we want; leave it theirs
      }
      continue;
    }

    if (d->kind == kVlan && !link_exists(d->attrs.value("interface", ""))) {
      plan.conflicts.push_back(
          {d->path + "/interface",
           "parent interface \"" + d->attrs.value("interface", "") + "\" does not exist"});
      continue;
    }
    if (d->kind == kPort) {
      auto other = observed_port_by_link.find(d->attrs.value("link", ""));
      if (other != observed_port_by_link.end() && other->second != o && !other->second->owned &&
          !adopted_links.count(other->second->attrs.value("link", ""))) {
        plan.conflicts.push_back({d->path, "interface \"" + d->attrs.value("link", "") +
                                               "\" is already a port of bridge \"" +
                                               other->second->attrs.value("bridge", "") +
                                               "\", which etherctl does not manage"});
        continue;
      }
    }
    for (const auto& link : links_referenced(*d)) {
      if (!link_exists(link)) {
        plan.conflicts.push_back({d->path, "interface \"" + link + "\" does not exist"});
      }
    }

    if (!o) {
      creates.push_back({Op::Create, *d, {}, ""});
      continue;
    }
    auto differing = differences(*d, *o);
    bool immutable_differs = o->kind != d->kind;
    for (const auto& attr : differing) {
      if (std::find(traits.immutable.begin(), traits.immutable.end(), attr) !=
          traits.immutable.end()) {
        immutable_differs = true;
      }
    }
    if (immutable_differs) {
      std::string reason =
          o->kind != d->kind ? "it was a " + o->kind : "the kernel cannot change it in place";
      deletes.push_back({Op::Delete, {}, *o, reason});
      creates.push_back({Op::Create, *d, {}, reason});
      recreated_links.insert(d->key);
    } else if (!differing.empty()) {
      creates.push_back({Op::Modify, *d, *o, ""});
    } else {
      ++plan.unchanged;
    }
  }

  // Owned objects the file no longer wants. A port of one of our bridges whose link the file
  // adopts is ours too, though the link carries no mark (we never mark foreign interfaces).
  std::set<std::string> owned_bridges;
  for (const auto& o : observed) {
    if (o.kind == kVlanGroup && o.owned) owned_bridges.insert(o.key);
  }
  for (const auto& o : observed) {
    if (matched.count(&o)) continue;
    bool ours = o.owned || (o.kind == kPort && owned_bridges.count(o.attrs.value("bridge", "")) &&
                            adopted_links.count(o.attrs.value("link", "")));
    if (ours) deletes.push_back({Op::Delete, {}, o, ""});
  }

  // Children before parents on delete; parents before children on create.
  auto rank = [](const Change& c) { return kind_traits(c.subject().kind).rank; };
  std::stable_sort(deletes.begin(), deletes.end(),
                   [&](const Change& a, const Change& b) { return rank(a) > rank(b); });
  std::stable_sort(creates.begin(), creates.end(),
                   [&](const Change& a, const Change& b) { return rank(a) < rank(b); });
  plan.changes = std::move(deletes);
  plan.changes.insert(plan.changes.end(), creates.begin(), creates.end());
  return plan;
}

}  // namespace etherctl::plan
