// Test support for kernel tests: throwaway network namespaces, shell commands, and skipping
// (or, in the stock-kernel VM, failing) tests whose kernel feature is missing.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace etherctl::test {

// Runs `command` with /bin/sh in the calling thread's network namespace and returns its
// standard output. Throws std::runtime_error with the exit status and standard error when
// the command fails.
std::string run(const std::string& command);

struct RunResult {
  int status = 0;      // exit status; 128 + signal when killed
  std::string output;  // standard output
  std::string error;   // standard error
};
// Runs `command` and returns whatever happened; never throws for a failing command.
RunResult run_status(const std::string& command);

// A uniquely named network namespace ("ectest-<pid>-<n>", made with `ip netns add`) that the
// calling thread enters for its lifetime. The destructor returns to the namespace the thread
// was in and deletes this one, also when the test failed. Namespaces left behind by a test
// process that died (crash, SIGKILL) are deleted by the next TestNetns.
class TestNetns {
 public:
  TestNetns();
  ~TestNetns();
  TestNetns(const TestNetns&) = delete;
  TestNetns& operator=(const TestNetns&) = delete;

  const std::string& name() const { return name_; }

 private:
  std::string name_;
  int original_ = -1;  // fd of the namespace to return to
};

// Why `feature` is missing on this kernel, or nullopt when it works. Features: "vlan" (802.1Q
// devices), "ipvs", "vlan_filtering" (bridge VLAN filtering), "bridge". The probe runs once per
// process, in a throwaway namespace of its own, so it never touches the test's namespace.
std::optional<std::string> missing_feature(const std::string& feature);

// True when ETHERCTL_REQUIRE_ALL_FEATURES=1: the stock-kernel VM sets it so that a missing
// feature fails the test instead of silently skipping it.
bool require_all_features();

}  // namespace etherctl::test

// Skips the current test with the reason when the kernel lacks `feature`, or fails it when
// ETHERCTL_REQUIRE_ALL_FEATURES=1. A macro, so that the skip returns from the test body.
#define ETHERCTL_REQUIRE_FEATURE(feature)                                                      \
  do {                                                                                         \
    if (auto etherctl_missing_ = ::etherctl::test::missing_feature(feature)) {                 \
      if (::etherctl::test::require_all_features()) {                                          \
        FAIL() << "kernel feature \"" << (feature)                                             \
               << "\" is missing and ETHERCTL_REQUIRE_ALL_FEATURES=1: " << *etherctl_missing_; \
      }                                                                                        \
      GTEST_SKIP() << *etherctl_missing_;                                                      \
    }                                                                                          \
  } while (false)

// The spelling of the brief: require_feature("vlan").
#define require_feature(feature) ETHERCTL_REQUIRE_FEATURE(feature)
