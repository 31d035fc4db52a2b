#include "ipsec/connection_kind.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "ipsec/connection.hpp"
#include "kernel/detail.hpp"
#include "model/ipsec.hpp"

namespace etherctl::ipsec {

namespace {

namespace fs = std::filesystem;
using kernel::KernelError;

constexpr const char* kPrefix = "etherctl-";
constexpr const char* kSuffix = ".conf";

std::string what(std::string_view operation, const std::string& tunnel) {
  return std::string(operation) + " ipsec_connection " + tunnel;
}

[[noreturn]] void fail(const std::string& what, const std::string& why, int error = EIO) {
  throw KernelError(error, "", what + ": " + why);
}

std::string read_text(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Atomically replaces `file` with `text`, mode 0600 (it may hold the pre-shared key).
void write_secret_file(const std::string& file, const std::string& text, const std::string& what) {
  std::error_code ec;
  fs::create_directories(fs::path(file).parent_path(), ec);
  const std::string tmp = file + ".tmp-etherctl";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) fail(what, "cannot write " + tmp + ": " + std::strerror(errno), errno);
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int error = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail(what, "cannot write " + tmp + ": " + std::strerror(error), error);
    }
    done += static_cast<size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  if (::rename(tmp.c_str(), file.c_str()) != 0) {
    int error = errno;
    ::unlink(tmp.c_str());
    fail(what, "cannot replace " + file + ": " + std::strerror(error), error);
  }
}

std::string private_link_of(const std::string& tunnel) {
  return Settings::current().private_dir() + "/" + connection_name(tunnel) + ".pem";
}

// Connections charon has loaded whose name is ours ("etherctl-..."), by tunnel; nullopt when
// charon cannot be reached.
std::optional<std::map<std::string, vici::Message>> loaded_connections() {
  try {
    vici::Client client(Settings::current().vici_uri, std::chrono::seconds(5));
    std::map<std::string, vici::Message> found;
    client.stream(
        "list-conns", vici::Message::object(), "list-conn",
        [&](const vici::Message& event) {
          for (const auto& [name, conn] : event.items()) {
            if (name.rfind(kPrefix, 0) == 0) found[name.substr(9)] = conn;
          }
        },
        std::chrono::seconds(10));
    return found;
  } catch (const vici::Error&) {
    return std::nullopt;
  }
}

// Whether what charon holds is the connection the spec describes (addresses, selectors,
// mode): a connection loaded by someone else under our name, or an old one, is drift.
bool loaded_matches(const vici::Message& conn, const nlohmann::json& attrs) {
  auto first = [](const vici::Message& list) {
    return list.is_array() && !list.empty() ? list[0].get<std::string>() : std::string();
  };
  auto list = [&](const char* key) {
    return conn.contains(key) ? first(conn[key]) : std::string();
  };
  if (list("local_addrs") != attrs.value("local", "") ||
      list("remote_addrs") != attrs.value("remote", ""))
    return false;
  // The way each end authenticates (charon names the class) and the timers: what another
  // configuration of the same name would change without changing the addresses.
  const std::string auth_class = attrs.contains("psk_file") ? "pre-shared key" : "public key";
  for (const char* end : {"local-1", "remote-1"}) {
    if (!conn.contains(end) || !conn[end].is_object() || conn[end].value("class", "") != auth_class)
      return false;
  }
  auto seconds = [](const nlohmann::json& a, const char* key) {
    return std::to_string(a.value(key, 0));
  };
  if (conn.value("rekey_time", "") != seconds(attrs, "ike_rekey") ||
      conn.value("dpd_delay", "0") != seconds(attrs, "dpd"))
    return false;
  if (!conn.contains("children") || !conn["children"].is_object()) return false;
  const auto& children = conn["children"];
  if (children.size() != 1) return false;
  const auto& child = children.begin().value();
  std::string mode = child.value("mode", "");
  std::transform(mode.begin(), mode.end(), mode.begin(), ::tolower);
  return mode == attrs.value("mode", "") &&
         child.value("rekey_time", "") == seconds(attrs, "child_rekey");
}

plan::Objects observe(const kernel::Snapshot&, const kernel::Ownership& ownership) {
  plan::Objects objects;
  std::map<std::string, plan::Object> by_tunnel;
  const Settings& settings = Settings::current();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(settings.conf_dir(), ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind(kPrefix, 0) != 0 || name.size() <= 9 + 5 ||
        name.compare(name.size() - 5, 5, kSuffix) != 0)
      continue;
    auto header = parse_file_header(read_text(entry.path().string()));
    if (!header || header->owner != ownership.link_alias()) continue;
    std::string tunnel = name.substr(9, name.size() - 9 - 5);
    plan::Object& o = by_tunnel[tunnel];
    o.kind = plan::kIpsecConnection;
    o.key = o.name = tunnel;
    o.owned = true;
    o.attrs = header->attrs;
    o.attrs["loaded"] = false;
  }
  if (auto loaded = loaded_connections()) {
    for (const auto& [tunnel, conn] : *loaded) {
      auto it = by_tunnel.find(tunnel);
      if (it == by_tunnel.end()) {
        // Loaded without its file (an interrupted run): ours by its name; removed unless wanted.
        plan::Object& o = by_tunnel[tunnel];
        o.kind = plan::kIpsecConnection;
        o.key = o.name = tunnel;
        o.owned = true;
        o.attrs["loaded"] = true;
        continue;
      }
      it->second.attrs["loaded"] = loaded_matches(conn, it->second.attrs);
    }
  }
  for (auto& [tunnel, object] : by_tunnel) objects.push_back(std::move(object));
  return objects;
}

