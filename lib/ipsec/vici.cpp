#include "ipsec/vici.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace etherctl::ipsec::vici {

namespace {

// Packet types (README: "Packet layer").
enum : uint8_t {
  kCmdRequest = 0,
  kCmdResponse = 1,
  kCmdUnknown = 2,
  kEventRegister = 3,
  kEventUnregister = 4,
  kEventConfirm = 5,
  kEventUnknown = 6,
  kEvent = 7,
};
// Message element types (README: "Message format").
enum : uint8_t {
  kSectionStart = 1,
  kSectionEnd = 2,
  kKeyValue = 3,
  kListStart = 4,
  kListItem = 5,
  kListEnd = 6,
};
constexpr size_t kMaxSegment = size_t{512} * 1024;

void put_name(std::vector<uint8_t>& out, const std::string& name) {
  if (name.empty() || name.size() > 255)
    throw Error("vici: name \"" + name + "\" is not 1..255 bytes");
  out.push_back(static_cast<uint8_t>(name.size()));
  out.insert(out.end(), name.begin(), name.end());
}

void put_value(std::vector<uint8_t>& out, const std::string& value) {
  if (value.size() > 0xffff) throw Error("vici: a value is longer than 65535 bytes");
  out.push_back(static_cast<uint8_t>(value.size() >> 8));
  out.push_back(static_cast<uint8_t>(value.size() & 0xff));
  out.insert(out.end(), value.begin(), value.end());
}

std::string scalar(const Message& value, const std::string& key) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number_integer() || value.is_number_unsigned()) return value.dump();
  if (value.is_boolean()) return value.get<bool>() ? "yes" : "no";
  throw Error("vici: \"" + key + "\" holds " + std::string(value.type_name()) +
              ", which a VICI message cannot carry");
}

void encode_section(std::vector<uint8_t>& out, const Message& section) {
  for (const auto& [key, value] : section.items()) {
    if (value.is_object()) {
      out.push_back(kSectionStart);
      put_name(out, key);
      encode_section(out, value);
      out.push_back(kSectionEnd);
    } else if (value.is_array()) {
      out.push_back(kListStart);
      put_name(out, key);
      for (const auto& item : value) {
        out.push_back(kListItem);
        put_value(out, scalar(item, key));
      }
      out.push_back(kListEnd);
    } else {
      out.push_back(kKeyValue);
      put_name(out, key);
      put_value(out, scalar(value, key));
    }
  }
}

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  bool done() const { return p_ == end_; }
  uint8_t byte() {
    need(1);
    return *p_++;
  }
  std::string name() {
    size_t n = byte();
    return take(n);
  }
  std::string value() {
    need(2);
    size_t n = (static_cast<size_t>(p_[0]) << 8) | p_[1];
    p_ += 2;
    return take(n);
  }

 private:
  void need(size_t n) const {
    if (static_cast<size_t>(end_ - p_) < n) throw Error("vici: truncated message");
  }
  std::string take(size_t n) {
    need(n);
    std::string s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }
  const uint8_t* p_;
  const uint8_t* end_;
};

std::string errno_text(int error) { return std::strerror(error); }

}  // namespace

std::vector<uint8_t> encode(const Message& message) {
  std::vector<uint8_t> out;
  if (!message.is_null()) {
    if (!message.is_object()) throw Error("vici: a message must be a section (an object)");
    encode_section(out, message);
  }
  return out;
}

Message decode(const uint8_t* data, size_t size) {
  Reader in(data, size);
  Message root = Message::object();
  std::vector<Message*> stack{&root};
  Message* list = nullptr;
  while (!in.done()) {
    uint8_t type = in.byte();
    switch (type) {
      case kSectionStart: {
        if (list) throw Error("vici: section inside a list");
        std::string name = in.name();
        Message& section = (*stack.back())[name] = Message::object();
        stack.push_back(&section);
        break;
      }
      case kSectionEnd:
        if (list || stack.size() < 2) throw Error("vici: unbalanced section end");
        stack.pop_back();
        break;
      case kKeyValue: {
        if (list) throw Error("vici: key/value inside a list");
        std::string name = in.name();
        (*stack.back())[name] = in.value();
        break;
      }
      case kListStart: {
        if (list) throw Error("vici: nested list");
        std::string name = in.name();
        list = &((*stack.back())[name] = Message::array());
        break;
      }
      case kListItem:
        if (!list) throw Error("vici: list item outside a list");
        list->push_back(in.value());
        break;
      case kListEnd:
        if (!list) throw Error("vici: list end outside a list");
        list = nullptr;
        break;
      default:
        throw Error("vici: unknown element type " + std::to_string(type));
    }
  }
  if (list || stack.size() != 1) throw Error("vici: unterminated section or list");
  return root;
}

Client::Client(const std::string& uri, std::chrono::milliseconds timeout) : timeout_(timeout) {
  path_ = uri.rfind("unix://", 0) == 0 ? uri.substr(7) : uri;
  if (path_.empty() || path_.front() != '/')
    throw Error("vici: \"" + uri + "\" is not a unix socket (unix:///path)");
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path_.size() >= sizeof(address.sun_path)) throw Error("vici: socket path too long: " + path_);
  std::memcpy(address.sun_path, path_.c_str(), path_.size() + 1);
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw Error("vici: socket: " + errno_text(errno));
  if (::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    int error = errno;
    ::close(fd_);
    fd_ = -1;
    throw Error("cannot reach charon at " + path_ + ": " + errno_text(error) +
                " (is strongSwan's charon running with the vici plugin?)");
  }
}

Client::~Client() {
  if (fd_ >= 0) ::close(fd_);
}

Client::Client(Client&& other) noexcept
    : fd_(other.fd_), path_(std::move(other.path_)), timeout_(other.timeout_) {
  other.fd_ = -1;
}

