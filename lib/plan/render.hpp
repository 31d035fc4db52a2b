// A plan for people (a readable diff, coloured on terminals) and for programs (JSON).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "plan/plan.hpp"

namespace etherctl::plan {

// One JSON object per change: {"op", "kind", "name", "path", "before", "after"}.
nlohmann::json changes_json(const Plan& plan);
nlohmann::json summary_json(const Plan& plan);

// The plan as lines "+ kind name  path" with attribute details; `color` adds ANSI colours.
std::string render_text(const Plan& plan, bool color);

}  // namespace etherctl::plan