// Deletes every IKE SA of the connection `name`, the peer told; at once when that does not
// finish within 3 s. Returns when charon is done with them.
void terminate_all(vici::Client& client, const std::string& name) {
  std::vector<std::string> ids;
  client.stream(
      "list-sas", {{"ike", name}}, "list-sa",
      [&](const vici::Message& event) {
        for (const auto& [n, ike] : event.items())
          if (n == name) ids.push_back(ike.value("uniqueid", ""));
      },
      std::chrono::seconds(10));
  for (const auto& id : ids) {
    vici::Message terminate = {{"ike-id", id}, {"timeout", "3000"}};
    auto response = client.request("terminate", terminate);
    if (response.value("success", "") != "yes") {
      terminate = {{"ike-id", id}, {"force", "yes"}, {"timeout", "-1"}};
      client.request("terminate", terminate);
    }
  }
}

// Starts negotiating the tunnel's connection; does not wait for it.
void initiate(vici::Client& client, const std::string& tunnel) {
  client.request("initiate",
                 {{"child", tunnel}, {"ike", connection_name(tunnel)}, {"timeout", "-1"}});
}

// Writes the file and loads credentials and connection into charon.
void install(const plan::Object& desired, const kernel::Ownership& ownership,
             const std::string& op) {
  ConnectionSpec spec = ConnectionSpec::from_attrs(desired.key, desired.attrs);
  const Settings& settings = Settings::current();
  std::string psk;
  if (spec.uses_psk()) {
    try {
      psk = model::read_psk(spec.psk_file);
    } catch (const std::exception& e) {
      fail(op, e.what(), EINVAL);
    }
    if (model::psk_fingerprint(psk) != spec.psk_fingerprint)
      fail(op, "psk_file " + spec.psk_file + " changed while etherctl ran; run it again", EAGAIN);
  }
  // charon first: an unreachable charon fails the change before anything is written.
  vici::Client client(settings.vici_uri);
  try {
    if (spec.uses_psk()) {
      vici::Message shared = vici::Message::object();
      shared["id"] = shared_key_id(spec.tunnel);
      shared["type"] = "IKE";
      shared["data"] = psk;
      shared["owners"] = vici::Message::array({spec.local_id, spec.remote_id});
      client.checked("load-shared", shared, "loading the pre-shared key");
    } else {
      vici::Message key = vici::Message::object();
      key["type"] = "any";
      std::ifstream in(spec.key, std::ios::binary);
      if (!in) fail(op, "cannot read the key " + spec.key, EACCES);
      std::stringstream data;
      data << in.rdbuf();
      key["data"] = data.str();
      client.checked("load-key", key, "loading the private key " + spec.key);
    }
    client.checked("load-conn", load_conn_message(spec), "loading the connection");
  } catch (const vici::Error& e) {
    fail(op, e.what());
  }
  // The file, for charon's next start (swanctl --load-all); a private key by a link to it.
  write_secret_file(settings.file_of(spec.tunnel), render_file(spec, ownership.link_alias(), psk),
                    op);
  if (!spec.uses_psk()) {
    std::error_code ec;
    fs::create_directories(settings.private_dir(), ec);
    const std::string link = private_link_of(spec.tunnel);
    ::unlink(link.c_str());
    if (::symlink(spec.key.c_str(), link.c_str()) != 0)
      fail(op, "cannot link " + link + " to " + spec.key + ": " + std::strerror(errno), errno);
  }
}

