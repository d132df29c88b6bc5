// Blocking HTTP over Beast's synchronous calls. Asio's own blocking reads wait forever (with SO_RCVTIMEO
// they just poll again), so the socket is non-blocking and each read, write and connect waits in poll():
// there the deadline and SIGINT (the interrupt pipe) can end it.
#include "http_client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/rfc/pchars.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <cerrno>
#include <climits>

#include "errors.hpp"
#include "interrupt.hpp"

namespace keel::cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace json = boost::json;
using boost::system::error_code;
using clock = std::chrono::steady_clock;
using tcp = asio::ip::tcp;

/// Response bodies larger than this are refused (a page of 1,000 runs with large outputs fits).
constexpr std::uint64_t k_body_limit = 512ull * 1024 * 1024;

/// A TCP socket whose blocking operations give up at a deadline or on SIGINT (operation_aborted).
/// It models Beast's SyncReadStream and SyncWriteStream.
class deadline_socket {
 public:
  explicit deadline_socket(asio::io_context& io) : socket_(io) {}

  void expires_after(std::chrono::milliseconds d) { deadline_ = clock::now() + d; }

  void connect(const tcp::endpoint& ep, error_code& ec) {
    socket_.close(ec);
    socket_.open(ep.protocol(), ec);
    if (!ec) socket_.non_blocking(true, ec);
    if (ec) return;
    // Not socket_.connect: in blocking form it waits without a limit even on a non-blocking socket.
    if (::connect(socket_.native_handle(), ep.data(), static_cast<socklen_t>(ep.size())) == 0) return;
    if (errno != EINPROGRESS) {
      ec.assign(errno, boost::system::system_category());
      return;
    }
    if (!wait(POLLOUT, ec)) return;
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) ec.assign(err, boost::system::system_category());
  }

  template <class MutableBuffers>
  std::size_t read_some(const MutableBuffers& buffers, error_code& ec) {
    for (;;) {
      const auto n = socket_.read_some(buffers, ec);
      if (ec != asio::error::would_block) return n;
      if (!wait(POLLIN, ec)) return 0;
    }
  }
  template <class MutableBuffers>
  std::size_t read_some(const MutableBuffers& buffers) {
    error_code ec;
    const auto n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }
  template <class ConstBuffers>
  std::size_t write_some(const ConstBuffers& buffers, error_code& ec) {
    for (;;) {
      const auto n = socket_.write_some(buffers, ec);
      if (ec != asio::error::would_block) return n;
      if (!wait(POLLOUT, ec)) return 0;
    }
  }
  template <class ConstBuffers>
  std::size_t write_some(const ConstBuffers& buffers) {
    error_code ec;
    const auto n = write_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

 private:
  /// Until the socket is ready for `events`; false with `ec` set at the deadline or on SIGINT.
  bool wait(short events, error_code& ec) {
    for (;;) {
      if (interrupted()) {
        ec = asio::error::operation_aborted;
        return false;
      }
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline_ - clock::now()).count();
      if (left <= 0) {
        ec = asio::error::timed_out;
        return false;
      }
      std::array<pollfd, 2> fds{{{socket_.native_handle(), events, 0}, {interrupt_fd(), POLLIN, 0}}};
      const int r = ::poll(fds.data(), fds.size(), static_cast<int>(std::min<long long>(left, INT_MAX)));
      if (r < 0 && errno != EINTR) {
        ec.assign(errno, boost::system::system_category());
        return false;
      }
      // Readiness includes POLLERR and POLLHUP: the next read or write reports them.
      if (r > 0 && fds[0].revents != 0) return true;
    }
  }

  tcp::socket socket_;
  clock::time_point deadline_ = clock::now();
};

std::string host_header(const server_url& u) {
  const bool ipv6 = u.host.find(':') != std::string::npos;
  return (ipv6 ? "[" + u.host + "]" : u.host) + ":" + u.port;
}

std::string seconds_text(std::chrono::milliseconds d) {
  const auto ms = d.count();
  return ms % 1000 == 0 ? std::to_string(ms / 1000) + " s" : std::to_string(ms) + " ms";
}

