#include "agent/events.hpp"

#include <fcntl.h>
#include <linux/if_addr.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <numeric>
#include <system_error>

#include "kernel/kind.hpp"

namespace etherctl::agent {

const char* event_kind_name(EventKind kind) {
  switch (kind) {
    case EventKind::Link:
      return "link";
    case EventKind::Address:
      return "address";
    case EventKind::Route:
      return "route";
    case EventKind::Neighbour:
      return "neighbour";
    case EventKind::Fdb:
      return "fdb";
    case EventKind::Tc:
      return "tc";
  }
  return "?";
}

uint64_t EventBatch::total() const { return std::accumulate(counts.begin(), counts.end(), 0ULL); }

// RTMGRP_TC: a tunnel's BPF programs detached (or a clsact deleted) is drift too.
const unsigned EventSocket::kAllGroups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR |
                                         RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE | RTMGRP_NEIGH |
                                         RTMGRP_TC;

EventSocket::EventSocket(unsigned groups) : buffer_(1 << 16) {
  socket_ = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (!socket_) throw std::system_error(errno, std::generic_category(), "netlink socket");
  // A burst (a thousand links going away) must not overflow the queue before we read it;
  // FORCE works for root beyond net.core.rmem_max, the plain option is the fallback.
  int size = 8 << 20;
  if (setsockopt(fd(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0) {
    setsockopt(fd(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
  if (mnl_socket_bind(socket_, groups, MNL_SOCKET_AUTOPID) < 0) {
    int error = errno;
    mnl_socket_close(socket_);
    throw std::system_error(error, std::generic_category(), "netlink bind to notifications");
  }
}

EventSocket::~EventSocket() {
  if (socket_) mnl_socket_close(socket_);
}

int EventSocket::fd() const { return mnl_socket_get_fd(socket_); }

namespace {

void classify(const nlmsghdr* header, EventBatch& batch) {
  auto add = [&](EventKind kind, bool relevant = true) {
    ++batch.counts[static_cast<size_t>(kind)];
    if (relevant) ++batch.relevant[static_cast<size_t>(kind)];
  };
  const size_t payload = mnl_nlmsg_get_payload_len(header);
  switch (header->nlmsg_type) {
    case RTM_NEWLINK:
    case RTM_DELLINK:
      add(EventKind::Link);
      return;
    case RTM_NEWADDR:
    case RTM_DELADDR: {
      const auto* ifa = static_cast<const ifaddrmsg*>(mnl_nlmsg_get_payload(header));
      add(EventKind::Address, payload >= sizeof(ifaddrmsg) && ifa->ifa_scope != RT_SCOPE_LINK &&
                                  ifa->ifa_scope != RT_SCOPE_HOST);
      if (payload >= sizeof(ifaddrmsg) && ifa->ifa_scope == RT_SCOPE_HOST &&
          ifa->ifa_family == AF_INET) {
        const nlattr* local = nullptr;
        mnl_attr_parse(
            header, sizeof(ifaddrmsg),
            [](const nlattr* attr, void* data) {
              if (mnl_attr_get_type(attr) == IFA_LOCAL) *static_cast<const nlattr**>(data) = attr;
              return MNL_CB_OK;
            },
            &local);
        if (local && mnl_attr_get_payload_len(local) == 4) {
          model::IpAddress address;
          address.family = 4;
          std::memcpy(address.bytes.data(), mnl_attr_get_payload(local), 4);
          batch.host_addresses.emplace_back(address, header->nlmsg_type == RTM_NEWADDR);
        }
      }
      return;
    }
    case RTM_NEWROUTE:
    case RTM_DELROUTE: {
      const auto* rtm = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(header));
      add(EventKind::Route,
          payload >= sizeof(rtmsg) && rtm->rtm_protocol == kernel::kEtherctlProtocol);
      return;
    }
    case RTM_NEWQDISC:
    case RTM_DELQDISC:
    case RTM_NEWTFILTER:
    case RTM_DELTFILTER:
      add(EventKind::Tc);
      return;
    case RTM_NEWNEIGH:
    case RTM_DELNEIGH:
      break;
    default:
      return;
  }
  if (mnl_nlmsg_get_payload_len(header) < sizeof(ndmsg)) return;
  const auto* ndm = static_cast<const ndmsg*>(mnl_nlmsg_get_payload(header));
  if (ndm->ndm_family == AF_BRIDGE) {
    add(EventKind::Fdb);
    return;
  }
  add(EventKind::Neighbour);
  const nlattr* dst = nullptr;
  mnl_attr_parse(
      header, sizeof(ndmsg),
      [](const nlattr* attr, void* data) {
        if (mnl_attr_get_type(attr) == NDA_DST) *static_cast<const nlattr**>(data) = attr;
        return MNL_CB_OK;
      },
      &dst);
  const size_t length = ndm->ndm_family == AF_INET ? 4 : ndm->ndm_family == AF_INET6 ? 16 : 0;
  if (!dst || length == 0 || mnl_attr_get_payload_len(dst) != length) return;
  model::IpAddress address;
  address.family = length == 4 ? 4 : 6;
  std::memcpy(address.bytes.data(), mnl_attr_get_payload(dst), length);
  batch.neighbours.push_back(address);
}

}  // namespace

EventBatch EventSocket::drain() {
  EventBatch batch;
  for (;;) {
    ssize_t n = recv(fd(), buffer_.data(), buffer_.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {  // notifications were lost; the socket keeps working
        batch.overrun = true;
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      throw std::system_error(errno, std::generic_category(), "netlink notification read");
    }
    int remaining = static_cast<int>(n);
    for (auto* header = reinterpret_cast<const nlmsghdr*>(buffer_.data());
         mnl_nlmsg_ok(header, remaining); header = mnl_nlmsg_next(header, &remaining)) {
      classify(header, batch);
    }
  }
  return batch;
}

}  // namespace etherctl::agent
