#include "kernel/netlink.hpp"

#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace etherctl::kernel {

namespace {

// Request messages are small (a header and a handful of attributes); one page is plenty.
constexpr size_t kMessageBufferSize = 4096;

// The kernel fills a dump batch up to the size of the largest buffer the reader has offered
// (capped near 32 KiB), so a 64 KiB buffer gets full batches and never truncates one.
constexpr size_t kReceiveBufferSize = 64 * 1024;

// Reads NLMSGERR_ATTR_MSG from the attributes that start `offset` bytes into the payload.
std::string extack_at(const nlmsghdr* header, size_t offset) {
  const size_t payload = mnl_nlmsg_get_payload_len(header);
  offset = MNL_ALIGN(offset);
  if (offset >= payload) return "";
  const char* start = static_cast<const char*>(mnl_nlmsg_get_payload(header)) + offset;
  int remaining = static_cast<int>(payload - offset);
  for (auto* attr = reinterpret_cast<const nlattr*>(start); mnl_attr_ok(attr, remaining);
       attr = mnl_attr_next(attr)) {
    remaining -= MNL_ALIGN(attr->nla_len);
    if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_MSG) {
      const auto* text = static_cast<const char*>(mnl_attr_get_payload(attr));
      // The string is NUL-terminated inside the attribute; strnlen guards a malformed one.
      return std::string(text, strnlen(text, mnl_attr_get_payload_len(attr)));
    }
  }
  return "";
}

// The extended-ack text of an NLMSG_ERROR message; "" when the kernel sent none.
std::string extack_text(const nlmsghdr* header) {
  if (!(header->nlmsg_flags & NLM_F_ACK_TLVS)) return "";
  if (mnl_nlmsg_get_payload_len(header) < sizeof(nlmsgerr)) return "";
  const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(header));
  // With NETLINK_CAP_ACK the kernel echoes only our header, not our payload (NLM_F_CAPPED);
  // without it the attributes start after the whole echoed request.
  size_t offset = sizeof(nlmsgerr);
  if (!(header->nlmsg_flags & NLM_F_CAPPED)) offset += err->msg.nlmsg_len - sizeof(nlmsghdr);
  return extack_at(header, offset);
}

// The extended-ack text of a failed dump's NLMSG_DONE (an int status, then attributes).
std::string done_extack_text(const nlmsghdr* header) {
  if (!(header->nlmsg_flags & NLM_F_ACK_TLVS)) return "";
  return extack_at(header, sizeof(int));
}

void set_option(mnl_socket* socket, int option, int value, const char* name) {
  if (mnl_socket_setsockopt(socket, option, &value, sizeof(value)) < 0) {
    throw KernelError(errno, "",
                      std::string("netlink: cannot set ") + name + ": " + strerror(errno));
  }
}

}  // namespace

KernelError::KernelError(int error, std::string extack, const std::string& what)
    : std::runtime_error(what), error_(error), extack_(std::move(extack)) {}

std::string describe_error(int error, const std::string& extack) {
  std::string text = strerror(error);
  if (!extack.empty()) text += " (kernel: " + extack + ")";
  return text;
}

Message::Message(uint16_t type, uint16_t flags) : buffer_(kMessageBufferSize, 0) {
  header_ = mnl_nlmsg_put_header(buffer_.data());
  header_->nlmsg_type = type;
  header_->nlmsg_flags = NLM_F_REQUEST | flags;
}

void Message::overflow(uint16_t type) {
  throw std::length_error("netlink: attribute " + std::to_string(type) +
                          " does not fit in the request buffer");
}

Netlink::Netlink(int protocol) : receive_buffer_(kReceiveBufferSize) {
  socket_.reset(mnl_socket_open(protocol));
  if (!socket_) throw KernelError(errno, "", std::string("netlink: socket: ") + strerror(errno));
  if (mnl_socket_bind(socket_.get(), 0, MNL_SOCKET_AUTOPID) < 0) {
    throw KernelError(errno, "", std::string("netlink: bind: ") + strerror(errno));
  }
  port_id_ = mnl_socket_get_portid(socket_.get());
  // Extended acks carry the kernel's reason ("Unknown device type") next to the errno; capped
  // acks keep the kernel from echoing every request back to us.
  set_option(socket_.get(), NETLINK_EXT_ACK, 1, "NETLINK_EXT_ACK");
  set_option(socket_.get(), NETLINK_CAP_ACK, 1, "NETLINK_CAP_ACK");
  // Strict checking lets the kernel filter dumps by the header we send (routes by table), so a
  // host with big non-main tables does not make our observation slow.
  set_option(socket_.get(), NETLINK_GET_STRICT_CHK, 1, "NETLINK_GET_STRICT_CHK");
}

