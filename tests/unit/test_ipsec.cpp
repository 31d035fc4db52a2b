// The "ipsec" member of a tunnel: parsing, the key-file rules, and that the key never shows.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/site.hpp"

namespace fs = std::filesystem;
using etherctl::model::esp_overhead;
using etherctl::model::Ipsec;
using etherctl::model::load_site;
using etherctl::model::Problems;

namespace {

// A key nobody would write in a message by accident: every test checks it never appears.
const std::string kKey = "K3y-that-must-never-show-up-anywhere-0123456789";

class IpsecModel : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("etherctl-ipsec-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    psk_ = write("dcx.psk", kKey + "\n", 0600);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& content, mode_t mode) {
    fs::path file = dir_ / name;
    std::ofstream(file) << content;
    ::chmod(file.c_str(), mode);
    return file.string();
  }

  // A two-device site whose tunnel "dcx" has `ipsec`.
  static std::string site(const nlohmann::json& ipsec, bool fast_path = false) {
    nlohmann::json edge = {
        {"vlans",
         {{"wan", {{"interface", "eth0"}}}, {"servers", {{"interface", "eth1"}, {"tag", 100}}}}},
        {"vlan_groups", {{"vmotion", {{"members", {"servers", "dcx"}}}}}}};
    nlohmann::json doc = {{"etherctl", 1}, {"devices", {{"dc1", edge}, {"dc2", edge}}}};
    doc["devices"]["dc1"]["self_ips"] = {
        {"wan", {{"address", "198.51.100.1/24"}, {"vlan", "wan"}}}};
    doc["devices"]["dc2"]["self_ips"] = {{"wan", {{"address", "203.0.113.1/24"}, {"vlan", "wan"}}}};
    doc["tunnels"]["dcx"] = {{"profile", "etherip"},
                             {"endpoints", {{"dc1", "198.51.100.1"}, {"dc2", "203.0.113.1"}}},
                             {"ipsec", ipsec}};
    if (fast_path) doc["tunnels"]["dcx"]["fast_path"] = true;
    return doc.dump();
  }

  // The problems of loading, checked never to contain the key.
  static Problems problems(const std::string& text) {
    auto result = load_site(text);
    for (const auto& p : result.problems) {
      EXPECT_EQ(p.message.find(kKey), std::string::npos) << p.path;
      EXPECT_EQ(p.message.find(kKey.substr(0, 12)), std::string::npos) << p.path;
    }
    EXPECT_EQ(result.site.has_value(), result.problems.empty());
    return result.problems;
  }

  static std::string only(const Problems& problems, const std::string& path) {
    EXPECT_EQ(problems.size(), 1u);
    for (const auto& p : problems) {
      EXPECT_EQ(p.path, path) << p.message;
      return p.message;
    }
    return "";
  }

  fs::path dir_;
  std::string psk_;
};

const char* kPskPath = "/tunnels/dcx/ipsec/psk_file";

}  // namespace

TEST_F(IpsecModel, PskDefaults) {
  auto result = load_site(site({{"psk_file", psk_}}));
  ASSERT_TRUE(result.site);
  const auto& ipsec = *result.site->tunnels.at("dcx").ipsec;
  EXPECT_EQ(ipsec.path, "/tunnels/dcx/ipsec");
  EXPECT_EQ(ipsec.mode, "transport");
  EXPECT_EQ(ipsec.ike_proposal, "aes256gcm16-prfsha384-ecp384");
  EXPECT_EQ(ipsec.esp_proposal, "aes256gcm16-ecp384");
  EXPECT_EQ(ipsec.ike_rekey_seconds, 14400);
  EXPECT_EQ(ipsec.child_rekey_seconds, 3600);
  EXPECT_EQ(ipsec.dpd_seconds, 10);
  EXPECT_EQ(etherctl::model::read_psk(psk_), kKey);  // one trailing newline dropped
}

