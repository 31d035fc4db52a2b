// Reading one JSON object of the site file field by field, collecting problems with pointers.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "model/problem.hpp"

namespace etherctl::model {

// Closest candidate by edit distance, or "" when none is close enough to be a likely typo.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

class Fields {
 public:
  // Reports a problem unless `value` is an object, and one for each key not in `allowed`.
  Fields(const nlohmann::json& value, std::string path, Problems& problems,
         std::vector<std::string> allowed);

  bool ok() const { return object_ != nullptr; }
  const std::string& path() const { return path_; }
  std::string path_of(const std::string& key) const { return pointer_append(path_, key); }
  bool has(const std::string& key) const;

  std::optional<std::string> string(const std::string& key, bool required);
  std::optional<int64_t> integer(const std::string& key, bool required, int64_t min, int64_t max);
  std::optional<bool> boolean(const std::string& key);
  // A number of seconds with centisecond resolution (0.1, 1, 2.25): the count of centiseconds,
  // between min and max. Problems for other types, ranges and finer fractions.
  std::optional<int> centiseconds(const std::string& key, int min, int max);
  // Returns the member if it is an object (problem otherwise); nullptr when absent.
  const nlohmann::json* object(const std::string& key, bool required);
  const nlohmann::json* array(const std::string& key, bool required);
  // Records a problem at this object's member `key`.
  void problem(const std::string& key, std::string message);

 private:
  const nlohmann::json* member(const std::string& key, bool required);

  const nlohmann::json* object_ = nullptr;
  std::string path_;
  Problems& problems_;
};

// JSON type name for messages ("a string", "an object", ...).
std::string json_type_name(const nlohmann::json& value);

}  // namespace etherctl::model
