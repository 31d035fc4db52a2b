// IPsec for a tunnel ("ipsec" in a tunnel of site.json): strongSwan negotiates ESP keys with
// IKEv2, etherctl owns the kernel side. Parsing and the checks of the key files live here; the
// strongSwan configuration is rendered in lib/ipsec.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "model/problem.hpp"

namespace etherctl::model {

class Fields;

// Defaults, justified in README.md ("IPsec"): AES-256-GCM (AEAD: one pass, AES-NI/PCLMUL in the
// kernel), SHA-384 PRF and NIST P-384 ECDH (CNSA suite; what BSD, NEC and F5 peers offer), and
// P-384 again for the CHILD_SA (perfect forward secrecy at each rekey).
inline constexpr const char* kDefaultIkeProposal = "aes256gcm16-prfsha384-ecp384";
inline constexpr const char* kDefaultEspProposal = "aes256gcm16-ecp384";
inline constexpr int kDefaultIkeRekeySeconds = 4 * 3600;
inline constexpr int kDefaultChildRekeySeconds = 3600;
inline constexpr int kDefaultDpdSeconds = 10;
inline constexpr int kMinRekeySeconds = 10;
// A pre-shared key must have at least this many bytes (after a trailing newline is dropped).
inline constexpr size_t kMinPskBytes = 32;

struct Ipsec {
  std::string path;                // JSON pointer of the "ipsec" object
  std::string mode = "transport";  // ESP mode: "transport" (default) or "tunnel"
  // Authentication: a pre-shared key, or certificates (all three).
  std::optional<std::string> psk_file;
  std::optional<std::string> certificate;  // this device's certificate (PEM), same path on each
  std::optional<std::string> key;          // its private key (PEM)
  std::optional<std::string> ca;           // the CA that signed the peer's certificate
  // IKE identity per device; absent: the device's endpoint address.
  std::map<std::string, std::string> identities;
  std::string ike_proposal = kDefaultIkeProposal;
  std::string esp_proposal = kDefaultEspProposal;
  int ike_rekey_seconds = kDefaultIkeRekeySeconds;
  int child_rekey_seconds = kDefaultChildRekeySeconds;
  int dpd_seconds = kDefaultDpdSeconds;
  // HMAC-SHA-256 of a fixed text keyed with the pre-shared key, 16 hex digits: tells a changed
  // key apart in plans and files without revealing it. Empty without a usable psk_file.
  std::string psk_fingerprint;
};

// The reqid of a tunnel's SAs and policies: etherctl's range (0x45000000 + 24 bits of a hash
// of the tunnel name), so that its policies are recognised as its own and charon's SAs match
// them. validate() refuses two tunnels of one site with the same reqid.
uint32_t ipsec_reqid(const std::string& tunnel);
inline bool is_ipsec_reqid(uint32_t reqid) { return (reqid >> 24) == 0x45; }

// The most bytes ESP adds to an EtherIP packet under this configuration, for any algorithm of
// its ESP proposals: SPI and sequence number, IV, padding to the cipher's block, pad length and
// next header, integrity check value, and in tunnel mode the outer IPv4 header. The TCP MSS
// clamp keeps this much of the WAN MTU free, so that full segments fit after encryption. An
// algorithm it does not know counts as the largest (16-byte IV and block, 32-byte ICV).
int esp_overhead(const Ipsec& ipsec);

// The fingerprint of a pre-shared key (see Ipsec::psk_fingerprint).
std::string psk_fingerprint(const std::string& key);

// Parses the "ipsec" member of a tunnel (fields: the tunnel object). Problems carry pointers
// under <tunnel>/ipsec. Checks the key files too (see check_secret_file).
std::optional<Ipsec> parse_ipsec(Fields& tunnel_fields, Problems& problems);

// A secret file (PSK or private key): must exist, be a regular file, not be readable or
// writable by group or others, and (PSK) hold at least kMinPskBytes. Returns "" when usable,
// else the reason (never any byte of the content).
std::string check_secret_file(const std::string& file, bool is_psk);

// The pre-shared key of a file, without one trailing "\n" or "\r\n". Throws std::runtime_error
// naming the file (not the key) when it is unusable.
std::string read_psk(const std::string& file);

}  // namespace etherctl::model
