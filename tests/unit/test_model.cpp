// Parsing and validation of site files, including the catalogue of invalid files.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/site.hpp"

namespace fs = std::filesystem;
using etherctl::model::load_site;
using etherctl::model::load_site_file;
using etherctl::model::Problems;

namespace {

const fs::path kSource = ETHERCTL_SOURCE_DIR;

std::string dump(const Problems& problems) {
  std::string out;
  for (const auto& p : problems) out += "  " + p.path + ": " + p.message + "\n";
  return out;
}

}  // namespace

TEST(Model, ExampleFromTheIssueLoads) {
  auto result = load_site_file(kSource / "examples/site.json");
  ASSERT_TRUE(result.site) << dump(result.problems);
  const auto& device = result.site->devices.at("dc1-edge");
  EXPECT_EQ(device.vlans.at("servers").tag, 100);
  EXPECT_EQ(device.vlans.at("wan").ifname(), "eth0");
  EXPECT_EQ(device.vlans.at("servers").ifname(), "servers");
  EXPECT_EQ(device.vlan_groups.at("vmotion").mode, "transparent");
  EXPECT_EQ(device.self_ips.at("server-v6").address.str(), "2001:db8:1::1/64");
  EXPECT_EQ(device.routes.at("to-dc2").gateway->str(), "198.51.100.254");
}

TEST(Model, EveryExampleIsValid) {
  int checked = 0;
  for (const auto& entry : fs::recursive_directory_iterator(kSource / "examples")) {
    if (entry.path().extension() != ".json" || entry.path().filename() == "package.json") continue;
    auto result = load_site_file(entry.path());
    EXPECT_TRUE(result.site) << entry.path() << "\n" << dump(result.problems);
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

// Each file in tests/catalogue/invalid must fail with the listed pointers and messages.
TEST(Model, CatalogueOfInvalidFiles) {
  std::ifstream in(kSource / "tests/catalogue/expected.json");
  auto expected = nlohmann::json::parse(in);
  int files = 0;
  for (const auto& [name, problems] : expected.items()) {
    etherctl::model::LoadResult result;
    if (name == "huge-file") {
      result = load_site(std::string(17 * 1024 * 1024, ' '));
    } else {
      fs::path file = kSource / "tests/catalogue/invalid" / (name + ".json");
      ASSERT_TRUE(fs::exists(file)) << file;
      result = load_site_file(file);
    }
    ++files;
    EXPECT_FALSE(result.site) << name << " was accepted";
    for (const auto& want : problems) {
      std::string path = want["path"], contains = want["contains"];
      bool found = std::any_of(result.problems.begin(), result.problems.end(), [&](auto& p) {
        return p.path == path && p.message.find(contains) != std::string::npos;
      });
      EXPECT_TRUE(found) << name << ": expected " << path << ": ..." << contains << "...\ngot:\n"
                         << dump(result.problems);
    }
  }
  EXPECT_GE(files, 60);
}

TEST(Model, AllErrorsInOneRun) {
  auto result = load_site(R"({
    "etherctl": 1,
    "devices": { "d": {
      "vlans": { "a": { "interface": "eth1", "tag": 5000 }, "b": { "interface": "eth1", "tag": 0 } },
      "self_ips": { "s": { "address": "10.0.0.1", "vlan": "x" } }
    } }
  })");
  ASSERT_FALSE(result.site);
  EXPECT_EQ(result.problems.size(), 4u) << dump(result.problems);
}

TEST(Model, PointersEscapeSpecialCharacters) {
  auto result = load_site(
      R"({"etherctl": 1, "devices": {"d": {"vlans": {"a/b~c": {"interface": "eth0", "tag": 9999}}}}})");
  ASSERT_FALSE(result.site);
  bool found = std::any_of(result.problems.begin(), result.problems.end(),
                           [](auto& p) { return p.path == "/devices/d/vlans/a~1b~0c/tag"; });
  EXPECT_TRUE(found) << dump(result.problems);
}

TEST(Model, SelectDevice) {
  auto result = load_site(R"({"etherctl": 1, "devices": {"a": {}, "b": {}}})");
  ASSERT_TRUE(result.site) << dump(result.problems);
  std::string error;
  EXPECT_EQ(select_device(*result.site, std::nullopt, "b", &error)->name, "b");
  EXPECT_EQ(select_device(*result.site, std::string("a"), "b", &error)->name, "a");
  EXPECT_EQ(select_device(*result.site, std::nullopt, "c", &error), nullptr);
  EXPECT_NE(error.find("devices: a, b"), std::string::npos) << error;
  EXPECT_EQ(select_device(*result.site, std::string("z"), "a", &error), nullptr);
}

// Regressions found by the site fuzzer (tests/fuzz/site_fuzzer.cpp).

// Problems are printed as JSON (--json), which holds only UTF-8: nlohmann's syntax errors quote
// the ill-formed bytes they stopped at; etherctl --json validate aborted on such a file.
TEST(Model, SyntaxErrorsAreValidUtf8) {
  auto result = load_site("{\"etherctl\": 1, \"devices\": {\"dc\xff\": {}}}");
  ASSERT_EQ(result.problems.size(), 1u) << dump(result.problems);
  const auto& message = result.problems[0].message;
  EXPECT_NE(message.find("ill-formed UTF-8"), std::string::npos) << message;
  EXPECT_NE(message.find("dc\\xFF"), std::string::npos) << message;
  EXPECT_NO_THROW((void)nlohmann::json(message).dump());
  // Well-formed multi-byte characters stay as they are.
  result = load_site("{\"\xc3\xa9\": [1,]}");
  ASSERT_EQ(result.problems.size(), 1u) << dump(result.problems);
  EXPECT_NO_THROW((void)nlohmann::json(result.problems[0].message).dump());
}

// A number beyond the range of a double is an error of the file, not an exception (etherctl
// exited 1 with "internal error").
TEST(Model, NumberOverflowIsASyntaxError) {
  auto result = load_site("{\"etherctl\": 1, \"devices\": {},\n \"description\": 1e400}");
  ASSERT_EQ(result.problems.size(), 1u) << dump(result.problems);
  EXPECT_EQ(result.problems[0].path, "");
  EXPECT_EQ(result.problems[0].message.rfind("line 2, column ", 0), 0u) << dump(result.problems);
  EXPECT_NE(result.problems[0].message.find("number overflow parsing '1e400'"), std::string::npos)
      << dump(result.problems);
}

// A missing key is one problem at its object, not also a second one at a pointer that does not
// exist in the file.
TEST(Model, MissingKeysCauseNoProblemsAtMissingPlaces) {
  auto result = load_site(R"({"etherctl": 1, "devices": {"d": {
      "vlans": {"w": {"interface": "eth0"}},
      "self_ips": {"s": {"address": "10.0.0.1/24"}}}},
    "tunnels": {"t": {"profile": "etherip"}}})");
  ASSERT_FALSE(result.site);
  EXPECT_EQ(dump(result.problems),
            "  /devices/d/self_ips/s: missing required key \"vlan\"\n"
            "  /tunnels/t: missing required key \"endpoints\"\n");
  result = load_site(R"({"etherctl": 1, "devices": {"d": {
      "vlans": {"w": {"interface": "eth0"}},
      "self_ips": {"s": {"address": "10.0.0.1/24", "vlan": ""}}}}})");
  EXPECT_EQ(dump(result.problems),
            "  /devices/d/self_ips/s/vlan: must name a VLAN or VLAN group, not be empty\n");
}