void create(kernel::Netlink& netlink, const plan::Object& desired,
            const kernel::Ownership& ownership) {
  install(desired, ownership, what("create", desired.key));
  netlink.count_foreign_request(true);
}

void modify(kernel::Netlink& netlink, const plan::Object& desired, const plan::Object& observed) {
  const std::string op = what("modify", desired.key);
  // The owner mark comes from the file we replace (the same device's).
  kernel::Ownership ownership;
  {
    auto header = parse_file_header(read_text(Settings::current().file_of(desired.key)));
    ownership.device = header && header->owner.rfind("etherctl:", 0) == 0 ? header->owner.substr(9)
                                                                          : std::string();
  }
  install(desired, ownership, op);
  // A connection charon already holds is renegotiated by charon itself when load-conn changes
  // it: strongSwan (vici merge_config) closes the SAs of the replaced configuration and, with
  // start_action = start, initiates the new one. Terminating and initiating here as well raced
  // with that (it killed charon's fresh IKE_SA half-way, leaving the peer a half-open one) and
  // left neither end with an SA after a switch from certificates to a pre-shared key. Only a
  // new pre-shared key keeps the connection equal in charon's eyes: negotiate anew by hand
  // then, so that a wrong new key shows now rather than at the next reauthentication.
  if (observed.attrs.value("loaded", false) &&
      only_the_key_changed(observed.attrs, desired.attrs)) {
    try {
      vici::Client client(Settings::current().vici_uri);
      terminate_all(client, connection_name(desired.key));
      initiate(client, desired.key);
    } catch (const vici::Error& e) {
      fail(op, e.what());
    }
  }
  netlink.count_foreign_request(true);
}

void remove(kernel::Netlink& netlink, const plan::Object& observed) {
  const std::string op = what("remove", observed.key);
  const Settings& settings = Settings::current();
  // charon forgets the connection (so nothing restarts it), then its SAs go: each IKE SA is
  // deleted with the peer told, or at once when that does not finish in time. When charon is
  // not there, the file goes anyway and the ipsec_policy kind deletes states left in the kernel.
  try {
    vici::Client client(settings.vici_uri);
    const std::string name = connection_name(observed.key);
    client.request("unload-conn", vici::Message{{"name", name}});
    client.request("unload-shared", vici::Message{{"id", shared_key_id(observed.key)}});
    terminate_all(client, name);
  } catch (const vici::Error&) {
  }
  std::string file = settings.file_of(observed.key);
  if (::unlink(file.c_str()) != 0 && errno != ENOENT)
    fail(op, "cannot remove " + file + ": " + std::strerror(errno), errno);
  std::string link = private_link_of(observed.key);
  ::unlink(link.c_str());
  netlink.count_foreign_request(true);
}

bool mentions_any(const std::string& line, std::initializer_list<const char*> words) {
  return std::any_of(words.begin(), words.end(),
                     [&](const char* word) { return line.find(word) != std::string::npos; });
}

// Charon's log lines about a tunnel that explain a failed negotiation.
bool explains_failure(const std::string& line) {
  return mentions_any(line, {"fail", "error", "AUTHENTICATION", "NO_PROPOSAL", "not responding",
                             "giving up", "TS_UNACCEPTABLE", "unable", "no shared key",
                             "no matching", "retransmit", "timeout", "MAC mismatch", "INVALID"});
}

