// One outbound HTTP/1.1 exchange for ctx.fetch: URL parsing, the shared TLS client context, and a Beast
// client over TCP or TLS with one deadline for the whole exchange.
#include "http_client.hpp"

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>
#include <cctype>
#include <map>
#include <mutex>
#include <stdexcept>

#include "http_message_json.hpp"

#ifndef KEEL_VERSION
#define KEEL_VERSION "0"
#endif

namespace keel::detail {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace ssl = boost::asio::ssl;
using asio::ip::tcp;
using std::chrono::steady_clock;

/// A response's header block may be larger than Beast's default 8 KiB (cookies, security policies).
constexpr std::uint32_t k_max_header_bytes = 64 * 1024;

bool is_host_name(std::string_view host) {
  return !host.empty() && std::all_of(host.begin(), host.end(), [](unsigned char c) {
    return std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_';
  });
}

/// "timed out after 30s connecting to host:443".
std::string timed_out(const http_exchange_options& o, std::string_view doing) {
  std::string s = "timed out after ";
  s.append(duration_text(o.timeout)).append(" ").append(doing);
  return s;
}

/// Writes the request and reads the response on an established stream (TCP or TLS).
template <class Stream>
asio::awaitable<http_outcome> exchange_on(Stream& stream, beast::tcp_stream& lowest,
                                          steady_clock::time_point deadline, const http_target& to,
                                          const http_exchange_options& o) {
  http_outcome out;
  const std::string where = to.host + ":" + to.port;
  http::request<http::string_body> req;
  req.method_string(o.method);
  req.target(to.target);
  req.version(11);
  for (const auto& [name, value] : *o.headers) {
    // The body is sent whole: its length is ours to state.
    if (iequals(name, "content-length") || iequals(name, "transfer-encoding")) continue;
    req.insert(name, value);
  }
  req.body() = *o.body;
  // Beast's prepare_payload refuses some method and body combinations; the rule here is RFC 9110's: a length
  // whenever there is a body, and for the methods that expect one.
  if (!req.body().empty() || o.method == "POST" || o.method == "PUT" || o.method == "PATCH")
    req.content_length(req.body().size());

  lowest.expires_at(deadline);
  auto [wec, written] = co_await http::async_write(stream, req, asio::as_tuple(asio::use_awaitable));
  (void)written;
  if (wec) {
    out.error = wec == beast::error::timeout
                    ? timed_out(o, "sending the request to " + where)
                    : "sending the request to " + where + " failed: " + wec.message();
    co_return out;
  }

  beast::flat_buffer buffer;
  for (;;) {
    http::response_parser<http::string_body> parser;
    parser.header_limit(k_max_header_bytes);
    parser.body_limit(o.max_body);
    // A response to HEAD announces a body it does not carry.
    if (o.method == "HEAD") parser.skip(true);
    auto [rec, read] = co_await http::async_read(stream, buffer, parser, asio::as_tuple(asio::use_awaitable));
    (void)read;
    if (rec == ssl::error::stream_truncated && parser.is_header_done() && parser.need_eof()) {
      // A body that ends with the connection, closed without TLS close_notify: many servers do so, and the
      // length was never promised.
      boost::system::error_code eof;
      parser.put_eof(eof);
      rec = eof;
    }
    if (rec == http::error::body_limit) {
      out.too_large = true;
      out.error = "the response from " + where + " is larger than max_response_bytes (" +
                  std::to_string(o.max_body) + ")";
      co_return out;
    }
    if (rec) {
      out.error = rec == beast::error::timeout
                      ? timed_out(o, "waiting for the response of " + where)
                      : "reading the response of " + where + " failed: " + rec.message();
      co_return out;
    }
    auto& res = parser.get();
    // Interim responses (103 Early Hints, a 100 not asked for) precede the real one.
    if (res.result_int() >= 100 && res.result_int() < 200 && res.result_int() != 101) continue;
    fetch_response r;
    r.status = res.result_int();
    for (const auto& field : res)
      r.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    r.body = std::move(res.body());
    out.response = std::move(r);
    co_return out;
  }
}

}  // namespace

std::optional<http_target> parse_http_url(std::string_view url, std::string& why) {
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) {
    why = "the URL does not parse (" + parsed.error().message() + ")";
    return std::nullopt;
  }
  const boost::urls::url_view& u = *parsed;
  http_target t;
  if (u.scheme_id() == boost::urls::scheme::https) {
    t.tls = true;
  } else if (u.scheme_id() != boost::urls::scheme::http) {
    why = "the URL's scheme must be http or https";
    return std::nullopt;
  }
  if (u.has_userinfo()) {
    why =
        "the URL carries user info: send credentials in an Authorization header (a step's name shows the "
        "URL)";
    return std::nullopt;
  }
  switch (u.host_type()) {
    case boost::urls::host_type::name:
      t.host = std::string(u.encoded_host());
      if (!is_host_name(t.host)) {
        why = "the URL's host is not a host name (letters, digits, '-', '.'; IDNs in punycode)";
        return std::nullopt;
      }
      break;
    case boost::urls::host_type::ipv4:
    case boost::urls::host_type::ipv6:
      t.host = std::string(u.host_address());
      t.host_is_address = true;
      break;
    default:
      why = "the URL has no host";
      return std::nullopt;
  }
  t.authority = std::string(u.encoded_host());
  t.port = t.tls ? "443" : "80";
  if (u.has_port() && !u.port().empty()) {
    const std::string_view p = u.port();
    const bool digits =
        p.size() <= 5 && std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; });
    const long n = digits ? std::stol(std::string(p)) : 0;
    if (n < 1 || n > 65535) {
      why = "the URL's port must be 1 to 65535";
      return std::nullopt;
    }
    t.port = std::string(p);
    t.authority.append(":").append(p);
  }
  t.target = u.encoded_path().empty() ? std::string("/") : std::string(u.encoded_path());
  if (u.has_query()) t.target.append("?").append(u.encoded_query());
  t.without_query = t.tls ? "https://" : "http://";
  t.without_query.append(t.authority).append(u.encoded_path());
  return t;
}