// A tagged VLAN on an interface the file itself creates was accepted, and planned so that the
// apply failed: the parent adopted under the name of a bridge or tunnel (two objects with one
// interface name), or created after the VLAN on it.
TEST(Model, TaggedVlanParentMustExist) {
  auto check = [](const std::string& devices, const std::string& pointer,
                  const std::string& creator) {
    auto result = load_site(R"({"etherctl": 1, "devices": {"d": )" + devices + "}}");
    ASSERT_FALSE(result.site) << devices;
    bool found = std::any_of(result.problems.begin(), result.problems.end(), [&](auto& p) {
      return p.path == pointer &&
             p.message.find("is created by " + creator + "; a tagged VLAN's parent must be") !=
                 std::string::npos;
    });
    EXPECT_TRUE(found) << devices << "\n" << dump(result.problems);
  };
  // stacked: "a" would be created on "b" before "b" exists
  check(R"({"vlans": {"a": {"interface": "b", "tag": 10}, "b": {"interface": "eth0", "tag": 20}}})",
        "/devices/d/vlans/a/interface", "tagged VLAN \"b\"");
  check(R"({"vlans": {"a": {"interface": "a", "tag": 10}}})", "/devices/d/vlans/a/interface",
        "tagged VLAN \"a\"");
  check(R"({"vlans": {"a": {"interface": "br0", "tag": 10}, "u": {"interface": "eth0"}},
            "vlan_groups": {"br0": {"members": ["u"]}}})",
        "/devices/d/vlans/a/interface", "VLAN group \"br0\" (a bridge)");
  // An untagged VLAN's interface, adopted, is a fine parent.
  auto result = load_site(R"({"etherctl": 1, "devices": {"d": {"vlans": {
      "wan": {"interface": "eth0"}, "a": {"interface": "eth0", "tag": 10}}}}})");
  EXPECT_TRUE(result.site) << dump(result.problems);
}

