// Durations on the command line: "500ms", "30s", "2m" (or "2min"), "1h", or a plain number of
// seconds. One syntax for --confirm-within, --interval and --debounce.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace etherctl::engine {

// nullopt when malformed (no digits, more than 9 of them, an unknown unit). Callers check
// their own range.
std::optional<std::chrono::milliseconds> parse_duration(const std::string& text);

}  // namespace etherctl::engine