void Client::send_packet(uint8_t type, const std::string& name, const Message* message) {
  std::vector<uint8_t> body{type};
  if (!name.empty()) put_name(body, name);
  if (message) {
    auto encoded = encode(*message);
    body.insert(body.end(), encoded.begin(), encoded.end());
  }
  if (body.size() > kMaxSegment) throw Error("vici: request larger than 512 KiB");
  uint32_t length = static_cast<uint32_t>(body.size());
  uint8_t header[4] = {static_cast<uint8_t>(length >> 24), static_cast<uint8_t>(length >> 16),
                       static_cast<uint8_t>(length >> 8), static_cast<uint8_t>(length)};
  std::vector<uint8_t> packet(header, header + 4);
  packet.insert(packet.end(), body.begin(), body.end());
  size_t sent = 0;
  while (sent < packet.size()) {
    ssize_t n = ::send(fd_, packet.data() + sent, packet.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error("vici: writing to " + path_ + ": " + errno_text(errno));
    sent += static_cast<size_t>(n);
  }
}

Client::Packet Client::receive_packet(std::chrono::steady_clock::time_point deadline) {
  auto read_exactly = [&](uint8_t* out, size_t size) {
    size_t got = 0;
    while (got < size) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) throw Error("charon at " + path_ + " did not answer in time");
      pollfd pfd{fd_, POLLIN, 0};
      int ready = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) throw Error("vici: poll: " + errno_text(errno));
      if (ready == 0) continue;
      ssize_t n = ::recv(fd_, out + got, size - got, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw Error("vici: reading from " + path_ + ": " + errno_text(errno));
      if (n == 0) throw Error("charon closed the connection at " + path_);
      got += static_cast<size_t>(n);
    }
  };
  uint8_t header[4];
  read_exactly(header, 4);
  uint32_t length = (uint32_t{header[0]} << 24) | (uint32_t{header[1]} << 16) |
                    (uint32_t{header[2]} << 8) | header[3];
  if (length == 0 || length > kMaxSegment) throw Error("vici: bad packet length from " + path_);
  std::vector<uint8_t> body(length);
  read_exactly(body.data(), length);
  Packet packet;
  packet.type = body[0];
  size_t offset = 1;
  if (packet.type == kEvent) {
    if (body.size() < 2 || body.size() < 2u + body[1]) throw Error("vici: truncated event name");
    packet.name.assign(reinterpret_cast<const char*>(&body[2]), body[1]);
    offset = 2u + body[1];
  }
  if (packet.type == kCmdResponse || packet.type == kEvent)
    packet.message = decode(body.data() + offset, body.size() - offset);
  return packet;
}

void Client::register_event(const std::string& event, bool on,
                            std::chrono::steady_clock::time_point deadline) {
  send_packet(on ? kEventRegister : kEventUnregister, event, nullptr);
  for (;;) {
    Packet p = receive_packet(deadline);
    if (p.type == kEvent) continue;  // a late event of a stream that just ended
    if (p.type == kEventConfirm) return;
    if (p.type == kEventUnknown) throw Error("charon does not know the event \"" + event + "\"");
    throw Error("vici: unexpected packet type " + std::to_string(p.type) + " while registering");
  }
}

Message Client::request(const std::string& command, const Message& arguments) {
  auto deadline = std::chrono::steady_clock::now() + timeout_;
  send_packet(kCmdRequest, command, &arguments);
  for (;;) {
    Packet p = receive_packet(deadline);
    if (p.type == kEvent) continue;
    if (p.type == kCmdResponse) return p.message;
    if (p.type == kCmdUnknown) throw Error("charon does not know the command \"" + command + "\"");
    throw Error("vici: unexpected packet type " + std::to_string(p.type));
  }
}

Message Client::stream(const std::string& command, const Message& arguments,
                       const std::string& event,
                       const std::function<void(const Message&)>& on_event,
                       std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  register_event(event, true, deadline);
  send_packet(kCmdRequest, command, &arguments);
  Message response;
  for (;;) {
    Packet p = receive_packet(deadline);
    if (p.type == kEvent) {
      if (p.name == event) on_event(p.message);
      continue;
    }
    if (p.type == kCmdResponse) {
      response = std::move(p.message);
      break;
    }
    if (p.type == kCmdUnknown) throw Error("charon does not know the command \"" + command + "\"");
    throw Error("vici: unexpected packet type " + std::to_string(p.type));
  }
  register_event(event, false, std::chrono::steady_clock::now() + timeout_);
  return response;
}

void Client::subscribe(const std::string& event) {
  register_event(event, true, std::chrono::steady_clock::now() + timeout_);
}

std::optional<std::pair<std::string, Message>> Client::next_event(std::chrono::milliseconds wait) {
  const auto until = std::chrono::steady_clock::now() + wait;
  for (;;) {
    // A wait of zero still takes what already arrived.
    auto left = std::max(std::chrono::milliseconds(0),
                         std::chrono::duration_cast<std::chrono::milliseconds>(
                             until - std::chrono::steady_clock::now()));
    pollfd pfd{fd_, POLLIN, 0};
    int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) throw Error("vici: poll: " + errno_text(errno));
    if (ready == 0) return std::nullopt;
    Packet p = receive_packet(std::chrono::steady_clock::now() + timeout_);
    if (p.type == kEvent) return std::make_pair(p.name, std::move(p.message));
  }
}

Message Client::checked(const std::string& command, const Message& arguments,
                        const std::string& what) {
  Message response = request(command, arguments);
  if (response.value("success", "") != "yes")
    throw Error(what + ": " + response.value("errmsg", "charon gave no reason"));
  return response;
}

}  // namespace etherctl::ipsec::vici