TEST_F(IpsecModel, EverySetting) {
  auto result = load_site(site({{"psk_file", psk_},
                                {"mode", "tunnel"},
                                {"proposals",
                                 {{"ike", "aes128gcm16-prfsha256-curve25519"},
                                  {"esp", "aes128gcm16-curve25519,aes256gcm16"}}},
                                {"lifetimes", {{"ike_rekey", 600}, {"child_rekey", 20}}},
                                {"dpd_delay", 3},
                                {"identities", {{"dc1", "dc1.example.net"}}}}));
  ASSERT_TRUE(result.site);
  const auto& ipsec = *result.site->tunnels.at("dcx").ipsec;
  EXPECT_EQ(ipsec.mode, "tunnel");
  EXPECT_EQ(ipsec.esp_proposal, "aes128gcm16-curve25519,aes256gcm16");
  EXPECT_EQ(ipsec.ike_rekey_seconds, 600);
  EXPECT_EQ(ipsec.child_rekey_seconds, 20);
  EXPECT_EQ(ipsec.dpd_seconds, 3);
  EXPECT_EQ(ipsec.identities.at("dc1"), "dc1.example.net");
}

// What ESP adds at most (RFC 4303 framing: SPI 4 + sequence 4, IV, padding to the block,
// pad length 1 + next header 1, ICV; tunnel mode: an outer IPv4 header), for the MSS clamp.
TEST(EspOverhead, ByModeAndAlgorithms) {
  Ipsec ipsec;  // defaults: transport, aes256gcm16
  EXPECT_EQ(esp_overhead(ipsec), 8 + 8 + 3 + 2 + 16);
  ipsec.mode = "tunnel";
  EXPECT_EQ(esp_overhead(ipsec), 8 + 8 + 3 + 2 + 16 + 20);
  ipsec.mode = "transport";
  ipsec.esp_proposal = "aes128gcm8-modp2048";  // ICV 8 bytes
  EXPECT_EQ(esp_overhead(ipsec), 8 + 8 + 3 + 2 + 8);
  ipsec.esp_proposal = "aes128gcm128";  // ICV in bits: 16 bytes
  EXPECT_EQ(esp_overhead(ipsec), 8 + 8 + 3 + 2 + 16);
  ipsec.esp_proposal = "chacha20poly1305-x25519";
  EXPECT_EQ(esp_overhead(ipsec), 8 + 8 + 3 + 2 + 16);
  // CBC: a 16-byte IV and block; the largest of several proposals counts.
  ipsec.esp_proposal = "aes128gcm16,aes256-sha512-ecp384";
  EXPECT_EQ(esp_overhead(ipsec), 8 + 16 + 15 + 2 + 32);
  ipsec.esp_proposal = "aes256ctr-sha256";
  EXPECT_EQ(esp_overhead(ipsec), 8 + 8 + 3 + 2 + 16);
  // A cipher it does not know: the largest shape, never too little.
  ipsec.esp_proposal = "sm4cbc-sm3";
  EXPECT_EQ(esp_overhead(ipsec), 8 + 16 + 15 + 2 + 32);
}

TEST_F(IpsecModel, PskFileRules) {
  EXPECT_NE(only(problems(site({{"psk_file", (dir_ / "missing").string()}})), kPskPath)
                .find("No such file"),
            std::string::npos);
  EXPECT_NE(
      only(problems(site({{"psk_file", write("empty", "", 0600)}})), kPskPath).find("is empty"),
      std::string::npos);
  EXPECT_NE(
      only(problems(site({{"psk_file", write("newline", "\n", 0600)}})), kPskPath).find("is empty"),
      std::string::npos);
  std::string short_key = kKey.substr(0, 31);
  auto message = only(problems(site({{"psk_file", write("short", short_key, 0600)}})), kPskPath);
  EXPECT_NE(message.find("holds 31 bytes"), std::string::npos) << message;
  EXPECT_NE(message.find("at least 32"), std::string::npos) << message;
  // 32 bytes plus the newline an editor adds: fine.
  EXPECT_TRUE(
      problems(site({{"psk_file", write("exact", kKey.substr(0, 32) + "\n", 0600)}})).empty());
  for (mode_t mode : {0640, 0604, 0660, 0620, 0602, 0644}) {
    auto m = only(problems(site({{"psk_file", write("open", kKey, mode)}})), kPskPath);
    EXPECT_NE(m.find("group or others"), std::string::npos) << m;
  }
  EXPECT_NE(
      only(problems(site({{"psk_file", dir_.string()}})), kPskPath).find("not a regular file"),
      std::string::npos);
  EXPECT_NE(only(problems(site({{"psk_file", "relative.psk"}})), kPskPath).find("absolute"),
            std::string::npos);
}

