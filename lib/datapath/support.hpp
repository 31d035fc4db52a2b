// Small pieces every part of the datapath loader uses: errors with errno text, an owned file
// descriptor, interface names and indexes, and libbpf's logging. Internal to lib/datapath.
#pragma once

#include <unistd.h>

#include <string>

namespace etherctl::datapath {

std::string errno_text(int error);

// Throws DatapathError with "what: <errno text>"; accepts negative (libbpf) error numbers.
[[noreturn]] void fail(int error, const std::string& what);

// Whether this process holds the capability in its effective set (false when it cannot tell).
bool has_effective_capability(int cap);

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// The interface's index, or 0 when there is none.
int ifindex_or_zero(const std::string& name);
// The interface's index; throws when there is none.
int ifindex_of(const std::string& name);
// The interface's name, or "" when the index names none.
std::string if_name(int ifindex);

// Routes libbpf's messages to stderr, without its debug output and without the messages of
// operations run under a Quiet guard. Called before any libbpf operation.
void use_libbpf_log();

// libbpf prints the kernel's extended ack of every failed netlink request; queries and
// detaches that are expected to fail (no clsact yet, filter gone) run quietly.
class Quiet {
 public:
  Quiet();
  ~Quiet();
  Quiet(const Quiet&) = delete;
  Quiet& operator=(const Quiet&) = delete;
};

}  // namespace etherctl::datapath
