#include "failover/marker.hpp"

#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cstring>

#include "failover/keepalived.hpp"

namespace etherctl::failover {

model::IpAddress marker_ip(int virtual_router_id) {
  return *model::IpAddress::parse(marker_address(virtual_router_id));
}

bool marker_present(kernel::Netlink& netlink, int virtual_router_id) {
  const model::IpAddress marker = marker_ip(virtual_router_id);
  kernel::Message message(RTM_GETADDR, 0);
  message.put_header<ifaddrmsg>()->ifa_family = AF_INET;
  struct Search {
    const model::IpAddress* marker;
    bool found;
  } search{&marker, false};
  netlink.dump(message, [&](const nlmsghdr* header) {
    if (header->nlmsg_type != RTM_NEWADDR) return;
    if (mnl_nlmsg_get_payload_len(header) < sizeof(ifaddrmsg)) return;
    mnl_attr_parse(
        header, sizeof(ifaddrmsg),
        [](const nlattr* attr, void* data) {
          auto* search = static_cast<Search*>(data);
          if (mnl_attr_get_type(attr) == IFA_LOCAL && mnl_attr_get_payload_len(attr) == 4 &&
              std::memcmp(mnl_attr_get_payload(attr), search->marker->bytes.data(), 4) == 0) {
            search->found = true;
          }
          return MNL_CB_OK;
        },
        &search);
  });
  return search.found;
}

}  // namespace etherctl::failover