TEST_F(IpsecModel, AuthenticationChoice) {
  EXPECT_NE(only(problems(site(nlohmann::json::object())), "/tunnels/dcx/ipsec")
                .find("needs a way to authenticate"),
            std::string::npos);
  std::string cert = write("cert.pem", "-----BEGIN CERTIFICATE-----\n", 0644);
  std::string key = write("key.pem", "-----BEGIN PRIVATE KEY-----\n", 0600);
  EXPECT_NE(only(problems(site({{"psk_file", psk_}, {"certificate", cert}})), kPskPath)
                .find("choose one way"),
            std::string::npos);
  EXPECT_NE(only(problems(site({{"certificate", cert}, {"key", key}})), "/tunnels/dcx/ipsec")
                .find("needs \"ca\""),
            std::string::npos);
  EXPECT_TRUE(problems(site({{"certificate", cert}, {"key", key}, {"ca", cert}})).empty());
  std::string open_key = write("open-key.pem", "-----BEGIN PRIVATE KEY-----\n", 0644);
  EXPECT_NE(only(problems(site({{"certificate", cert}, {"key", open_key}, {"ca", cert}})),
                 "/tunnels/dcx/ipsec/key")
                .find("group or others"),
            std::string::npos);
}

TEST_F(IpsecModel, SettingsAreChecked) {
  EXPECT_NE(only(problems(site({{"psk_file", psk_}, {"mode", "beet"}})), "/tunnels/dcx/ipsec/mode")
                .find("\"transport\""),
            std::string::npos);
  EXPECT_NE(only(problems(site({{"psk_file", psk_}, {"proposals", {{"esp", "3des-md5"}}}})),
                 "/tunnels/dcx/ipsec/proposals/esp")
                .find("no or broken protection"),
            std::string::npos);
  EXPECT_NE(only(problems(site({{"psk_file", psk_}, {"proposals", {{"ike", "AES GCM"}}}})),
                 "/tunnels/dcx/ipsec/proposals/ike")
                .find("not a strongSwan proposal"),
            std::string::npos);
  only(problems(site({{"psk_file", psk_}, {"proposals", {{"esp", "aes256gcm16,"}}}})),
       "/tunnels/dcx/ipsec/proposals/esp");
  only(problems(site({{"psk_file", psk_}, {"lifetimes", {{"child_rekey", 5}}}})),
       "/tunnels/dcx/ipsec/lifetimes/child_rekey");
  only(problems(site({{"psk_file", psk_}, {"lifetime", 5}})), "/tunnels/dcx/ipsec/lifetime");
  EXPECT_NE(only(problems(site({{"psk_file", psk_}, {"identities", {{"dc3", "x"}}}})),
                 "/tunnels/dcx/ipsec/identities/dc3")
                .find("unknown endpoint device"),
            std::string::npos);
  only(problems(site({{"psk_file", psk_}, {"identities", {{"dc1", "a\"b"}}}})),
       "/tunnels/dcx/ipsec/identities/dc1");
}

TEST_F(IpsecModel, FastPathIsRefused) {
  EXPECT_NE(
      only(problems(site({{"psk_file", psk_}}, true)), "/tunnels/dcx/fast_path").find("past IPsec"),
      std::string::npos);
}

TEST_F(IpsecModel, Ipv6EndpointsAreRefused) {
  auto doc = nlohmann::json::parse(site({{"psk_file", psk_}}));
  doc["devices"]["dc1"]["self_ips"]["wan"]["address"] = "2001:db8:1::1/64";
  doc["devices"]["dc2"]["self_ips"]["wan"]["address"] = "2001:db8:2::1/64";
  doc["tunnels"]["dcx"]["endpoints"] = {{"dc1", "2001:db8:1::1"}, {"dc2", "2001:db8:2::1"}};
  EXPECT_NE(only(problems(doc.dump()), "/tunnels/dcx/ipsec").find("IPv4"), std::string::npos);
}
