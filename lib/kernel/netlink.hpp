// A thin RAII layer over a libmnl rtnetlink socket: requests with extended-ACK errors, dumps,
// and a count of write requests (so tests can prove that a no-change apply writes nothing).
#pragma once

#include <libmnl/libmnl.h>
#include <linux/netlink.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace etherctl::kernel {

// A failed netlink request: errno plus the kernel's extended-ack text, if it sent one.
class KernelError : public std::runtime_error {
 public:
  KernelError(int error, std::string extack, const std::string& what);
  int error() const { return error_; }
  const std::string& extack() const { return extack_; }

 private:
  int error_;
  std::string extack_;
};

// "<strerror>" or "<strerror> (kernel: <extack>)": the tail of every KernelError message.
std::string describe_error(int error, const std::string& extack);

// One request message under construction. Owns its buffer. Attributes that would overflow it
// throw std::length_error instead of writing past its end.
class Message {
 public:
  Message(uint16_t type, uint16_t flags);
  // Moving keeps the heap buffer (and so header_) valid; a copy would not.
  Message(Message&&) = default;
  Message& operator=(Message&&) = default;
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;

  nlmsghdr* header() { return header_; }
  // Appends the family header (ifinfomsg, ifaddrmsg, rtmsg, ...) and returns it zeroed.
  template <typename T>
  T* put_header() {
    return static_cast<T*>(mnl_nlmsg_put_extra_header(header_, sizeof(T)));
  }
  void put_u8(uint16_t type, uint8_t v) { put(type, &v, sizeof(v)); }
  void put_u16(uint16_t type, uint16_t v) { put(type, &v, sizeof(v)); }
  void put_u32(uint16_t type, uint32_t v) { put(type, &v, sizeof(v)); }
  void put_str(uint16_t type, const std::string& v) { put(type, v.c_str(), v.size() + 1); }
  void put(uint16_t type, const void* data, size_t len) {
    if (!mnl_attr_put_check(header_, buffer_.size(), type, len, data)) overflow(type);
  }
  nlattr* nest_start(uint16_t type) {
    nlattr* nest = mnl_attr_nest_start_check(header_, buffer_.size(), type);
    if (!nest) overflow(type);
    return nest;
  }
  void nest_end(nlattr* nest) { mnl_attr_nest_end(header_, nest); }

 private:
  [[noreturn]] static void overflow(uint16_t type);
  std::vector<char> buffer_;
  nlmsghdr* header_;
};

class Netlink {
 public:
  // Opens a netlink socket (NETLINK_ROUTE unless told otherwise, e.g. NETLINK_XFRM) in the
  // caller's current network namespace.
  explicit Netlink(int protocol = NETLINK_ROUTE);
  ~Netlink();
  Netlink(const Netlink&) = delete;
  Netlink& operator=(const Netlink&) = delete;

  // Sends a request with NLM_F_ACK and waits for the answer; throws KernelError on failure.
  // Every call counts as a write request.
  void request(Message& message);
  // The same, with the KernelError text prefixed by `what` ("create vlan servers: ...").
  void request(Message& message, const std::string& what);
  // Sends a non-dump GET request (with NLM_F_ACK) and calls on_message for each answer
  // message before the ack; counts as a read request. Throws KernelError prefixed by `what`.
  void query(Message& message, const std::function<void(const nlmsghdr*)>& on_message,
             const std::string& what);
  // Sends a dump request (NLM_F_DUMP) and calls on_message for each answer message. When the
  // kernel flagged the dump as inconsistent (NLM_F_DUMP_INTR, a concurrent change), it throws
  // KernelError(EINTR) after reading the whole dump, so the caller can simply dump again.
  void dump(Message& message, const std::function<void(const nlmsghdr*)>& on_message);

  uint64_t write_requests() const { return write_requests_; }
  // Requests a kind sent on a socket of its own (generic netlink: IPVS) join these counters.
  void count_foreign_request(bool write) { ++(write ? write_requests_ : read_requests_); }
  uint64_t read_requests() const { return read_requests_; }

 private:
  void exchange(Message& message, const std::function<void(const nlmsghdr*)>& on_message,
                const std::string& what);
  struct MnlSocketDeleter {
    void operator()(mnl_socket* s) const { mnl_socket_close(s); }
  };
  std::unique_ptr<mnl_socket, MnlSocketDeleter> socket_;
  uint32_t port_id_ = 0;
  uint32_t sequence_ = 0;
  uint64_t write_requests_ = 0;
  uint64_t read_requests_ = 0;
  std::vector<char> receive_buffer_;
};

}  // namespace etherctl::kernel
