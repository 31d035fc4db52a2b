// A problem found in a site file: where (a JSON pointer) and what.
#pragma once

#include <string>
#include <vector>

namespace etherctl::model {

struct Problem {
  std::string path;  // JSON pointer ("/devices/dc1/vlans/servers/tag"); "" for the whole file
  std::string message;
};

using Problems = std::vector<Problem>;

// "/devices/dc1" + "vlans" -> "/devices/dc1/vlans", escaping '~' and '/' as RFC 6901 says.
std::string pointer_append(const std::string& pointer, const std::string& token);

}  // namespace etherctl::model
