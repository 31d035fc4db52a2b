// The intent journal: crash safety for creates that take more than one kernel request.
//
// A link is created by one netlink request and marked as etherctl's (IFLA_IFALIAS, which the
// kernel ignores on create) by a second one; a tunnel is a veth pair, two marks and its
// datapath. A run killed in between leaves an object that is half made: an unmarked link with
// the desired name looks foreign to every later run (a conflict that blocks apply), a tunnel
// without its programs carries nothing. So before such a create the run appends an intent
// line to the journal, after it a done line; the next run that writes (under the same lock)
// reads the journal first and abandons every create that has no done line (KindOps::abandon:
// remove the link, detach and forget the datapath entry), and the plan then creates them
// afresh. The journal is removed when a run ends, whatever its outcome; it only exists after
// a run was killed.
//
// File: StateDir::journal() (state_dir.hpp), JSON lines. The first line names the boot and the
// network namespace (cookie): a journal of another boot or of another namespace that reused
// the inode is discarded, never acted upon.
#pragma once

#include <string>
#include <vector>

#include "kernel/kind.hpp"
#include "plan/object.hpp"

namespace etherctl::engine {

class Journal {
 public:
  explicit Journal(std::string path);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Before and after a create of `object`; creates of kinds without an abandon hook are not
  // journaled (they take one request). Throws std::runtime_error when the file cannot be
  // written: a create that could not be recovered is not started.
  void begin_create(const plan::Object& object);
  void end_create();
  // The run is over (success, or failure after the rollback): removes the file.
  void finish();

  // Recovers from a killed run: abandons its unfinished creates and removes the file. Returns
  // one line per repair (empty when there was no journal). Throws std::runtime_error when an
  // abandon fails; the file then stays for the next run.
  static std::vector<std::string> recover(const std::string& path, kernel::Netlink& netlink);

 private:
  std::string path_;
  int fd_ = -1;
  std::string pending_;  // "<kind> <key>" of the create in progress
  void append(const std::string& line);
};

}  // namespace etherctl::engine
