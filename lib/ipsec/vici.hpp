// A small client of strongSwan's VICI protocol (src/libcharon/plugins/vici/README.md): a unix
// stream socket, length-prefixed packets, messages as trees of sections, key/values and lists.
// Messages are nlohmann::ordered_json: an object is a section, a string a key/value, an array
// of strings a list (the order of a section's members is kept: charon reads some in order).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace etherctl::ipsec::vici {

using Message = nlohmann::ordered_json;

// A VICI failure: the daemon is unreachable, answered with an error, or broke the protocol.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Encoding and decoding of one message (no packet header). decode throws Error on malformed
// input; encode throws Error for values VICI cannot carry (numbers are sent as strings).
std::vector<uint8_t> encode(const Message& message);
Message decode(const uint8_t* data, size_t size);

// Where charon listens: "unix:///var/run/charon.vici" (the default) or a plain path.
inline constexpr const char* kDefaultUri = "unix:///var/run/charon.vici";

class Client {
 public:
  // Connects; throws Error naming the socket when charon does not listen there.
  explicit Client(const std::string& uri,
                  std::chrono::milliseconds timeout = std::chrono::seconds(10));
  ~Client();
  Client(Client&& other) noexcept;
  Client& operator=(Client&&) = delete;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // One command; the response message. Throws Error when the command is unknown, the daemon
  // does not answer within the timeout, or the connection breaks.
  Message request(const std::string& command, const Message& arguments = Message::object());
  // A command that streams `event` messages before its response (list-sas, list-conns,
  // initiate with control-log, ...): registers for the event, sends the command, calls
  // on_event for each event, unregisters. `timeout` bounds the whole exchange.
  Message stream(const std::string& command, const Message& arguments, const std::string& event,
                 const std::function<void(const Message&)>& on_event,
                 std::chrono::milliseconds timeout);

  // A request whose response carries success = yes/no and errmsg: throws Error with
  // "<what>: <errmsg>" when success is not "yes".
  Message checked(const std::string& command, const Message& arguments, const std::string& what);

  // Registers for an event outside any command (e.g. "log"): its messages then queue on this
  // connection until next_event() reads them.
  void subscribe(const std::string& event);
  // The next event (its name and message) arriving within `wait` (0: one already there), or
  // nullopt.
  std::optional<std::pair<std::string, Message>> next_event(std::chrono::milliseconds wait);

  const std::string& path() const { return path_; }

 private:
  struct Packet {
    uint8_t type = 0;
    std::string name;
    Message message;
  };
  void send_packet(uint8_t type, const std::string& name, const Message* message);
  Packet receive_packet(std::chrono::steady_clock::time_point deadline);
  void register_event(const std::string& event, bool on,
                      std::chrono::steady_clock::time_point deadline);

  int fd_ = -1;
  std::string path_;
  std::chrono::milliseconds timeout_;
};

}  // namespace etherctl::ipsec::vici