Netlink::~Netlink() = default;

void Netlink::request(Message& message) { request(message, "netlink request"); }

void Netlink::request(Message& message, const std::string& what) {
  ++write_requests_;
  exchange(message, nullptr, what);
}

void Netlink::query(Message& message, const std::function<void(const nlmsghdr*)>& on_message,
                    const std::string& what) {
  ++read_requests_;
  exchange(message, on_message, what);
}

void Netlink::exchange(Message& message, const std::function<void(const nlmsghdr*)>& on_message,
                       const std::string& what) {
  nlmsghdr* header = message.header();
  header->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
  header->nlmsg_seq = ++sequence_;
  if (mnl_socket_sendto(socket_.get(), header, header->nlmsg_len) < 0) {
    const int error = errno;
    throw KernelError(error, "", what + ": " + describe_error(error, ""));
  }
  const uint32_t sequence = header->nlmsg_seq;
  for (;;) {
    const ssize_t length =
        mnl_socket_recvfrom(socket_.get(), receive_buffer_.data(), receive_buffer_.size());
    if (length < 0) {
      const int error = errno;
      throw KernelError(error, "", what + ": " + describe_error(error, ""));
    }
    int remaining = static_cast<int>(length);
    for (auto* reply = reinterpret_cast<const nlmsghdr*>(receive_buffer_.data());
         mnl_nlmsg_ok(reply, remaining); reply = mnl_nlmsg_next(reply, &remaining)) {
      // Anything else on this socket (a stale answer of an earlier request) is not ours.
      if (reply->nlmsg_seq != sequence || reply->nlmsg_pid != port_id_) continue;
      if (reply->nlmsg_type != NLMSG_ERROR) {
        // A GET answers with the object first, then the ack.
        if (on_message && reply->nlmsg_type >= NLMSG_MIN_TYPE) on_message(reply);
        continue;
      }
      const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(reply));
      if (err->error == 0) return;  // the ack
      const int error = -err->error;
      std::string extack = extack_text(reply);
      throw KernelError(error, extack, what + ": " + describe_error(error, extack));
    }
  }
}

void Netlink::dump(Message& message, const std::function<void(const nlmsghdr*)>& on_message) {
  nlmsghdr* header = message.header();
  header->nlmsg_flags |= NLM_F_REQUEST | NLM_F_DUMP;
  header->nlmsg_seq = ++sequence_;
  ++read_requests_;
  if (mnl_socket_sendto(socket_.get(), header, header->nlmsg_len) < 0) {
    const int error = errno;
    throw KernelError(error, "", "netlink dump: " + describe_error(error, ""));
  }
  const uint32_t sequence = header->nlmsg_seq;
  bool interrupted = false;
  for (;;) {
    const ssize_t length =
        mnl_socket_recvfrom(socket_.get(), receive_buffer_.data(), receive_buffer_.size());
    if (length < 0) {
      const int error = errno;
      throw KernelError(error, "", "netlink dump: " + describe_error(error, ""));
    }
    int remaining = static_cast<int>(length);
    for (auto* reply = reinterpret_cast<const nlmsghdr*>(receive_buffer_.data());
         mnl_nlmsg_ok(reply, remaining); reply = mnl_nlmsg_next(reply, &remaining)) {
      if (reply->nlmsg_seq != sequence || reply->nlmsg_pid != port_id_) continue;
      if (reply->nlmsg_flags & NLM_F_DUMP_INTR) interrupted = true;
      if (reply->nlmsg_type == NLMSG_DONE) {
        // NLMSG_DONE carries the dump's own status as an int.
        int status = 0;
        if (mnl_nlmsg_get_payload_len(reply) >= sizeof(int)) {
          memcpy(&status, mnl_nlmsg_get_payload(reply), sizeof(int));
        }
        if (status < 0) {
          std::string extack = done_extack_text(reply);
          throw KernelError(-status, extack, "netlink dump: " + describe_error(-status, extack));
        }
        // The whole dump has been read, so the socket is clean for the caller's retry.
        if (interrupted) {
          throw KernelError(EINTR, "",
                            "netlink dump: interrupted by a concurrent change (NLM_F_DUMP_INTR)");
        }
        return;
      }
      if (reply->nlmsg_type == NLMSG_ERROR) {
        const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(reply));
        const int error = -err->error;
        std::string extack = extack_text(reply);
        throw KernelError(error, extack, "netlink dump: " + describe_error(error, extack));
      }
      if (reply->nlmsg_type < NLMSG_MIN_TYPE) continue;  // NLMSG_NOOP and friends
      on_message(reply);
    }
  }
}

}  // namespace etherctl::kernel
