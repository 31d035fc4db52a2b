// VICI message encoding (against the README's own example) and the rendered connection.
#include <gtest/gtest.h>

#include "ipsec/connection.hpp"
#include "ipsec/vici.hpp"

using etherctl::ipsec::ConnectionSpec;
namespace vici = etherctl::ipsec::vici;

TEST(Vici, EncodesTheReadmeExample) {
  // key1 = value1, section1 = { sub-section = { key2 = value2 }, list1 = [ item1, item2 ] }
  vici::Message m = vici::Message::object();
  m["key1"] = "value1";
  m["section1"]["sub-section"]["key2"] = "value2";
  m["section1"]["list1"] = vici::Message::array({"item1", "item2"});
  const std::vector<uint8_t> expected = {
      3,   4,   'k', 'e', 'y', '1', 0,   6,   'v', 'a', 'l', 'u', 'e', '1', 1,   8,
      's', 'e', 'c', 't', 'i', 'o', 'n', '1', 1,   11,  's', 'u', 'b', '-', 's', 'e',
      'c', 't', 'i', 'o', 'n', 3,   4,   'k', 'e', 'y', '2', 0,   6,   'v', 'a', 'l',
      'u', 'e', '2', 2,   4,   5,   'l', 'i', 's', 't', '1', 5,   0,   5,   'i', 't',
      'e', 'm', '1', 5,   0,   5,   'i', 't', 'e', 'm', '2', 6,   2};
  EXPECT_EQ(vici::encode(m), expected);
  EXPECT_EQ(vici::decode(expected.data(), expected.size()), m);
}

TEST(Vici, RejectsMalformedMessages) {
  const std::vector<std::vector<uint8_t>> bad = {
      {1, 3, 'a', 'b', 'c'},         // section never closed
      {2},                           // end without start
      {3, 4, 'k'},                   // truncated name
      {3, 1, 'k', 0, 9, 'x'},        // value shorter than its length
      {5, 0, 1, 'x'},                // list item outside a list
      {4, 1, 'l', 4, 1, 'm', 6, 6},  // nested list
      {9},                           // unknown element
  };
  for (const auto& b : bad) EXPECT_THROW(vici::decode(b.data(), b.size()), vici::Error);
  EXPECT_THROW(vici::encode(vici::Message::array()), vici::Error);
  EXPECT_THROW(vici::Client("relative/path"), vici::Error);
  EXPECT_THROW(vici::Client("unix:///nonexistent/etherctl-test.vici"), vici::Error);
}

namespace {

ConnectionSpec spec() {
  ConnectionSpec s;
  s.tunnel = "dcx";
  s.local = "198.51.100.1";
  s.remote = "203.0.113.1";
  s.local_id = "CN=dc1, O=Example";
  s.remote_id = "203.0.113.1";
  s.mode = "transport";
  s.reqid = 0x45123456;
  s.ike_proposal = "aes256gcm16-prfsha384-ecp384";
  s.esp_proposal = "aes256gcm16-ecp384";
  s.ike_rekey = 14400;
  s.child_rekey = 20;
  s.dpd = 10;
  s.psk_file = "/etc/etherctl/dcx.psk";
  s.psk_fingerprint = "0123456789abcdef";
  return s;
}

}  // namespace

TEST(Vici, ConnectionForCharon) {
  auto m = etherctl::ipsec::load_conn_message(spec());
  const auto& conn = m["etherctl-dcx"];
  EXPECT_EQ(conn["local_addrs"], vici::Message::array({"198.51.100.1"}));
  EXPECT_EQ(conn["local"]["auth"], "psk");
  EXPECT_EQ(conn["local"]["id"], "CN=dc1, O=Example");
  const auto& child = conn["children"]["dcx"];
  EXPECT_EQ(child["policies"], "no");  // the policies are etherctl's
  EXPECT_EQ(child["reqid"], std::to_string(0x45123456));
  EXPECT_EQ(child["local_ts"], vici::Message::array({"198.51.100.1/32[97]"}));
  EXPECT_EQ(child["remote_ts"], vici::Message::array({"203.0.113.1/32[97]"}));
  EXPECT_EQ(child["rekey_time"], "20s");
  EXPECT_EQ(child["start_action"], "start");
  EXPECT_EQ(child["dpd_action"], "restart");
  // It encodes (every value a string or a list of strings).
  EXPECT_FALSE(vici::encode(m).empty());
  ConnectionSpec v6 = spec();
  v6.local = "2001:db8::1";
  v6.remote = "2001:db8::2";
  EXPECT_EQ(etherctl::ipsec::load_conn_message(v6)["etherctl-dcx"]["children"]["dcx"]["local_ts"],
            vici::Message::array({"2001:db8::1/128[97]"}));
}

TEST(Vici, FileKeepsTheSpecAndHidesNothingButTheKey) {
  const std::string key = "a-pre-shared-key-of-more-than-32-bytes!!";
  std::string text = etherctl::ipsec::render_file(spec(), "etherctl:dc1", key);
  EXPECT_EQ(text.find(key), std::string::npos);  // hex-encoded
  EXPECT_NE(text.find("secret = 0x612d7072652d"), std::string::npos);
  EXPECT_NE(text.find("id = \"CN=dc1, O=Example\""), std::string::npos);
  EXPECT_NE(text.find("policies = no"), std::string::npos);
  auto header = etherctl::ipsec::parse_file_header(text);
  ASSERT_TRUE(header);
  EXPECT_EQ(header->owner, "etherctl:dc1");
  EXPECT_EQ(header->attrs, spec().attrs());
  EXPECT_EQ(ConnectionSpec::from_attrs("dcx", header->attrs).attrs(), spec().attrs());
  EXPECT_FALSE(etherctl::ipsec::parse_file_header("connections {}\n"));
}

TEST(Vici, OnlyANewKeyIsRenegotiatedByEtherctl) {
  using etherctl::ipsec::only_the_key_changed;
  nlohmann::json before = spec().attrs(), after = before;
  EXPECT_FALSE(only_the_key_changed(before, after));
  after["psk_fingerprint"] = "fedcba9876543210";
  EXPECT_TRUE(only_the_key_changed(before, after));
  after["psk_file"] = "/etc/etherctl/new.psk";  // another file, another key
  after["loaded"] = true;
  EXPECT_TRUE(only_the_key_changed(before, after));
  after["mode"] = "tunnel";  // charon replaces the connection and renegotiates it itself
  EXPECT_FALSE(only_the_key_changed(before, after));
  ConnectionSpec certificates = spec();
  certificates.psk_file.clear();
  certificates.psk_fingerprint.clear();
  certificates.certificate = "/etc/etherctl/dc1.pem";
  certificates.key = "/etc/etherctl/dc1.key";
  certificates.ca = "/etc/etherctl/ca.pem";
  EXPECT_FALSE(only_the_key_changed(certificates.attrs(), before));
  EXPECT_FALSE(only_the_key_changed(before, certificates.attrs()));
  after = before;
  after["psk_file"] = "/etc/etherctl/moved.psk";  // the same key moved: nothing to negotiate
  EXPECT_FALSE(only_the_key_changed(before, after));
}
