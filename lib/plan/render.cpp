#include "plan/render.hpp"

#include <fmt/format.h>

namespace etherctl::plan {

namespace {

struct Style {
  const char* sign;
  const char* color;
};

Style style_of(Op op) {
  switch (op) {
    case Op::Create:
      return {"+", "\033[32m"};
    case Op::Modify:
      return {"~", "\033[33m"};
    case Op::Delete:
      return {"-", "\033[31m"};
  }
  return {"?", ""};
}

std::string attributes_line(const nlohmann::json& attrs) {
  std::string line;
  for (const auto& [key, value] : attrs.items()) {
    if (key == "ifindex") continue;
    line += fmt::format("{}{}: {}", line.empty() ? "" : ", ", key, value.dump());
  }
  return line;
}

}  // namespace

nlohmann::json changes_json(const Plan& plan) {
  nlohmann::json changes = nlohmann::json::array();
  for (const auto& change : plan.changes) {
    const Object& subject = change.subject();
    nlohmann::json entry = {{"op", to_string(change.op)},  {"kind", subject.kind},
                            {"name", subject.name},        {"key", subject.key},
                            {"path", change.desired.path}, {"before", change.before()},
                            {"after", change.after()}};
    if (!change.reason.empty()) entry["reason"] = change.reason;
    changes.push_back(std::move(entry));
  }
  return changes;
}

nlohmann::json summary_json(const Plan& plan) {
  return {{"create", plan.count(Op::Create)},
          {"modify", plan.count(Op::Modify)},
          {"delete", plan.count(Op::Delete)},
          {"unchanged", plan.unchanged}};
}

std::string render_text(const Plan& plan, bool color) {
  const char* reset = color ? "\033[0m" : "";
  const char* dim = color ? "\033[2m" : "";
  std::string out;
  for (const auto& change : plan.changes) {
    const Object& subject = change.subject();
    Style style = style_of(change.op);
    std::string where =
        change.desired.path.empty() ? "(not in the site file)" : change.desired.path;
    out += fmt::format(
        "  {}{} {} {}{}  {}{}{}\n", color ? style.color : "", style.sign, subject.kind,
        subject.name == subject.key ? subject.key : subject.name + " (" + subject.key + ")", reset,
        dim, where, reset);
    if (change.op == Op::Modify) {
      nlohmann::json before = change.before();
      nlohmann::json after = change.after();
      for (const auto& [key, want] : after.items()) {
        auto have = before.find(key);
        out += fmt::format("      {}: {} -> {}\n", key,
                           have == before.end() || have->is_null() ? "(unset)" : have->dump(),
                           want.dump());
      }
    } else {
      std::string attrs =
          attributes_line(change.op == Op::Create ? change.after() : change.before());
      if (!attrs.empty()) out += fmt::format("      {}\n", attrs);
    }
    if (!change.reason.empty())
      out += fmt::format("      {}because {}{}\n", dim, change.reason, reset);
  }
  out += fmt::format("{} to create, {} to modify, {} to delete, {} unchanged.\n",
                     plan.count(Op::Create), plan.count(Op::Modify), plan.count(Op::Delete),
                     plan.unchanged);
  return out;
}

}  // namespace etherctl::plan
