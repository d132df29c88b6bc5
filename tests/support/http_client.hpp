// An HTTP/1.1 client for tests over loopback (Boost.Beast, blocking), and a Server-Sent Events reader.
#pragma once

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace keel::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace json = boost::json;
using asio::ip::tcp;

struct reply {
  int status = 0;
  json::value body;
  bhttp::response<bhttp::string_body> raw;
  [[nodiscard]] std::string code() const {
    const auto* e = body.is_object() ? body.get_object().if_contains("error") : nullptr;
    return e && e->is_object() && e->get_object().contains("code")
               ? std::string(e->get_object().at("code").as_string())
               : std::string();
  }
};

/// A client connection to the server (kept alive across requests).
class client {
 public:
  explicit client(unsigned short port) : socket_(io_) {
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  }

  reply send(bhttp::verb method, const std::string& target, const std::string& body = "",
             const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    bhttp::request<bhttp::string_body> req{method, target, 11};
    req.set(bhttp::field::host, "127.0.0.1");
    for (const auto& [k, v] : headers)
      req.set(k, v);
    if (!body.empty()) {
      if (req.find(bhttp::field::content_type) == req.end())
        req.set(bhttp::field::content_type, "application/json");
      req.body() = body;
    }
    req.prepare_payload();
    bhttp::write(socket_, req);
    return read();
  }

  reply read() {
    reply r;
    bhttp::read(socket_, buffer_, r.raw);
    r.status = static_cast<int>(r.raw.result_int());
    boost::system::error_code ec;
    r.body = json::parse(r.raw.body(), ec);
    return r;
  }

  tcp::socket& socket() { return socket_; }

 private:
  asio::io_context io_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
};

/// One Server-Sent Event as a client sees it.
struct sse_event {
  std::optional<std::string> id;  ///< the `id:` field, when it had one
  std::string event;              ///< "" for the default type (`message`)
  std::string data;
  [[nodiscard]] json::value json() const { return json::parse(data); }
};

/// Follows an event stream: GET `target`, then read() events one at a time (comments are counted).
class sse_reader {
 public:
  /// `receive_buffer` > 0: the socket's receive buffer (small: a client that stops reading stalls the
  /// server's writes soon).
  sse_reader(unsigned short port, const std::string& target,
             const std::vector<std::pair<std::string, std::string>>& headers = {}, int receive_buffer = 0)
      : socket_(io_) {
    if (receive_buffer > 0) {
      socket_.open(tcp::v4());
      socket_.set_option(asio::socket_base::receive_buffer_size(receive_buffer));
    }
    socket_.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    bhttp::request<bhttp::empty_body> req{bhttp::verb::get, target, 11};
    req.set(bhttp::field::host, "127.0.0.1");
    req.set(bhttp::field::accept, "text/event-stream");
    for (const auto& [k, v] : headers)
      req.set(k, v);
    bhttp::write(socket_, req);
    parser_.body_limit(boost::none);
    parser_.on_chunk_body(on_chunk_);
    bhttp::read_header(socket_, buffer_, parser_);
    status = static_cast<int>(parser_.get().result_int());
    content_type = std::string(parser_.get()[bhttp::field::content_type]);
  }

  /// The next event; nullopt once the response ended (or the connection closed).
  std::optional<sse_event> read() {
    for (;;) {
      if (auto e = take()) return e;
      if (ended_) return std::nullopt;
      boost::system::error_code ec;
      bhttp::read_some(socket_, buffer_, parser_, ec);
      if (ec || parser_.is_done()) ended_ = true;
    }
  }

  /// Events until `until` returns true for one (included); stops early if the stream ends.
  template <class Pred>
  std::vector<sse_event> read_until(Pred until) {
    std::vector<sse_event> out;
    while (auto e = read()) {
      out.push_back(*e);
      if (until(out.back())) break;
    }
    return out;
  }

  /// The body of a non-stream answer (an error), read whole.
  json::value error_body() {
    while (!ended_) {
      boost::system::error_code ec;
      bhttp::read_some(socket_, buffer_, parser_, ec);
      if (ec || parser_.is_done()) ended_ = true;
    }
    boost::system::error_code ec;
    auto v = json::parse(text_.empty() ? std::string_view(parser_.get().body()) : text_, ec);
    return ec ? json::value() : v;
  }

  void close() {
    boost::system::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
  }

  int status = 0;
  std::string content_type;
  /// Comment lines seen (heartbeats).
  int comments = 0;
  std::optional<int> retry_ms;

 private:
  std::optional<sse_event> take() {
    for (;;) {
      const auto end = text_.find("\n\n");
      if (end == std::string::npos) return std::nullopt;
      const std::string block = text_.substr(0, end);
      text_.erase(0, end + 2);
      sse_event e;
      bool any = false;
      std::size_t at = 0;
      while (at <= block.size()) {
        auto nl = block.find('\n', at);
        if (nl == std::string::npos) nl = block.size();
        const std::string line = block.substr(at, nl - at);
        at = nl + 1;
        if (line.empty()) continue;
        if (line[0] == ':') {
          ++comments;
          continue;
        }
        const auto colon = line.find(':');
        const std::string field = line.substr(0, colon);
        std::string value = colon == std::string::npos ? "" : line.substr(colon + 1);
        if (!value.empty() && value[0] == ' ') value.erase(0, 1);
        if (field == "id") {
          e.id = value;
          any = true;
        } else if (field == "event") {
          e.event = value;
          any = true;
        } else if (field == "data") {
          e.data += (e.data.empty() ? "" : "\n") + value;
          any = true;
        } else if (field == "retry") {
          retry_ms = std::stoi(value);
        }
      }
      if (any) return e;
    }
  }

  asio::io_context io_;
  tcp::socket socket_;
  beast::flat_buffer buffer_;
  bhttp::response_parser<bhttp::string_body> parser_;
  std::string text_;
  bool ended_ = false;
  std::function<std::size_t(std::uint64_t, std::string_view, boost::system::error_code&)> on_chunk_ =
      [this](std::uint64_t, std::string_view body, boost::system::error_code&) {
        text_.append(body);
        return body.size();
      };
};

}  // namespace keel::test
