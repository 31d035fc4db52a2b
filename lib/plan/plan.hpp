// Desired x Observed -> Plan: the ordered changes that make the kernel match the site file.
// Pure code: no sockets, no kernel headers.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/problem.hpp"
#include "model/site.hpp"
#include "plan/object.hpp"

namespace etherctl::plan {

enum class Op { Create, Modify, Delete };
std::string to_string(Op op);

struct Change {
  Op op;
  Object desired;      // Create, Modify: the target; Delete: empty
  Object observed;     // Modify, Delete: what the kernel holds; Create: empty
  std::string reason;  // why a delete or re-create happens, when it is not obvious

  const Object& subject() const { return op == Op::Delete ? observed : desired; }
  nlohmann::json before() const;  // null for Create
  nlohmann::json after() const;   // null for Delete
};

struct Plan {
  std::vector<Change> changes;  // in execution order
  int unchanged = 0;
  std::vector<model::Problem> conflicts;  // reasons not to touch anything

  bool empty() const { return changes.empty(); }
  int count(Op op) const;
};

// The role of a unit of a failover group (docs/failover.md): the standby holds no floating
// self IPs and joins no segments. Devices that are in no group are always what Active says.
enum class Role { Active, Standby };

// What the site file wants of `device` in its kernel, as objects with pointers.
Objects desired_objects(const model::Site& site, const model::Device& device,
                        Role role = Role::Active);

// Plans the changes. Observed objects that are not owned are never changed or deleted;
// desired objects that collide with them are conflicts.
Plan make_plan(const Objects& desired, const Objects& observed);

// Per-kind facts the planner needs (rank = creation order; immutable attributes force a
// re-create; compared attributes are the ones diffed).
// A foreign object under the key of a desired one is a conflict even when it matches, for links
// (one interface name space) and exclusive kinds (an IPVS service: its members would follow).
struct KindTraits {
  const char* kind;
  int rank;
  bool is_link;
  std::vector<std::string> compared;
  std::vector<std::string> immutable;
  bool exclusive = false;
};
const KindTraits& kind_traits(const std::string& kind);

}  // namespace etherctl::plan
