#include "model/ipsec.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "model/fields.hpp"

namespace etherctl::model {

namespace {

// Algorithms that give no or broken protection: refused in proposals.
const std::vector<std::string> kWeakAlgorithms = {"null",    "des",      "3des",     "md5",
                                                  "modp768", "modp1024", "blowfish", "cast128"};

// "aes256gcm16-prfsha384-ecp384[,...]": lower-case tokens joined by '-', proposals by ','.
// Returns "" when acceptable, else the reason. strongSwan checks the algorithm names
// themselves when the connection is loaded.
std::string proposal_problem(const std::string& text) {
  if (text.empty()) return "must not be empty";
  std::stringstream proposals(text);
  for (std::string proposal; std::getline(proposals, proposal, ',');) {
    if (proposal.empty()) return "has an empty proposal (two commas, or one at an end)";
    std::stringstream tokens(proposal);
    for (std::string token; std::getline(tokens, token, '-');) {
      if (token.empty()) return "has an empty algorithm in \"" + proposal + "\"";
      for (char c : token) {
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
          return "\"" + proposal +
                 "\" is not a strongSwan proposal (lower-case algorithm names joined by '-', "
                 "proposals by ',', e.g. \"aes256gcm16-prfsha384-ecp384\")";
      }
      for (const auto& weak : kWeakAlgorithms) {
        if (token == weak)
          return "\"" + token + "\" in \"" + proposal +
                 "\" gives no or broken protection; use an AEAD suite such as \"" +
                 kDefaultEspProposal + "\"";
      }
    }
    if (proposal.back() == '-') return "has an empty algorithm in \"" + proposal + "\"";
  }
  if (text.back() == ',') return "has an empty proposal (two commas, or one at an end)";
  return "";
}

// An IKE identity: printable ASCII without quotes, braces or line breaks (it is written into
// swanctl.conf and sent over VICI as is).
std::string identity_problem(const std::string& id) {
  if (id.empty()) return "must not be empty";
  if (id.size() > 255) return "is longer than 255 bytes";
  for (char c : id) {
    if (c < 0x20 || c > 0x7e || c == '"' || c == '{' || c == '}' || c == '#' || c == '\\')
      return "may hold printable ASCII only, without quotes, braces, '#' or backslashes";
  }
  return "";
}

// A path to a PEM file readable by this process (certificates, CA).
std::string public_file_problem(const std::string& file) {
  if (file.empty() || file.front() != '/') return "must be an absolute path";
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return "cannot read " + file + ": " + std::strerror(errno);
  if (!S_ISREG(st.st_mode)) return file + " is not a regular file";
  if (::access(file.c_str(), R_OK) != 0) return "cannot read " + file + ": " + std::strerror(errno);
  if (st.st_size == 0) return file + " is empty";
  return "";
}

std::string trim_newline(std::string text) {
  if (!text.empty() && text.back() == '\n') text.pop_back();
  if (!text.empty() && text.back() == '\r') text.pop_back();
  return text;
}

// Reads a secret file. Never puts any byte of it into a message.
std::optional<std::string> read_secret(const std::string& file, std::string* error) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    *error = "cannot read " + file + ": " + std::strerror(errno);
    return std::nullopt;
  }
  std::string content;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *error = "cannot read " + file + ": " + std::strerror(errno);
      ::close(fd);
      return std::nullopt;
    }
    if (n == 0) break;
    content.append(buffer, static_cast<size_t>(n));
    if (content.size() > 65536) {
      *error = file + " is larger than 64 KiB: not a key file";
      ::close(fd);
      return std::nullopt;
    }
  }
  ::close(fd);
  return content;
}

}  // namespace

uint32_t ipsec_reqid(const std::string& tunnel) {
  uint32_t hash = 2166136261u;  // FNV-1a
  for (unsigned char c : tunnel) {
    hash ^= c;
    hash *= 16777619u;
  }
  return 0x45000000u | (hash & 0x00ffffffu);
}

std::string psk_fingerprint(const std::string& key) {
  static const char kText[] = "etherctl pre-shared key fingerprint v1";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(kText), sizeof(kText) - 1, digest, &length);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < 8 && i < length; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

