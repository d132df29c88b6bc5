// A scripted HTTP/1.1 server for ctx.fetch tests: plain or TLS on a loopback port, its own thread, replies
// chosen per path by the test, and every request it read kept (headers, body, SNI) for the test to check.
#pragma once

#include <openssl/ssl.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <cctype>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace keel::test {

/// What the server read.
struct seen_request {
  std::string method;
  std::string target;
  /// Names in lower case.
  std::map<std::string, std::string> headers;
  std::string body;
  /// The TLS server name the client sent (empty: none, or plain HTTP).
  std::string sni;
  std::chrono::steady_clock::time_point at;

  [[nodiscard]] std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

/// What the server answers.
struct scripted_reply {
  unsigned status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// Waits this long before answering (a server that never answers: longer than the client's timeout).
  std::chrono::milliseconds delay{0};
};

/// The certificate chain and key of a TLS server (PEM files).
struct tls_files {
  std::string certificate_chain;
  std::string private_key;
};

/// Listens on 127.0.0.1 (an ephemeral port); one request per connection. Replies come from the handler
/// scripted for the request's path (without query), given the request and how many the path has had (1 for
/// the first); an unscripted path gets 404. Thread-safe; the destructor stops the thread (requests still
/// delayed are dropped).
class scripted_http_server {
 public:
  using handler = std::function<scripted_reply(const seen_request&, int n)>;

  explicit scripted_http_server(std::optional<tls_files> tls = std::nullopt) : acceptor_(io_) {
    if (tls) {
      tls_.emplace(boost::asio::ssl::context::tls_server);
      tls_->use_certificate_chain_file(tls->certificate_chain);
      tls_->use_private_key_file(tls->private_key, boost::asio::ssl::context::pem);
    }
    const boost::asio::ip::tcp::endpoint any(boost::asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(any.protocol());
    acceptor_.set_option(boost::asio::socket_base::reuse_address(true));
    acceptor_.bind(any);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    boost::asio::co_spawn(io_, accept_loop(), boost::asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~scripted_http_server() {
    io_.stop();
    thread_.join();
  }
  scripted_http_server(const scripted_http_server&) = delete;
  scripted_http_server& operator=(const scripted_http_server&) = delete;

  [[nodiscard]] unsigned short port() const noexcept { return port_; }
  /// "https://localhost:<port>" (or http://), for paths to be appended.
  [[nodiscard]] std::string base(const std::string& host = "localhost") const {
    return (tls_ ? "https://" : "http://") + host + ":" + std::to_string(port_);
  }

  void script(const std::string& path, handler h) {
    const std::lock_guard lock(mutex_);
    handlers_[path] = std::move(h);
  }
  /// Each request to `path` gets the next reply; the last one repeats.
  void script(const std::string& path, std::vector<scripted_reply> replies) {
    script(path, [replies = std::move(replies)](const seen_request&, int n) {
      return replies.at(std::min<std::size_t>(static_cast<std::size_t>(n), replies.size()) - 1);
    });
  }

  [[nodiscard]] std::vector<seen_request> requests() const {
    const std::lock_guard lock(mutex_);
    return seen_;
  }
  [[nodiscard]] std::size_t count() const {
    const std::lock_guard lock(mutex_);
    return seen_.size();
  }

 private:
  boost::asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(boost::asio::as_tuple(boost::asio::use_awaitable));
      if (ec) co_return;
      boost::asio::co_spawn(io_, serve(std::move(socket)), boost::asio::detached);
    }
  }

  boost::asio::awaitable<void> serve(boost::asio::ip::tcp::socket socket) {
    namespace beast = boost::beast;
    beast::tcp_stream tcp(std::move(socket));
    tcp.expires_after(std::chrono::seconds(30));
    // Named, not temporaries inside the co_await expressions (GCC 12 destroys those twice).
    std::string no_sni;
    if (!tls_) {
      co_await answer(tcp, no_sni);
      co_return;
    }
    beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp), *tls_);
    auto [ec] = co_await stream.async_handshake(boost::asio::ssl::stream_base::server,
                                                boost::asio::as_tuple(boost::asio::use_awaitable));
    if (ec) co_return;  // a client that refused the certificate
    const char* name = SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name);
    std::string sni = name ? name : "";
    co_await answer(stream, sni);
  }

  template <class Stream>
  boost::asio::awaitable<void> answer(Stream& stream, const std::string& sni) {
    namespace http = boost::beast::http;
    boost::beast::flat_buffer buffer;
    http::request<http::string_body> req;
    auto [ec, n] =
        co_await http::async_read(stream, buffer, req, boost::asio::as_tuple(boost::asio::use_awaitable));
    (void)n;
    if (ec) co_return;
    seen_request seen{std::string(req.method_string()), std::string(req.target()), {}, req.body(), sni,
                      std::chrono::steady_clock::now()};
    for (const auto& f : req) {
      std::string name(f.name_string());
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
      seen.headers[name] = std::string(f.value());
    }
    std::string path = seen.target.substr(0, seen.target.find('?'));
    handler h;
    int number = 0;
    {
      const std::lock_guard lock(mutex_);
      seen_.push_back(seen);
      number = ++per_path_[path];
      if (auto it = handlers_.find(path); it != handlers_.end()) h = it->second;
    }
    scripted_reply reply{404, {}, "not scripted", std::chrono::milliseconds(0)};
    if (h) reply = h(seen, number);
    if (reply.delay.count() > 0) {
      boost::asio::steady_timer wait(io_, reply.delay);
      co_await wait.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }
    http::response<http::string_body> res{static_cast<http::status>(reply.status), 11};
    for (const auto& [k, v] : reply.headers)
      res.set(k, v);
    res.body() = reply.body;
    res.prepare_payload();
    res.keep_alive(false);
    boost::beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(30));
    auto [wec, written] =
        co_await http::async_write(stream, res, boost::asio::as_tuple(boost::asio::use_awaitable));
    (void)wec;
    (void)written;
  }

  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::optional<boost::asio::ssl::context> tls_;
  unsigned short port_ = 0;
  mutable std::mutex mutex_;
  std::map<std::string, handler> handlers_;
  std::map<std::string, int> per_path_;
  std::vector<seen_request> seen_;
  std::thread thread_;
};

}  // namespace keel::test