// A log line saying the peer refused the negotiation, or that this end cannot complete it:
// no retransmission makes it succeed.
bool refusal(const std::string& line) {
  return mentions_any(line, {"AUTHENTICATION", "authentication", "NO_PROPOSAL", "TS_UNACCEPTABLE",
                             "no shared key", "MAC mismatch", "no matching"});
}

std::string dump_state(const vici::Message& ike) { return ike.value("state", "?"); }

}  // namespace

const kernel::KindOps& connection_kind_ops() {
  static const kernel::KindOps ops{plan::kIpsecConnection, observe, create, modify, remove};
  return ops;
}

nlohmann::json sa_status(const std::string& tunnel) {
  nlohmann::json out = {{"established", false}};
  try {
    vici::Client client(Settings::current().vici_uri, std::chrono::seconds(5));
    const std::string name = connection_name(tunnel);
    std::vector<vici::Message> ikes;
    client.stream(
        "list-sas", {{"ike", name}}, "list-sa",
        [&](const vici::Message& event) {
          for (const auto& [n, ike] : event.items())
            if (n == name) ikes.push_back(ike);
        },
        std::chrono::seconds(10));
    auto number = [](const vici::Message& m, const char* key) -> int64_t {
      try {
        return m.contains(key) ? std::stoll(m[key].get<std::string>()) : -1;
      } catch (...) {
        return -1;
      }
    };
    // The newest installed CHILD_SA describes the tunnel (age, rekey, algorithms); the
    // counters add up every installed CHILD_SA of the connection: when both ends initiated at
    // once there are two, and traffic may use either.
    int64_t best_age = -1;
    int64_t totals[4] = {0, 0, 0, 0};  // bytes in, packets in, bytes out, packets out
    int installed = 0;
    out["ike_sas"] = ikes.size();
    for (const auto& ike : ikes) {
      if (ike.value("state", "") != "ESTABLISHED") continue;
      if (!ike.contains("child-sas") || !ike["child-sas"].is_object()) continue;
      for (const auto& [child_name, child] : ike["child-sas"].items()) {
        if (child.value("state", "") != "INSTALLED") continue;
        ++installed;
        int i = 0;
        for (const char* key : {"bytes-in", "packets-in", "bytes-out", "packets-out"})
          totals[i++] += std::max<int64_t>(0, number(child, key));
        int64_t age = number(child, "install-time");
        if (best_age >= 0 && age >= best_age) continue;
        best_age = age;
        out["established"] = true;
        out["ike"] = {
            {"state", ike.value("state", "")},
            {"established_seconds", number(ike, "established")},
            {"rekey_seconds", number(ike, "rekey-time")},
            {"encryption", ike.value("encr-alg", "") + "-" + ike.value("encr-keysize", "")},
            {"dh_group", ike.value("dh-group", "")},
            {"remote_id", ike.value("remote-id", "")}};
        out["child"] = {
            {"state", child.value("state", "")},
            {"mode", child.value("mode", "")},
            {"reqid", number(child, "reqid")},
            {"spi_in", child.value("spi-in", "")},
            {"spi_out", child.value("spi-out", "")},
            {"installed_seconds", age},
            {"rekey_seconds", number(child, "rekey-time")},
            {"lifetime_seconds", number(child, "life-time")},
            {"encryption", child.value("encr-alg", "") + "-" + child.value("encr-keysize", "")},
            {"encap", child.value("encap", "no") == "yes"}};
      }
    }
    if (installed > 0) {
      out["child"]["installed_sas"] = installed;
      out["child"]["bytes_in"] = totals[0];
      out["child"]["packets_in"] = totals[1];
      out["child"]["bytes_out"] = totals[2];
      out["child"]["packets_out"] = totals[3];
    }
    if (!out["established"].get<bool>() && !ikes.empty()) out["state"] = dump_state(ikes.front());
  } catch (const vici::Error& e) {
    out["error"] = e.what();
  }
  return out;
}

namespace {
void initiate_ignoring_errors(const std::string& tunnel) {
  try {
    vici::Client client(Settings::current().vici_uri, std::chrono::seconds(5));
    initiate(client, tunnel);
  } catch (const vici::Error&) {
  }
}
}  // namespace

