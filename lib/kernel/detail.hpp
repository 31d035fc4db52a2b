// Helpers shared by the kind files (vlan.cpp, bridge.cpp, ...). Internal to lib/kernel.
#pragma once

#include <linux/if.h>
#include <linux/rtnetlink.h>

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "kernel/kind.hpp"

namespace etherctl::kernel::detail {

// "servers", or "web (10.1.0.0/16)" when the site name differs from the kernel key.
std::string label(const plan::Object& object);
// "<operation> <kind> <label>": the prefix of every KernelError message of a kind.
std::string what(std::string_view operation, const plan::Object& object);

// Typed reads of attributes; nullopt when absent or of another JSON type.
std::optional<int> int_attr(const plan::Object& object, const char* name);
std::optional<bool> bool_attr(const plan::Object& object, const char* name);
std::optional<std::string> string_attr(const plan::Object& object, const char* name);
// A required string attribute: throws std::invalid_argument naming the object when missing.
std::string require_string(const plan::Object& object, const char* name,
                           std::string_view operation);

// ifindex_of with the operation in the error ("create port br0/eth1: interface eth1: ...").
int ifindex_for(Netlink& netlink, const std::string& name, const std::string& what);

// Name lookup over a snapshot's links, built once per observe call.
std::unordered_map<int, const LinkInfo*> links_by_index(const Snapshot& snapshot);

// Sets or clears IFF_UP in a RTM_NEWLINK request.
void put_up(ifinfomsg* ifi, bool up);

// The attributes every observed link carries (ifindex, type, mtu, up).
void put_link_attrs(plan::Object& object, const LinkInfo& link);

// Applies mtu/up from desired when they differ from observed, in one RTM_NEWLINK; writes
// nothing when nothing differs. Shared by the link kinds' modify.
void modify_link(Netlink& netlink, const plan::Object& desired, const plan::Object& observed);

// Removes a link with RTM_DELLINK.
void remove_link(Netlink& netlink, const plan::Object& observed);
// Removes the link of that name if there is one (a KindOps::abandon for link kinds).
void abandon_link(Netlink& netlink, const std::string& name);

// Rethrows a KernelError of a create RTM_NEWLINK of IFLA_INFO_KIND `type`; when the kernel does
// not know the type, the message says which kernel feature is missing.
[[noreturn]] void rethrow_create_error(const KernelError& error, const std::string& type,
                                       const std::string& what);

// Sets IFLA_IFALIAS when the creating request did not leave it (see vlan.cpp), and the MTU
// in the same request when one is given (see bridge.cpp).
void ensure_alias(Netlink& netlink, const std::string& name, const std::string& alias,
                  const std::string& what, std::optional<int> mtu = std::nullopt);

}  // namespace etherctl::kernel::detail

namespace etherctl::kernel {
// One per kind file; registry.cpp lists them in creation order.
KindOps vlan_kind();
KindOps bridge_kind();
KindOps port_kind();
KindOps address_kind();
KindOps route_kind();
KindOps ipvs_service_kind();
KindOps ipvs_member_kind();
KindOps xfrm_policy_kind();
KindOps ipvs_sync_kind();
}  // namespace etherctl::kernel
