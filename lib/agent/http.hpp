// A small HTTP/1.1 server on Boost.Beast for `etherctl watch`: GET only, one request per
// connection, answered by a handler on the agent's own io_context thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <memory>
#include <string>

namespace etherctl::agent {

struct HttpResponse {
  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

using HttpHandler = std::function<HttpResponse(const std::string& target)>;

// "127.0.0.1:9717", "[::1]:9717", "localhost:0" (port 0: the kernel picks one).
// Throws std::invalid_argument naming what is wrong.
boost::asio::ip::tcp::endpoint parse_listen_address(const std::string& text);

class HttpServer {
 public:
  // Binds and listens at once (so the caller can drop privileges afterwards).
  HttpServer(boost::asio::io_context& io, const boost::asio::ip::tcp::endpoint& endpoint,
             HttpHandler handler);
  boost::asio::ip::tcp::endpoint local_endpoint() const { return acceptor_.local_endpoint(); }
  void start();
  void stop();

 private:
  void accept();

  boost::asio::ip::tcp::acceptor acceptor_;
  std::shared_ptr<HttpHandler> handler_;
};

}  // namespace etherctl::agent