std::string check_secret_file(const std::string& file, bool is_psk) {
  if (file.empty() || file.front() != '/') return "must be an absolute path";
  struct stat st {};
  if (::lstat(file.c_str(), &st) != 0) return "cannot read " + file + ": " + std::strerror(errno);
  if (S_ISLNK(st.st_mode) && ::stat(file.c_str(), &st) != 0)
    return "cannot read " + file + ": " + std::strerror(errno);
  if (!S_ISREG(st.st_mode)) return file + " is not a regular file";
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return file + " is accessible by group or others (mode " + mode +
           "): a secret must be readable by its owner only (chmod 600)";
  }
  std::string error;
  auto content = read_secret(file, &error);
  if (!content) return error;
  if (!is_psk) return content->empty() ? file + " is empty" : "";
  std::string key = trim_newline(*content);
  if (key.empty()) return file + " is empty";
  if (key.size() < kMinPskBytes)
    return file + " holds " + std::to_string(key.size()) +
           " bytes; a pre-shared key needs at least " + std::to_string(kMinPskBytes) +
           " (e.g. `openssl rand -base64 48 > " + file + "`)";
  return "";
}

std::string read_psk(const std::string& file) {
  std::string problem = check_secret_file(file, true);
  if (!problem.empty()) throw std::runtime_error("psk_file: " + problem);
  std::string error;
  auto content = read_secret(file, &error);
  if (!content) throw std::runtime_error("psk_file: " + error);
  return trim_newline(*content);
}

std::optional<Ipsec> parse_ipsec(Fields& tunnel, Problems& problems) {
  const nlohmann::json* value = tunnel.object("ipsec", false);
  if (!value) return std::nullopt;
  Ipsec ipsec;
  ipsec.path = tunnel.path_of("ipsec");
  Fields fields(*value, ipsec.path, problems,
                {"psk_file", "certificate", "key", "ca", "identities", "mode", "proposals",
                 "lifetimes", "dpd_delay"});
  if (!fields.ok()) return ipsec;

  ipsec.psk_file = fields.string("psk_file", false);
  ipsec.certificate = fields.string("certificate", false);
  ipsec.key = fields.string("key", false);
  ipsec.ca = fields.string("ca", false);
  const bool any_cert = ipsec.certificate || ipsec.key || ipsec.ca;
  if (ipsec.psk_file && any_cert) {
    fields.problem("psk_file",
                   "choose one way to authenticate: psk_file, or certificate + key + ca");
  } else if (!ipsec.psk_file && !any_cert) {
    problems.push_back({ipsec.path,
                        "needs a way to authenticate: \"psk_file\" (a pre-shared key of at least "
                        "32 bytes), or \"certificate\", \"key\" and \"ca\""});
  } else if (any_cert) {
    for (const char* member : {"certificate", "key", "ca"}) {
      if (!fields.has(member))
        problems.push_back({ipsec.path, std::string("certificate authentication needs \"") +
                                            member + "\" too (certificate, key and ca)"});
    }
  }
  if (ipsec.psk_file) {
    std::string problem = check_secret_file(*ipsec.psk_file, true);
    if (!problem.empty())
      fields.problem("psk_file", problem);
    else
      ipsec.psk_fingerprint = psk_fingerprint(read_psk(*ipsec.psk_file));
  }
  if (ipsec.key) {
    std::string problem = check_secret_file(*ipsec.key, false);
    if (!problem.empty()) fields.problem("key", problem);
  }
  for (auto [member, file] : {std::pair{"certificate", &ipsec.certificate}, {"ca", &ipsec.ca}}) {
    if (!*file) continue;
    std::string problem = public_file_problem(**file);
    if (!problem.empty()) fields.problem(member, problem);
  }

  if (const nlohmann::json* ids = fields.object("identities", false)) {
    for (const auto& [device, id] : ids->items()) {
      std::string path = pointer_append(fields.path_of("identities"), device);
      if (!id.is_string()) {
        problems.push_back({path, "must be an IKE identity (a string), not " + json_type_name(id)});
        continue;
      }
      std::string problem = identity_problem(id.get<std::string>());
      if (!problem.empty()) {
        problems.push_back({path, problem});
        continue;
      }
      ipsec.identities.emplace(device, id.get<std::string>());
    }
  }

  if (auto mode = fields.string("mode", false)) {
    if (*mode != "transport" && *mode != "tunnel")
      fields.problem("mode",
                     "must be \"transport\" (ESP protects the EtherIP packet; what BSD "
                     "and NEC peers speak) or \"tunnel\", not \"" +
                         *mode + "\"");
    else
      ipsec.mode = *mode;
  }

  if (const nlohmann::json* proposals = fields.object("proposals", false)) {
    Fields p(*proposals, fields.path_of("proposals"), problems, {"ike", "esp"});
    for (auto [member, target] :
         {std::pair{"ike", &ipsec.ike_proposal}, {"esp", &ipsec.esp_proposal}}) {
      auto text = p.string(member, false);
      if (!text) continue;
      std::string problem = proposal_problem(*text);
      if (!problem.empty())
        p.problem(member, problem);
      else
        *target = *text;
    }
  }

  if (const nlohmann::json* lifetimes = fields.object("lifetimes", false)) {
    Fields l(*lifetimes, fields.path_of("lifetimes"), problems, {"ike_rekey", "child_rekey"});
    constexpr int64_t kMax = int64_t{7} * 24 * 3600;
    if (auto v = l.integer("ike_rekey", false, kMinRekeySeconds, kMax))
      ipsec.ike_rekey_seconds = static_cast<int>(*v);
    if (auto v = l.integer("child_rekey", false, kMinRekeySeconds, kMax))
      ipsec.child_rekey_seconds = static_cast<int>(*v);
  }
  if (auto v = fields.integer("dpd_delay", false, 1, 3600))
    ipsec.dpd_seconds = static_cast<int>(*v);
  return ipsec;
}