/// Connects `s` to the server, or throws unreachable naming the URL and the reason.
void connect_blocking(deadline_socket& s, asio::io_context& io, const server_url& url,
                      std::chrono::milliseconds timeout) {
  tcp::resolver resolver(io);
  error_code ec;
  auto endpoints = resolver.resolve(url.host, url.port, ec);
  if (ec)
    throw unreachable("cannot reach the Keel server at " + url.text + ": cannot resolve '" + url.host +
                      "': " + ec.message());
  for (const auto& entry : endpoints) {
    s.connect(entry.endpoint(), ec);
    if (!ec) return;
    if (ec == asio::error::operation_aborted) break;
  }
  if (ec == asio::error::operation_aborted) throw unreachable("interrupted");
  if (ec == asio::error::timed_out)
    throw unreachable("cannot reach the Keel server at " + url.text + ": no connection within " +
                      seconds_text(timeout));
  throw unreachable("cannot reach the Keel server at " + url.text + ": " + ec.message() +
                    " (is keeld running there? --url or KEEL_URL say where it is)");
}

/// Why an exchange failed after connecting, for people.
std::string failure_text(const server_url& url, const error_code& ec, std::chrono::milliseconds timeout) {
  if (ec == asio::error::operation_aborted) return "interrupted";
  if (ec == asio::error::timed_out)
    return "the Keel server at " + url.text + " did not answer within " + seconds_text(timeout);
  return "the connection to the Keel server at " + url.text + " failed: " + ec.message();
}

template <class Body>
void add_common_headers(bhttp::request<Body>& req, const server_url& url,
                        const std::optional<std::string>& api_key) {
  req.set(bhttp::field::host, host_header(url));
  req.set(bhttp::field::user_agent, "keel-cli");
  if (api_key) req.set(bhttp::field::authorization, "Bearer " + *api_key);
}

class stream_source final : public event_source {
 public:
  stream_source(const server_url& url, std::chrono::milliseconds timeout)
      : url_(url), timeout_(timeout), socket_(io_) {
    parser_.body_limit(boost::none);  // a stream has no end to limit
  }

  /// Sends the request and reads the head; the status, or throws unreachable.
  int open(bhttp::request<bhttp::empty_body>& req) {
    socket_.expires_after(timeout_);
    connect_blocking(socket_, io_, url_, timeout_);
    error_code ec;
    bhttp::write(socket_, req, ec);
    if (!ec) bhttp::read_header(socket_, buffer_, parser_, ec);
    if (ec) throw unreachable(failure_text(url_, ec, timeout_));
    return static_cast<int>(parser_.get().result_int());
  }

  /// The rest of a refused request's answer (its error body).
  std::string drain() {
    std::string out, why;
    socket_.expires_after(timeout_);
    while (read_some_blocking(out, why)) {
    }
    return out;
  }

  void idle_limit(std::chrono::milliseconds idle) { idle_ = idle; }

  bool read_some_blocking(std::string& out, std::string& why) override {
    if (parser_.is_done()) {
      why = "the server ended the stream";
      return false;
    }
    if (idle_.count() > 0) socket_.expires_after(idle_);
    std::array<char, 16 * 1024> piece{};
    parser_.get().body().data = piece.data();
    parser_.get().body().size = piece.size();
    error_code ec;
    bhttp::read_some(socket_, buffer_, parser_, ec);
    if (ec == bhttp::error::need_buffer) ec = {};
    out.append(piece.data(), piece.size() - parser_.get().body().size);
    if (!ec) return true;
    if (ec == asio::error::operation_aborted)
      why = "interrupted";
    else if (ec == asio::error::timed_out)
      why = "nothing (not even a keepalive) for " + seconds_text(idle_);
    else if (ec == bhttp::error::end_of_stream || ec == asio::error::eof)
      why = "the server closed the connection";
    else if (ec == bhttp::error::partial_message || ec == asio::error::connection_reset)
      why = "the connection dropped";
    else
      why = ec.message();
    return false;
  }

 private:
  const server_url& url_;
  std::chrono::milliseconds timeout_;
  std::chrono::milliseconds idle_{0};
  asio::io_context io_;
  deadline_socket socket_;
  beast::flat_buffer buffer_;
  bhttp::response_parser<bhttp::buffer_body> parser_;
};

}  // namespace

