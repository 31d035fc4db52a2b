// Kinds "ipvs_service" and "ipvs_member": IPVS virtual services and their real servers, over
// the kernel's generic netlink family "IPVS" (libnl-genl-3; what ipvsadm speaks too).
//
// Ownership. IPVS objects have no alias, cookie or protocol field. Ours are marked with the
// persistence timeout: etherctl creates services with IPVS_SVC_ATTR_TIMEOUT = kOwnershipTimeout
// and without the IP_VS_SVC_F_PERSISTENT flag. The kernel stores the timeout and reports it back
// in every dump, but only reads it for persistent services (ip_vs_sched_persist), so the mark
// changes no behaviour; `ipvsadm -Ln` does not even print it without the flag. A service edited
// by another tool (ipvsadm -E resets the timeout, -p sets the flag) loses the mark and becomes
// foreign, which is the safe direction: etherctl then never touches it again. Members have no
// field to spare either: the members of our services are ours.
//
// Observation. The IPVS family has its own socket, so the kinds read the kernel in their observe
// (a dump of services, then one dump of members per owned service) instead of through Snapshot.
// A kernel without IPVS (no "IPVS" family) observes nothing; creating a service there fails with
// "this kernel has no IPVS support (ip_vs)".
#include "kernel/ipvs.hpp"

#include <arpa/inet.h>
#include <linux/ip_vs.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>

#include "kernel/detail.hpp"
#include "kernel/inet.hpp"
#include "kernel/ipvs_socket.hpp"