NegotiationLog::NegotiationLog() {
  try {
    client_ = std::make_unique<vici::Client>(Settings::current().vici_uri);
    client_->subscribe("log");
  } catch (const vici::Error&) {
    client_.reset();
  }
}

NegotiationLog::~NegotiationLog() = default;

void NegotiationLog::read_until(
    std::chrono::steady_clock::time_point until,
    const std::function<void(const std::string&, const std::string&)>& on_line) {
  while (client_) {
    try {
      auto event = client_->next_event(std::max(
          std::chrono::milliseconds(0), std::chrono::duration_cast<std::chrono::milliseconds>(
                                            until - std::chrono::steady_clock::now())));
      if (!event) return;
      const vici::Message& m = event->second;
      std::string name = m.value("ikesa-name", "");
      if (name.rfind(kPrefix, 0) == 0)
        on_line(name.substr(std::strlen(kPrefix)), m.value("msg", ""));
    } catch (const vici::Error&) {
      client_.reset();
    }
  }
}

std::map<std::string, std::string> await_established(const std::vector<std::string>& tunnels,
                                                     std::chrono::milliseconds timeout,
                                                     NegotiationLog& log,
                                                     const std::set<std::string>& loaded_now) {
  std::map<std::string, std::string> problems;
  if (tunnels.empty()) return problems;
  const auto started = std::chrono::steady_clock::now();
  const auto deadline = started + timeout;
  std::set<std::string> pending(tunnels.begin(), tunnels.end());
  std::map<std::string, std::string> reasons;  // tunnel -> the latest explanation
  auto note_line = [&](const std::string& tunnel, const std::string& line) {
    if (pending.count(tunnel) && explains_failure(line)) reasons[tunnel] = line;
  };
  std::set<std::string> restarted;
  for (;;) {
    // What charon said so far first: the lines of the attempts apply's load-conn started.
    log.read_until(std::chrono::steady_clock::now(), note_line);
    for (auto it = pending.begin(); it != pending.end();) {
      nlohmann::json status = sa_status(*it);
      if (status.value("established", false)) {
        it = pending.erase(it);
        continue;
      }
      if (status.contains("error")) reasons[*it] = status["error"].get<std::string>();
      // No SA of the connection at all, not even one being negotiated: charon gave up (the
      // peer refused us, or deleted an SA that was not up yet) and nothing would start one
      // before charon restarts. Start it once per run, after charon had the time to act on a
      // load-conn of this run (which starts it by itself).
      if (!status.contains("error") && status.value("ike_sas", 1) == 0 &&
          (!loaded_now.count(*it) ||
           std::chrono::steady_clock::now() - started >= std::chrono::seconds(2)) &&
          restarted.insert(*it).second)
        initiate_ignoring_errors(*it);
      ++it;
    }
    if (pending.empty() || std::chrono::steady_clock::now() >= deadline) break;
    const auto pause = std::chrono::steady_clock::now() + std::chrono::milliseconds(250);
    log.read_until(pause, note_line);
    std::this_thread::sleep_until(pause);  // when there is no log to wait on
  }
  for (const auto& tunnel : pending) {
    std::string line =
        "IPsec not established after " + std::to_string((timeout.count() + 500) / 1000) + " s";
    auto reason = reasons.find(tunnel);
    line +=
        reason != reasons.end() ? ": charon: " + reason->second : ": no answer from the peer yet";
    // charon retries an unanswered negotiation for ever (keyingtries 0), never a refused one.
    const bool refused = reason != reasons.end() && refusal(reason->second);
    line += " (nothing is sent in clear meanwhile; ";
    line += refused ? "charon does not retry a refused negotiation by itself: the next apply, "
                      "such as a periodic reconcile, starts a new one)"
            : restarted.count(tunnel) ? "charon had stopped trying: etherctl started a new "
                                        "negotiation, and charon keeps trying)"
                                      : "charon keeps trying)";
    problems[tunnel] = line;
  }
  return problems;
}

}  // namespace etherctl::ipsec