server_url server_url::parse(std::string_view text) {
  const std::string usage = " (expected http://HOST[:PORT][/PREFIX])";
  auto parsed = boost::urls::parse_absolute_uri(text);
  if (!parsed) throw usage_error("--url '" + std::string(text) + "' is not a URL" + usage);
  const auto& u = *parsed;
  if (u.scheme() == "https")
    throw usage_error("--url: https is not supported by keel; use http:// (a TLS proxy can sit in front)");
  if (u.scheme() != "http") throw usage_error("--url must start with http://" + usage);
  if (!u.has_authority() || u.host().empty()) throw usage_error("--url has no host" + usage);
  if (u.has_userinfo() || u.has_query()) throw usage_error("--url takes no user or query" + usage);
  server_url out;
  out.text = std::string(text);
  out.host = u.host_type() == boost::urls::host_type::ipv6 ? u.host_ipv6_address().to_string() : u.host();
  out.port = u.has_port() ? std::string(u.port()) : "80";
  if (u.has_port() && u.port_number() == 0) throw usage_error("--url has an invalid port" + usage);
  out.prefix = std::string(u.encoded_path());
  while (!out.prefix.empty() && out.prefix.back() == '/')
    out.prefix.pop_back();
  while (!out.text.empty() && out.text.back() == '/')
    out.text.pop_back();
  return out;
}

http_client::http_client(server_url url, std::optional<std::string> api_key,
                         std::chrono::milliseconds timeout)
    : url_(std::move(url)), api_key_(std::move(api_key)), timeout_(timeout) {}

http_reply http_client::request_blocking(std::string_view method, std::string_view path_and_query,
                                         const std::optional<std::string>& body,
                                         const std::vector<http_header>& headers) {
  asio::io_context io;
  deadline_socket socket(io);
  socket.expires_after(timeout_);
  connect_blocking(socket, io, url_, timeout_);
  bhttp::request<bhttp::string_body> req{bhttp::string_to_verb(method),
                                         url_.prefix + std::string(path_and_query), 11};
  add_common_headers(req, url_, api_key_);
  req.set(bhttp::field::accept, "application/json");
  for (const auto& h : headers)
    req.set(h.name, h.value);
  if (body) {
    req.set(bhttp::field::content_type, "application/json");
    req.body() = *body;
  }
  req.keep_alive(false);  // one request per connection: the server need not hold it open for us
  req.prepare_payload();
  error_code ec;
  bhttp::write(socket, req, ec);
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(k_body_limit);
  if (!ec) bhttp::read(socket, buffer, parser, ec);
  if (ec) throw unreachable(failure_text(url_, ec, timeout_));
  return {static_cast<int>(parser.get().result_int()), std::move(parser.get().body())};
}

std::unique_ptr<event_source> http_client::open_stream_blocking(std::string_view path_and_query,
                                                                const std::vector<http_header>& headers,
                                                                std::chrono::milliseconds idle,
                                                                http_reply& refused) {
  auto source = std::make_unique<stream_source>(url_, timeout_);
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, url_.prefix + std::string(path_and_query), 11};
  add_common_headers(req, url_, api_key_);
  req.set(bhttp::field::accept, "text/event-stream");
  for (const auto& h : headers)
    req.set(h.name, h.value);
  const int status = source->open(req);
  if (status != 200) {
    refused = {status, source->drain()};
    return nullptr;
  }
  source->idle_limit(idle);
  return source;
}

void throw_unless_success(const http_reply& reply) {
  if (reply.status >= 200 && reply.status < 300) return;
  error_code ec;
  const auto body = json::parse(reply.body, ec);
  if (!ec && body.is_object()) {
    const auto* e = body.get_object().if_contains("error");
    if (e != nullptr && e->is_object()) {
      const auto* code = e->get_object().if_contains("code");
      const auto* message = e->get_object().if_contains("message");
      if (code != nullptr && code->is_string())
        throw api_error(reply.status, std::string(code->get_string()),
                        message != nullptr && message->is_string() ? std::string(message->get_string()) : "");
    }
  }
  // Not Keel's error shape (a proxy in between, say): the status says what there is to say.
  auto text = reply.body.substr(0, 200);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
    text.pop_back();
  throw api_error(reply.status, "http_" + std::to_string(reply.status),
                  text.empty() ? "the server answered HTTP " + std::to_string(reply.status) : text);
}

std::string path_segment(std::string_view segment) {
  return boost::urls::encode(segment, boost::urls::pchars);
}

std::string query_value(std::string_view value) {
  return boost::urls::encode(value, boost::urls::unreserved_chars);
}

}  // namespace keel::cli