bool is_http_token(std::string_view method) noexcept {
  constexpr std::string_view k_tchar_symbols = "!#$%&'*+-.^_`|~";
  return !method.empty() && std::all_of(method.begin(), method.end(), [&](unsigned char c) {
    return std::isalnum(c) != 0 || k_tchar_symbols.find(static_cast<char>(c)) != std::string_view::npos;
  });
}

std::shared_ptr<ssl::context> tls_client_context(const std::string& ca_file) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<ssl::context>> contexts;
  const std::lock_guard lock(mutex);
  if (auto it = contexts.find(ca_file); it != contexts.end()) return it->second;
  // Reading the system's and the extra CAs is blocking file I/O on a run's thread, once per process (and
  // per CA file): small, and cheaper than a thread hop for every fetch.
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  boost::system::error_code ec;
  ctx->set_default_verify_paths(ec);
  if (ec) throw std::runtime_error("cannot load the system's certificate authorities: " + ec.message());
  if (!ca_file.empty()) {
    ctx->load_verify_file(ca_file, ec);
    if (ec) throw std::runtime_error("cannot load fetch_ca_file '" + ca_file + "': " + ec.message());
  }
  ctx->set_verify_mode(ssl::verify_peer);
  contexts.emplace(ca_file, ctx);
  return ctx;
}

asio::awaitable<http_outcome> http_exchange(const http_target& to, const http_exchange_options& o) {
  auto executor = co_await asio::this_coro::executor;
  const auto deadline = steady_clock::now() + o.timeout;
  const std::string where = to.host + ":" + to.port;
  http_outcome out;

  tcp::resolver resolver(executor);
  auto [rec, endpoints] =
      co_await resolver.async_resolve(to.host, to.port, asio::as_tuple(asio::use_awaitable));
  if (rec) {
    out.error = "cannot resolve " + to.host + ": " + rec.message();
    co_return out;
  }
  if (steady_clock::now() >= deadline) {
    out.error = timed_out(o, "resolving " + to.host);
    co_return out;
  }

  beast::tcp_stream tcp(executor);
  tcp.expires_at(deadline);
  auto [cec, endpoint] = co_await tcp.async_connect(endpoints, asio::as_tuple(asio::use_awaitable));
  (void)endpoint;
  if (cec) {
    out.error = cec == beast::error::timeout ? timed_out(o, "connecting to " + where)
                                             : "connect to " + where + " failed: " + cec.message();
    co_return out;
  }
  if (!to.tls) co_return co_await exchange_on(tcp, tcp, deadline, to, o);

  beast::ssl_stream<beast::tcp_stream> tls(std::move(tcp), *o.tls);
  SSL* handle = tls.native_handle();
  // The certificate must name the host (or its address); OpenSSL checks it while verifying the chain, so a
  // mismatch reads "hostname mismatch" rather than a bare verify failure.
  X509_VERIFY_PARAM* param = SSL_get0_param(handle);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  const int named = to.host_is_address ? X509_VERIFY_PARAM_set1_ip_asc(param, to.host.c_str())
                                       : X509_VERIFY_PARAM_set1_host(param, to.host.c_str(), to.host.size());
  if (named != 1 || (!to.host_is_address && SSL_set_tlsext_host_name(handle, to.host.c_str()) != 1)) {
    out.error = "cannot set up TLS for " + to.host;
    co_return out;
  }
  beast::get_lowest_layer(tls).expires_at(deadline);
  auto [hec] = co_await tls.async_handshake(ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
  if (hec) {
    if (hec == beast::error::timeout) {
      out.error = timed_out(o, "in the TLS handshake with " + where);
      co_return out;
    }
    out.error = "TLS handshake with " + where + " failed: " + hec.message();
    if (const long verify = SSL_get_verify_result(handle); verify != X509_V_OK)
      out.error.append(": ").append(X509_verify_cert_error_string(verify));
    co_return out;
  }
  co_return co_await exchange_on(tls, beast::get_lowest_layer(tls), deadline, to, o);
}

std::string_view user_agent() noexcept {
  return "keel/" KEEL_VERSION;
}

std::string duration_text(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + "s";
  return std::to_string(d.count()) + "ms";
}

}  // namespace keel::detail
