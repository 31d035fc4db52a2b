// The xfrm states (SAs) the kernel holds for an IPsec tunnel's reqid, as `status` reports them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace etherctl::kernel {

struct XfrmState {
  std::string source;
  std::string destination;
  uint32_t spi = 0;  // 0: larval (what the kernel keeps for the key manager after an acquire)
};

// The states of `reqid` in the current network namespace, both directions; empty when the
// kernel has no xfrm.
std::vector<XfrmState> xfrm_states_of(uint32_t reqid);

}  // namespace etherctl::kernel
