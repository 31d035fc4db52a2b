// The generic netlink socket of the IPVS family, shared by the IPVS kinds (ipvs.cpp: services
// and members; ipvs_sync.cpp: connection synchronisation daemons). Internal to lib/kernel.
#pragma once

#include <linux/ip_vs.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>

#include <cerrno>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "kernel/netlink.hpp"

namespace etherctl::kernel::ipvs_detail {

inline const char* const kNoIpvs = "this kernel has no IPVS support (ip_vs)";

// A message under construction, freed on every path.
struct MsgDeleter {
  void operator()(nl_msg* msg) const { nlmsg_free(msg); }
};
using MsgPtr = std::unique_ptr<nl_msg, MsgDeleter>;

// A generic netlink socket bound to the IPVS family of the caller's network namespace.
class IpvsSocket {
 public:
  // Opens the socket; family() is 0 when the kernel has no IPVS.
  IpvsSocket() : socket_(nl_socket_alloc()) {
    if (!socket_) throw KernelError(ENOMEM, "", "ipvs: cannot allocate a netlink socket");
    if (int rc = genl_connect(socket_.get()); rc < 0) {
      throw KernelError(EIO, "", std::string("ipvs: generic netlink: ") + nl_geterror(rc));
    }
    int family = genl_ctrl_resolve(socket_.get(), IPVS_GENL_NAME);
    family_ = family > 0 ? family : 0;
  }

  int family() const { return family_; }

  MsgPtr message(uint8_t command, int flags) const {
    MsgPtr msg(nlmsg_alloc());
    if (!msg) throw std::bad_alloc();
    if (!genlmsg_put(msg.get(), NL_AUTO_PORT, NL_AUTO_SEQ, family_, 0, flags, command,
                     IPVS_GENL_VERSION)) {
      throw std::length_error("ipvs: message header does not fit");
    }
    return msg;
  }

  // Sends a request and waits for its ack; on_message sees each answer (dumps: every entry).
  // Throws KernelError with the errno the kernel answered.
  void exchange(nl_msg* msg, const std::function<void(nlattr**)>& on_message,
                const std::string& what) {
    State state{on_message, 0, false};
    std::unique_ptr<nl_cb, CbDeleter> cb(nl_cb_alloc(NL_CB_DEFAULT));
    if (!cb) throw std::bad_alloc();
    nl_cb_set(cb.get(), NL_CB_VALID, NL_CB_CUSTOM, on_valid, &state);
    nl_cb_set(cb.get(), NL_CB_FINISH, NL_CB_CUSTOM, on_finish, &state);
    nl_cb_set(cb.get(), NL_CB_ACK, NL_CB_CUSTOM, on_finish, &state);
    nl_cb_err(cb.get(), NL_CB_CUSTOM, on_error, &state);
    if (int rc = nl_send_auto(socket_.get(), msg); rc < 0) {
      throw KernelError(EIO, "", what + ": " + nl_geterror(rc));
    }
    while (!state.done) {
      if (int rc = nl_recvmsgs(socket_.get(), cb.get()); rc < 0 && !state.done) {
        throw KernelError(EIO, "", what + ": " + nl_geterror(rc));
      }
    }
    if (state.thrown) std::rethrow_exception(state.thrown);
    if (state.error) {
      throw KernelError(state.error, "", what + ": " + describe_error(state.error, ""));
    }
  }

 private:
  struct SocketDeleter {
    void operator()(nl_sock* s) const { nl_socket_free(s); }
  };
  struct CbDeleter {
    void operator()(nl_cb* cb) const { nl_cb_put(cb); }
  };
  struct State {
    const std::function<void(nlattr**)>& on_message;
    int error;
    bool done;
    std::exception_ptr thrown = nullptr;  // from on_message: rethrown outside libnl's C frames
  };

  static int on_valid(nl_msg* msg, void* arg) {
    auto* state = static_cast<State*>(arg);
    nlattr* attrs[IPVS_CMD_ATTR_MAX + 1];
    if (state->on_message && !state->thrown &&
        genlmsg_parse(nlmsg_hdr(msg), 0, attrs, IPVS_CMD_ATTR_MAX, nullptr) == 0) {
      try {
        state->on_message(attrs);
      } catch (...) {
        state->thrown = std::current_exception();  // read the rest so the socket stays clean
      }
    }
    return NL_OK;
  }
  static int on_finish(nl_msg*, void* arg) {
    static_cast<State*>(arg)->done = true;
    return NL_STOP;
  }
  static int on_error(sockaddr_nl*, nlmsgerr* error, void* arg) {
    auto* state = static_cast<State*>(arg);
    state->error = -error->error;
    state->done = true;
    return NL_STOP;
  }

  std::unique_ptr<nl_sock, SocketDeleter> socket_;
  int family_ = 0;
};

// A socket for a write: the kernel must have IPVS.
inline IpvsSocket& require_ipvs(IpvsSocket& socket, const std::string& what) {
  if (!socket.family()) throw KernelError(EOPNOTSUPP, "", what + ": " + kNoIpvs);
  return socket;
}

// Sends one write, counted with the run's netlink writes.
inline void send(Netlink& netlink, IpvsSocket& socket, nl_msg* msg, const std::string& what) {
  netlink.count_foreign_request(true);
  socket.exchange(msg, nullptr, what);
}

}  // namespace etherctl::kernel::ipvs_detail
