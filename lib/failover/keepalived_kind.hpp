// Kind "keepalived": a failover unit's keepalived, its configuration file and its processes,
// planned and applied like the kernel objects. Key: the failover group. Attributes:
//   config_digest (compared: a change is written and keepalived reloads it), config_file
//   (immutable: another file is another keepalived); desired only: config (the text), pid_file,
//   vrrp_pid_file, log_file; observed only: pid.
// Ownership: a keepalived of this network namespace whose configuration file starts with the
// header etherctl writes for this device (keepalived.cpp). The processes are the source of
// truth: a keepalived that crashed is missing, and the next apply starts it again.
// Register it at start-up: etherctl::kernel::register_kind(keepalived_kind_ops()).
#pragma once

#include <string>

#include "failover/files.hpp"
#include "kernel/kind.hpp"
#include "model/site.hpp"

namespace etherctl::failover {

inline constexpr const char* kKeepalivedBinary = "/usr/sbin/keepalived";

const kernel::KindOps& keepalived_kind_ops();

// The keepalived `device` of failover group `group` runs: its configuration rendered with
// `files`.
plan::Object desired_keepalived(const model::Site& site, const model::Device& device,
                                const model::FailoverGroup& group, const FailoverFiles& files);

// An observed keepalived as create and modify take it (what the revert of an unconfirmed apply
// puts back, lib/engine/confirm.hpp): its configuration text as the file holds it now, and the
// files of its directory.
plan::Object restorable_keepalived(const plan::Object& observed);

}  // namespace etherctl::failover