TEST(Model, TaggedVlanOnATunnelIsRefused) {
  const std::string site = R"({"etherctl": 1,
    "devices": {
      "d": {"vlans": {"a": {"interface": "PARENT", "tag": 10}, "w": {"interface": "eth0"}},
            "self_ips": {"s": {"address": "10.0.0.1/24", "vlan": "w"}}},
      "e": {"vlans": {"w": {"interface": "eth0"}},
            "self_ips": {"s": {"address": "10.0.0.2/24", "vlan": "w"}}}},
    "tunnels": {"tx": {"profile": "etherip", "endpoints": {"d": "10.0.0.1", "e": "10.0.0.2"}}}})";
  for (const std::string parent : {"tx", "eip-tx"}) {
    std::string text = site;
    text.replace(text.find("PARENT"), 6, parent);
    auto result = load_site(text);
    ASSERT_EQ(result.problems.size(), 1u) << parent << "\n" << dump(result.problems);
    EXPECT_EQ(result.problems[0].path, "/devices/d/vlans/a/interface");
    EXPECT_NE(result.problems[0].message.find("is created by tunnel \"tx\""), std::string::npos)
        << dump(result.problems);
  }
}

// Endpoints: a device of the file (string, or {"address", "managed": true}) or a peer etherctl
// does not manage ({"address", "managed": false}); one of each, or two devices.
TEST(Model, UnmanagedTunnelEndpoints) {
  auto load = [](const std::string& endpoints) {
    return load_site(R"({"etherctl": 1, "devices": {
      "d": {"vlans": {"w": {"interface": "eth0"}},
            "self_ips": {"s": {"address": "10.0.0.1/24", "vlan": "w"}}}},
      "tunnels": {"t": {"profile": "etherip", "endpoints": )" +
                     endpoints + "}}}");
  };
  auto ok = load(R"({"d": "10.0.0.1", "bsd": {"address": "10.0.0.2", "managed": false}})");
  ASSERT_TRUE(ok.site) << dump(ok.problems);
  EXPECT_FALSE(ok.site->tunnels.at("t").endpoints.at("bsd").managed);
  EXPECT_EQ(ok.site->tunnels.at("t").endpoints.at("bsd").address.str(), "10.0.0.2");

  const std::vector<std::pair<std::string, std::string>> bad = {
      // Both unmanaged: no device of the file would carry it.
      {R"({"a": {"address": "10.0.0.1", "managed": false},
           "b": {"address": "10.0.0.2", "managed": false}})",
       "/tunnels/t/endpoints: both endpoints are unmanaged"},
      // A device of the file cannot be an unmanaged peer.
      {R"({"d": {"address": "10.0.0.1", "managed": false}, "x": "10.0.0.2"})",
       "/tunnels/t/endpoints/d: \"d\" is a device of this file"},
      // A managed endpoint that is no device: the message says how to declare a peer.
      {R"({"d": "10.0.0.1", "bsd": "10.0.0.2"})",
       "/tunnels/t/endpoints/bsd: unknown device \"bsd\""},
      {R"({"d": "10.0.0.1", "bsd": {"address": "10.0.0.300", "managed": false}})",
       "/tunnels/t/endpoints/bsd/address: \"10.0.0.300\" is not an IPv4 or IPv6 address"},
      {R"({"d": "10.0.0.1", "bsd": {"address": "10.0.0.2", "manged": false}})",
       "/tunnels/t/endpoints/bsd/manged"},
      {R"({"d": "10.0.0.1", "bsd": {"managed": false}})",
       "/tunnels/t/endpoints/bsd: missing required key \"address\""},
      {R"({"d": "10.0.0.1", "bsd": {"address": "2001:db8::2", "managed": false}})",
       "same address family"},
      {R"({"d": "10.0.0.1", "bsd": {"address": "10.0.0.1", "managed": false}})",
       "both endpoints have address 10.0.0.1"},
      {R"({"d": "10.0.0.1", "bsd": ["10.0.0.2"]})",
       "/tunnels/t/endpoints/bsd: must be the device's endpoint address (a string) or an "
       "object"},
  };
  for (const auto& [endpoints, expected] : bad) {
    auto result = load(endpoints);
    EXPECT_FALSE(result.site) << endpoints;
    EXPECT_NE(dump(result.problems).find(expected), std::string::npos) << endpoints << "\n"
                                                                       << dump(result.problems);
  }
  auto unknown = load(R"({"d": "10.0.0.1", "bsd": "10.0.0.2"})");
  EXPECT_NE(dump(unknown.problems).find("{\"address\": \"10.0.0.2\", \"managed\": false}"),
            std::string::npos)
      << dump(unknown.problems);
}
