// Where the namespace's shared maps live: pinned under bpffs in a directory per network
// namespace, or (an `ip netns exec` run whose private bpffs is gone) recovered from the programs
// attached to the namespace's devices. Internal to lib/datapath.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "datapath/support.hpp"
#include "datapath/types.hpp"

namespace etherctl::datapath {

// The maps shared by every program instance of a namespace (the reassembly table too: pieces
// of one datagram may reach two instances during a re-apply); zeroes and scratch are private to
// each loaded instance.
constexpr std::array<const char*, 7> kPinnedMaps = {"tunnels", "ports",        "peers",    "locals",
                                                    "stats",   "frag_buckets", "frag_bufs"};
// Pins of earlier versions, removed with the directory.
constexpr std::array<const char*, 1> kLegacyPins = {"frags"};

bool is_shared_map(std::string_view name);

// Mounts bpffs on path unless one is there.
void ensure_bpffs(const std::string& path);

// "<bpffs>/etherctl/cookie-<netns cookie>" (inode-<netns inode> before Linux 5.14).
std::string pin_dir_for(const std::string& bpffs);

// The id of the map behind fd (0 when unknown), and of the map pinned at path.
uint32_t map_id(int fd);
uint32_t pinned_map_id(const std::string& path);

// The namespace's shared maps, from the pins or else from the attached programs.
std::map<std::string, Fd> shared_maps(const std::string& dir);

// Removes the pin directories of namespaces that are gone (no loaded program uses their maps
// any more: a namespace deleted without `destroy`). apply() calls it.
void collect_orphaned_pins(const Options& options = {});

}  // namespace etherctl::datapath
