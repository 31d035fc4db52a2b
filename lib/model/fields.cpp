#include "model/fields.hpp"

#include <algorithm>
#include <cmath>

namespace etherctl::model {

std::string pointer_append(const std::string& pointer, const std::string& token) {
  std::string escaped;
  for (char c : token) {
    if (c == '~') {
      escaped += "~0";
    } else if (c == '/') {
      escaped += "~1";
    } else {
      escaped += c;
    }
  }
  return pointer + "/" + escaped;
}

static size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& candidate : candidates) {
    size_t d = edit_distance(word, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best;
}

std::string json_type_name(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::object:
      return "an object";
    case nlohmann::json::value_t::array:
      return "an array";
    case nlohmann::json::value_t::string:
      return "a string";
    case nlohmann::json::value_t::boolean:
      return "a boolean";
    case nlohmann::json::value_t::number_float:
      return "a fractional number";
    default:
      return "a number";
  }
}

Fields::Fields(const nlohmann::json& value, std::string path, Problems& problems,
               std::vector<std::string> allowed)
    : path_(std::move(path)), problems_(problems) {
  if (!value.is_object()) {
    problems_.push_back({path_, "must be an object, not " + json_type_name(value)});
    return;
  }
  object_ = &value;
  for (const auto& [key, unused] : value.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string message = "unknown key \"" + key + "\"";
    std::string suggestion = closest_match(key, allowed);
    if (!suggestion.empty()) {
      message += "; did you mean \"" + suggestion + "\"?";
    } else {
      std::sort(allowed.begin(), allowed.end());
      message += " (allowed:";
      for (const auto& a : allowed) message += " " + a;
      message += ")";
    }
    problems_.push_back({pointer_append(path_, key), message});
  }
}

bool Fields::has(const std::string& key) const { return object_ && object_->contains(key); }

void Fields::problem(const std::string& key, std::string message) {
  problems_.push_back({path_of(key), std::move(message)});
}

const nlohmann::json* Fields::member(const std::string& key, bool required) {
  if (!object_) return nullptr;
  auto it = object_->find(key);
  if (it == object_->end()) {
    if (required) problems_.push_back({path_, "missing required key \"" + key + "\""});
    return nullptr;
  }
  return &*it;
}

std::optional<std::string> Fields::string(const std::string& key, bool required) {
  const auto* value = member(key, required);
  if (!value) return std::nullopt;
  if (!value->is_string()) {
    problem(key, "must be a string, not " + json_type_name(*value));
    return std::nullopt;
  }
  return value->get<std::string>();
}

std::optional<int64_t> Fields::integer(const std::string& key, bool required, int64_t min,
                                       int64_t max) {
  const auto* value = member(key, required);
  if (!value) return std::nullopt;
  if (!value->is_number_integer()) {
    problem(key, "must be an integer, not " + json_type_name(*value));
    return std::nullopt;
  }
  // Unsigned values beyond int64 are out of range too.
  if (value->is_number_unsigned() && value->get<uint64_t>() > static_cast<uint64_t>(max)) {
    problem(key,
            value->dump() + " is out of range " + std::to_string(min) + ".." + std::to_string(max));
    return std::nullopt;
  }
  int64_t number = value->get<int64_t>();
  if (number < min || number > max) {
    problem(key, std::to_string(number) + " is out of range " + std::to_string(min) + ".." +
                     std::to_string(max));
    return std::nullopt;
  }
  return number;
}

std::optional<bool> Fields::boolean(const std::string& key) {
  const auto* value = member(key, false);
  if (!value) return std::nullopt;
  if (!value->is_boolean()) {
    problem(key, "must be true or false, not " + json_type_name(*value));
    return std::nullopt;
  }
  return value->get<bool>();
}

std::optional<int> Fields::centiseconds(const std::string& key, int min, int max) {
  const auto* value = member(key, false);
  if (!value) return std::nullopt;
  if (!value->is_number()) {
    problem(key, "must be a number of seconds, not " + json_type_name(*value));
    return std::nullopt;
  }
  const double seconds = value->get<double>();
  const double hundredths = seconds * 100;
  auto text = [](int centi) {
    std::string digits = std::to_string(centi % 100);
    return std::to_string(centi / 100) + "." + (digits.size() == 1 ? "0" + digits : digits);
  };
  if (!(hundredths >= min - 1e-6 && hundredths <= max + 1e-6)) {
    problem(key, value->dump() + " is out of range " + text(min) + ".." + text(max) + " seconds");
    return std::nullopt;
  }
  const double rounded = std::round(hundredths);
  if (std::abs(hundredths - rounded) > 1e-6) {
    problem(key, value->dump() + " is not a whole number of hundredths of a second");
    return std::nullopt;
  }
  return static_cast<int>(rounded);
}

const nlohmann::json* Fields::object(const std::string& key, bool required) {
  const auto* value = member(key, required);
  if (!value) return nullptr;
  if (!value->is_object()) {
    problem(key, "must be an object, not " + json_type_name(*value));
    return nullptr;
  }
  return value;
}

const nlohmann::json* Fields::array(const std::string& key, bool required) {
  const auto* value = member(key, required);
  if (!value) return nullptr;
  if (!value->is_array()) {
    problem(key, "must be an array, not " + json_type_name(*value));
    return nullptr;
  }
  return value;
}

}  // namespace etherctl::model