namespace etherctl::kernel {

namespace {

using ipvs_detail::IpvsSocket;
using ipvs_detail::kNoIpvs;
using ipvs_detail::MsgPtr;
using ipvs_detail::require_ipvs;
using ipvs_detail::send;

// The fields that name a service (and, with address and port, a member).
struct Endpoint {
  int family = 0;  // AF_INET / AF_INET6
  std::array<uint8_t, 16> bytes{};
  uint16_t port = 0;
};

struct ServiceId {
  uint16_t protocol = 0;  // IPPROTO_TCP / IPPROTO_UDP
  Endpoint endpoint;
};

std::string protocol_name(uint16_t protocol) {
  switch (protocol) {
    case IPPROTO_TCP:
      return "tcp";
    case IPPROTO_UDP:
      return "udp";
    case IPPROTO_SCTP:
      return "sctp";
  }
  return std::to_string(protocol);
}

std::string forward_name(uint32_t method) {
  switch (method & IP_VS_CONN_F_FWD_MASK) {
    case IP_VS_CONN_F_MASQ:
      return "masq";
    case IP_VS_CONN_F_LOCALNODE:
      return "local";
    case IP_VS_CONN_F_TUNNEL:
      return "tunnel";
    case IP_VS_CONN_F_DROUTE:
      return "route";
  }
  return "bypass";
}

uint32_t forward_method(const std::string& name, const std::string& what) {
  if (name == "masq") return IP_VS_CONN_F_MASQ;
  if (name == "local") return IP_VS_CONN_F_LOCALNODE;
  if (name == "tunnel") return IP_VS_CONN_F_TUNNEL;
  if (name == "route") return IP_VS_CONN_F_DROUTE;
  throw std::invalid_argument(what + ": unknown forwarding method \"" + name + "\"");
}

Endpoint endpoint_of(const plan::Object& object, const char* address_attr, const char* port_attr,
                     std::string_view operation) {
  const std::string text = detail::require_string(object, address_attr, operation);
  auto address = parse_address(text);
  auto port = detail::int_attr(object, port_attr);
  if (!address || !port || *port < 0 || *port > 65535) {
    throw std::invalid_argument(detail::what(operation, object) + ": \"" + text +
                                "\" with its port is not an IPVS address");
  }
  Endpoint endpoint;
  endpoint.family = address->family;
  endpoint.bytes = address->bytes;
  endpoint.port = static_cast<uint16_t>(*port);
  return endpoint;
}

uint16_t protocol_number(const std::string& name, const std::string& what) {
  if (name == "tcp") return IPPROTO_TCP;
  if (name == "udp") return IPPROTO_UDP;
  if (name == "sctp") return IPPROTO_SCTP;
  throw std::invalid_argument(what + ": unknown protocol \"" + name + "\"");
}

ServiceId service_of(const plan::Object& object, std::string_view operation) {
  ServiceId id;
  id.protocol = protocol_number(detail::require_string(object, "protocol", operation),
                                detail::what(operation, object));
  id.endpoint = endpoint_of(object, "address", "port", operation);
  return id;
}

// A member names its service by key ("tcp 192.0.2.10:80"): parse it back.
ServiceId service_of_member(const plan::Object& member, std::string_view operation) {
  const std::string key = detail::require_string(member, "service", operation);
  const std::string what = detail::what(operation, member);
  auto space = key.find(' ');
  auto colon = key.rfind(':');
  if (space == std::string::npos || colon == std::string::npos || colon < space) {
    throw std::invalid_argument(what + ": service \"" + key + "\" is not a service key");
  }
  std::string address = key.substr(space + 1, colon - space - 1);
  if (address.size() >= 2 && address.front() == '[' && address.back() == ']') {
    address = address.substr(1, address.size() - 2);
  }
  plan::Object service;
  service.kind = plan::kIpvsService;
  service.key = key;
  service.attrs = {{"protocol", key.substr(0, space)},
                   {"address", address},
                   {"port", std::stoi(key.substr(colon + 1))}};
  return service_of(service, operation);
}

void put_address(nl_msg* msg, int type, const Endpoint& endpoint) {
  // The kernel copies a union nf_inet_addr (16 bytes); IPv4 uses the first 4.
  nla_put(msg, type, 16, endpoint.bytes.data());
}

// The attributes that name the service, inside an IPVS_CMD_ATTR_SERVICE nest.
nlattr* put_service_id(nl_msg* msg, const ServiceId& id) {
  nlattr* nest = nla_nest_start(msg, IPVS_CMD_ATTR_SERVICE);
  if (!nest) throw std::length_error("ipvs: service does not fit in the message");
  nla_put_u16(msg, IPVS_SVC_ATTR_AF, static_cast<uint16_t>(id.endpoint.family));
  nla_put_u16(msg, IPVS_SVC_ATTR_PROTOCOL, id.protocol);
  put_address(msg, IPVS_SVC_ATTR_ADDR, id.endpoint);
  nla_put_u16(msg, IPVS_SVC_ATTR_PORT, htons(id.endpoint.port));
  return nest;
}

struct ObservedService {
  ServiceId id;
  std::string scheduler;
  uint32_t timeout = 0;
  uint32_t flags = 0;
};

bool endpoint_from(nlattr* address, nlattr* port, int family, Endpoint* endpoint) {
  if (!address || !port || (family != AF_INET && family != AF_INET6)) return false;
  const size_t expected = family == AF_INET ? 4 : 16;
  if (static_cast<size_t>(nla_len(address)) < expected || nla_len(port) < 2) return false;
  endpoint->family = family;
  endpoint->bytes = {};
  std::memcpy(endpoint->bytes.data(), nla_data(address), expected);
  endpoint->port = ntohs(nla_get_u16(port));
  return true;
}

std::string address_text(const Endpoint& endpoint) {
  return format_address(endpoint.family, endpoint.bytes.data());
}

std::string service_key(const ServiceId& id) {
  return plan::ipvs_service_key(protocol_name(id.protocol), address_text(id.endpoint),
                                id.endpoint.port);
}

// Every address-and-port service of the namespace (firewall-mark services cannot be ours and
// are left out). Empty when the kernel has no IPVS.
std::vector<ObservedService> dump_services(IpvsSocket& socket) {
  std::vector<ObservedService> services;
  if (!socket.family()) return services;
  MsgPtr msg = socket.message(IPVS_CMD_GET_SERVICE, NLM_F_DUMP);
  socket.exchange(
      msg.get(),
      [&](nlattr** attrs) {
        if (!attrs[IPVS_CMD_ATTR_SERVICE]) return;
        nlattr* svc[IPVS_SVC_ATTR_MAX + 1];
        if (nla_parse_nested(svc, IPVS_SVC_ATTR_MAX, attrs[IPVS_CMD_ATTR_SERVICE], nullptr) < 0)
          return;
        if (svc[IPVS_SVC_ATTR_FWMARK] && nla_get_u32(svc[IPVS_SVC_ATTR_FWMARK]) != 0) return;
        if (!svc[IPVS_SVC_ATTR_AF] || !svc[IPVS_SVC_ATTR_PROTOCOL]) return;
        ObservedService service;
        service.id.protocol = nla_get_u16(svc[IPVS_SVC_ATTR_PROTOCOL]);
        if (!endpoint_from(svc[IPVS_SVC_ATTR_ADDR], svc[IPVS_SVC_ATTR_PORT],
                           nla_get_u16(svc[IPVS_SVC_ATTR_AF]), &service.id.endpoint)) {
          return;
        }
        if (svc[IPVS_SVC_ATTR_SCHED_NAME]) {
          service.scheduler = nla_get_string(svc[IPVS_SVC_ATTR_SCHED_NAME]);
        }
        if (svc[IPVS_SVC_ATTR_TIMEOUT]) service.timeout = nla_get_u32(svc[IPVS_SVC_ATTR_TIMEOUT]);
        if (svc[IPVS_SVC_ATTR_FLAGS] &&
            nla_len(svc[IPVS_SVC_ATTR_FLAGS]) >= static_cast<int>(sizeof(ip_vs_flags))) {
          ip_vs_flags flags{};
          std::memcpy(&flags, nla_data(svc[IPVS_SVC_ATTR_FLAGS]), sizeof(flags));
          service.flags = flags.flags;
        }
        services.push_back(std::move(service));
      },
      "observe ipvs services");
  return services;
}

bool owned(const ObservedService& service) {
  return service.timeout == kIpvsOwnershipTimeout && !(service.flags & IP_VS_SVC_F_PERSISTENT);
}

plan::Objects observe_services(const Snapshot&, const Ownership&) {
  IpvsSocket socket;
  plan::Objects objects;
  for (const ObservedService& service : dump_services(socket)) {
    plan::Object object;
    object.kind = plan::kIpvsService;
    object.key = service_key(service.id);
    object.name = object.key;
    object.owned = owned(service);
    object.attrs = {{"protocol", protocol_name(service.id.protocol)},
                    {"address", address_text(service.id.endpoint)},
                    {"port", service.id.endpoint.port},
                    {"scheduler", service.scheduler}};
    if (!object.owned) object.attrs["timeout"] = service.timeout;
    objects.push_back(std::move(object));
  }
  return objects;
}

// Members of our services only: a desired member of a foreign service is already a conflict
// (the service kind is exclusive), and foreign services are never read further.
plan::Objects observe_members(const Snapshot&, const Ownership&) {
  IpvsSocket socket;
  plan::Objects objects;
  for (const ObservedService& service : dump_services(socket)) {
    if (!owned(service)) continue;
    const std::string key = service_key(service.id);
    MsgPtr msg = socket.message(IPVS_CMD_GET_DEST, NLM_F_DUMP);
    nla_nest_end(msg.get(), put_service_id(msg.get(), service.id));
    socket.exchange(
        msg.get(),
        [&](nlattr** attrs) {
          if (!attrs[IPVS_CMD_ATTR_DEST]) return;
          nlattr* dest[IPVS_DEST_ATTR_MAX + 1];
          if (nla_parse_nested(dest, IPVS_DEST_ATTR_MAX, attrs[IPVS_CMD_ATTR_DEST], nullptr) < 0)
            return;
          int family = dest[IPVS_DEST_ATTR_ADDR_FAMILY]
                           ? nla_get_u16(dest[IPVS_DEST_ATTR_ADDR_FAMILY])
                           : service.id.endpoint.family;
          Endpoint endpoint;
          if (!endpoint_from(dest[IPVS_DEST_ATTR_ADDR], dest[IPVS_DEST_ATTR_PORT], family,
                             &endpoint)) {
            return;
          }
          plan::Object object;
          object.kind = plan::kIpvsMember;
          object.key = plan::ipvs_member_key(key, address_text(endpoint), endpoint.port);
          object.name = object.key;
          object.owned = true;
          object.attrs = {
              {"service", key},
              {"address", address_text(endpoint)},
              {"port", endpoint.port},
              {"weight",
               dest[IPVS_DEST_ATTR_WEIGHT] ? nla_get_u32(dest[IPVS_DEST_ATTR_WEIGHT]) : 0},
              {"forward", forward_name(dest[IPVS_DEST_ATTR_FWD_METHOD]
                                           ? nla_get_u32(dest[IPVS_DEST_ATTR_FWD_METHOD])
                                           : 0)}};
          objects.push_back(std::move(object));
        },
        "observe ipvs members of " + key);
  }
  return objects;
}

void write_service(Netlink& netlink, const plan::Object& desired, uint8_t command,
                   std::string_view operation) {
  const std::string what = detail::what(operation, desired);
  IpvsSocket socket;
  require_ipvs(socket, what);
  const ServiceId id = service_of(desired, operation);
  const std::string scheduler = detail::require_string(desired, "scheduler", operation);
  MsgPtr msg = socket.message(command, 0);
  nlattr* nest = put_service_id(msg.get(), id);
  nla_put_string(msg.get(), IPVS_SVC_ATTR_SCHED_NAME, scheduler.c_str());
  // No flags set, none changed (an edit keeps the kernel's); the timeout is our mark.
  ip_vs_flags flags{0, 0};
  nla_put(msg.get(), IPVS_SVC_ATTR_FLAGS, sizeof(flags), &flags);
  nla_put_u32(msg.get(), IPVS_SVC_ATTR_TIMEOUT, kIpvsOwnershipTimeout);
  nla_put_u32(msg.get(), IPVS_SVC_ATTR_NETMASK, id.endpoint.family == AF_INET6 ? 128 : 0xffffffffu);
  nla_nest_end(msg.get(), nest);
  try {
    send(netlink, socket, msg.get(), what);
  } catch (const KernelError& e) {
    if (e.error() == ENOENT) {
      throw KernelError(e.error(), e.extack(),
                        what + ": the kernel has no IPVS scheduler \"" + scheduler +
                            "\" (module ip_vs_" + scheduler + " is not loaded)");
    }
    throw;
  }
}

void create_service(Netlink& netlink, const plan::Object& desired, const Ownership&) {
  write_service(netlink, desired, IPVS_CMD_NEW_SERVICE, "create");
}

void modify_service(Netlink& netlink, const plan::Object& desired, const plan::Object&) {
  write_service(netlink, desired, IPVS_CMD_SET_SERVICE, "modify");
}

void remove_service(Netlink& netlink, const plan::Object& observed) {
  const std::string what = detail::what("remove", observed);
  IpvsSocket socket;
  require_ipvs(socket, what);
  MsgPtr msg = socket.message(IPVS_CMD_DEL_SERVICE, 0);
  nla_nest_end(msg.get(), put_service_id(msg.get(), service_of(observed, "remove")));
  send(netlink, socket, msg.get(), what);
}

void write_member(Netlink& netlink, const plan::Object& member, uint8_t command,
                  std::string_view operation, bool full) {
  const std::string what = detail::what(operation, member);
  IpvsSocket socket;
  require_ipvs(socket, what);
  const ServiceId service = service_of_member(member, operation);
  const Endpoint endpoint = endpoint_of(member, "address", "port", operation);
  MsgPtr msg = socket.message(command, 0);
  nla_nest_end(msg.get(), put_service_id(msg.get(), service));
  nlattr* nest = nla_nest_start(msg.get(), IPVS_CMD_ATTR_DEST);
  if (!nest) throw std::length_error("ipvs: member does not fit in the message");
  put_address(msg.get(), IPVS_DEST_ATTR_ADDR, endpoint);
  nla_put_u16(msg.get(), IPVS_DEST_ATTR_PORT, htons(endpoint.port));
  if (full) {
    const int weight = detail::int_attr(member, "weight").value_or(1);
    const std::string forward = detail::string_attr(member, "forward").value_or("masq");
    nla_put_u32(msg.get(), IPVS_DEST_ATTR_FWD_METHOD, forward_method(forward, what));
    nla_put_u32(msg.get(), IPVS_DEST_ATTR_WEIGHT, static_cast<uint32_t>(weight));
    nla_put_u32(msg.get(), IPVS_DEST_ATTR_U_THRESH, 0);
    nla_put_u32(msg.get(), IPVS_DEST_ATTR_L_THRESH, 0);
  }
  nla_nest_end(msg.get(), nest);
  try {
    send(netlink, socket, msg.get(), what);
  } catch (const KernelError& e) {
    if (e.error() == EINVAL && full && endpoint.family == AF_INET) {
      throw KernelError(e.error(), e.extack(),
                        std::string(e.what()) +
                            " (IPVS takes an IPv4 member only when the routing tables make it "
                            "a unicast or local address)");
    }
    throw;
  }
}

void create_member(Netlink& netlink, const plan::Object& desired, const Ownership&) {
  write_member(netlink, desired, IPVS_CMD_NEW_DEST, "create", true);
}

// Weight and forwarding method change in place: existing connections stay on the member.
void modify_member(Netlink& netlink, const plan::Object& desired, const plan::Object&) {
  write_member(netlink, desired, IPVS_CMD_SET_DEST, "modify", true);
}

void remove_member(Netlink& netlink, const plan::Object& observed) {
  write_member(netlink, observed, IPVS_CMD_DEL_DEST, "remove", false);
}

}  // namespace

std::optional<std::string> ipvs_missing() {
  IpvsSocket socket;
  if (socket.family()) return std::nullopt;
  return std::string(kNoIpvs);
}

KindOps ipvs_service_kind() {
  return {plan::kIpvsService, observe_services, create_service, modify_service, remove_service};
}

KindOps ipvs_member_kind() {
  return {plan::kIpvsMember, observe_members, create_member, modify_member, remove_member};
}

}  // namespace etherctl::kernel