namespace {

struct EspShape {
  int iv = 0, block = 4, icv = 0;
};

// One algorithm token of a proposal, as strongSwan names them (RFC 4106/4309/7634 AEADs, CBC
// and CTR ciphers, HMAC and XCBC integrity); tokens that are neither (DH groups, "esn",
// "noesn") return false.
bool shape_token(const std::string& token, EspShape& shape) {
  auto starts = [&](const char* prefix) { return token.rfind(prefix, 0) == 0; };
  auto ends = [&](const char* suffix) {
    const std::string s(suffix);
    return token.size() >= s.size() && token.compare(token.size() - s.size(), s.size(), s) == 0;
  };
  if (starts("aes") &&
      (token.find("gcm") != std::string::npos || token.find("ccm") != std::string::npos)) {
    // ICV in bytes (gcm8, gcm12, gcm16) or bits (gcm64, gcm96, gcm128); plain "gcm": 16
    shape.iv = 8;
    shape.icv = 16;
    for (const char* mode : {"gcm", "ccm"}) {
      if (ends((std::string(mode) + "8").c_str()) || ends((std::string(mode) + "64").c_str()))
        shape.icv = 8;
      if (ends((std::string(mode) + "12").c_str()) || ends((std::string(mode) + "96").c_str()))
        shape.icv = 12;
    }
    return true;
  }
  if (starts("chacha20poly1305")) {
    shape.iv = 8;
    shape.icv = 16;
    return true;
  }
  if (starts("aes") && token.find("ctr") != std::string::npos) {
    shape.iv = 8;
    return true;
  }
  if (starts("aes") || starts("camellia") || starts("serpent") || starts("twofish")) {
    shape.iv = 16;  // CBC
    shape.block = 16;
    return true;
  }
  if (starts("3des") || starts("blowfish") || starts("cast")) {
    shape.iv = 8;
    shape.block = 8;
    return true;
  }
  if (starts("sha512")) return shape.icv = 32, true;
  if (starts("sha384")) return shape.icv = 24, true;
  if (starts("sha256") || starts("sha2_256")) return shape.icv = 16, true;
  if (starts("sha1") || starts("md5") || starts("aesxcbc") || starts("aescmac"))
    return shape.icv = 12, true;
  return false;
}

}  // namespace

int esp_overhead(const Ipsec& ipsec) {
  constexpr int kFixed = 8 + 2;  // SPI + sequence number, pad length + next header
  const EspShape worst{16, 16, 32};
  int most = 0;
  std::stringstream proposals(ipsec.esp_proposal);
  for (std::string proposal; std::getline(proposals, proposal, ',');) {
    EspShape shape;
    bool unknown_cipher = true;
    std::stringstream tokens(proposal);
    for (std::string token; std::getline(tokens, token, '-');) {
      EspShape before = shape;
      if (!shape_token(token, shape)) continue;
      if (shape.iv != before.iv || shape.block != before.block) unknown_cipher = false;
    }
    if (unknown_cipher) shape = worst;
    most = std::max(most, kFixed + shape.iv + (shape.block - 1) + shape.icv);
  }
  if (most == 0) most = kFixed + worst.iv + (worst.block - 1) + worst.icv;
  return most + (ipsec.mode == "tunnel" ? 20 : 0);
}

}  // namespace etherctl::model
