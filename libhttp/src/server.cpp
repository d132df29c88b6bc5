// Connections: accept, read a request within the limits, answer it, keep the connection alive or close it;
// a graceful stop that lets requests in progress finish.
#include "keel/http/server.hpp"

#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <unordered_set>
#include <variant>

#include "access.hpp"
#include "api.hpp"
#include "dashboard.hpp"
#include "keel/common/log.hpp"
#include "keel/engine.hpp"
#include "metrics.hpp"
#include "request_parser.hpp"
#include "sse.hpp"

namespace keel::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace beast_http = boost::beast::http;
using asio::use_awaitable;
using asio::ip::tcp;

namespace detail {

/// One client connection; its stream is used on its own strand only.
struct connection {
  explicit connection(tcp::socket s) : stream(std::move(s)), wake(stream.get_executor()) {}
  beast::tcp_stream stream;
  /// An event stream's heartbeat; a stop cancels it to end the stream.
  asio::steady_timer wake;
  /// Between reading a request's headers and writing its response (not idle: a stop lets it finish).
  bool busy = false;
};

/// The engine's io_context executor as its concrete type. Strands of it fit inside an any_io_executor;
/// a strand of an any_io_executor does not, and is then shared through a count that Asio releases with a
/// fence, which TSan cannot follow (it reports the last copy's destruction on another thread as a race).
asio::io_context::executor_type context_executor(engine& e) {
  const auto ex = e.get_executor();
  const auto* concrete = ex.target<asio::io_context::executor_type>();
  if (concrete == nullptr)
    throw std::logic_error("keel::http::server: the engine's executor is not an io_context's");
  return *concrete;
}

struct server_state {
  server_state(engine& en, server_options o)
      : e(en),
        options(std::move(o)),
        executor(context_executor(en)),
        accept_strand(asio::make_strand(executor)),
        acceptor(accept_strand),
        access{options.api_keys, options.cors_origins} {}

  engine& e;
  const server_options options;
  asio::io_context::executor_type executor;
  asio::strand<asio::io_context::executor_type> accept_strand;
  tcp::acceptor acceptor;
  const access_policy access;
  unsigned short port = 0;
  std::atomic<bool> stopping{false};

  std::mutex m;
  std::condition_variable changed;
  std::unordered_set<std::shared_ptr<connection>> connections;  // under m
  bool accepting = false;                                       // under m
  sse_counters sse;

  [[nodiscard]] server_stats stats() const noexcept {
    server_stats out;
    out.event_streams = sse.clients.load(std::memory_order_relaxed);
    out.dropped_frames = sse.dropped_frames.load(std::memory_order_relaxed);
    return out;
  }

  void ended(const std::shared_ptr<connection>& c) {
    std::lock_guard lock(m);
    connections.erase(c);
    changed.notify_all();
  }
};

}  // namespace detail

namespace {

using detail::connection;
using state_ptr = std::shared_ptr<detail::server_state>;

/// Writes `res` (its payload prepared) within the request timeout; false when the client is gone.
asio::awaitable<bool> send(const server_options& o, connection& c, detail::response& res) {
  c.stream.expires_after(o.request_timeout);
  auto [ec, n] = co_await beast_http::async_write(c.stream, res, asio::as_tuple(use_awaitable));
  (void)n;
  co_return !ec;
}

/// Writes `res`'s head only (the answer to HEAD) within the request timeout; false when the client is gone.
asio::awaitable<bool> send_head(const server_options& o, connection& c, detail::response& res) {
  beast_http::response_serializer<beast_http::string_body> sr{res};
  c.stream.expires_after(o.request_timeout);
  auto [ec, n] = co_await beast_http::async_write_header(c.stream, sr, asio::as_tuple(use_awaitable));
  (void)n;
  co_return !ec;
}

/// What a request that could not be read gets before the connection closes (nullopt: nothing, the client
/// is gone or never sent a byte).
std::optional<detail::response> unreadable(beast::error_code ec, bool got_some, const server_options& o) {
  using beast_http::status;
  if (ec == beast_http::error::body_limit)
    return detail::error_response(status::payload_too_large, "payload_too_large",
                                  "the body is over " + std::to_string(o.max_body_bytes) + " bytes");
  if (ec == beast_http::error::header_limit)
    return detail::error_response(
        status::request_header_fields_too_large, "headers_too_large",
        "the request line and headers are over " + std::to_string(o.max_header_bytes) + " bytes");
  // A request that did not arrive in time gets nothing: the stream closed its socket at the timeout.
  if (!got_some) return std::nullopt;
  if (ec.category() == beast_http::make_error_code(beast_http::error::bad_method).category())
    return detail::error_response(status::bad_request, "malformed_request",
                                  "malformed HTTP: " + ec.message());
  return std::nullopt;
}

/// An HTTP/1.1 request that asks for `100 Continue` before its body (RFC 9110 §10.1.1).
bool expects_continue(const beast_http::request<beast_http::string_body>& req) {
  return req.version() >= 11 && beast::iequals(req[beast_http::field::expect], "100-continue");
}

/// After refusing a request the client may still be sending: reads and drops the rest for a moment before
/// the close, which would otherwise reset the connection under the response.
asio::awaitable<void> linger(connection& c) {
  beast::error_code ignored;
  c.stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  c.stream.expires_after(std::chrono::milliseconds(500));
  std::array<char, 8192> sink;
  std::size_t total = 0;
  while (total < 1024 * 1024) {
    auto [ec, n] = co_await c.stream.async_read_some(asio::buffer(sink), asio::as_tuple(use_awaitable));
    if (ec) break;
    total += n;
  }
}

asio::awaitable<void> serve(state_ptr st, std::shared_ptr<connection> c) {
  const auto& o = st->options;
  beast::flat_buffer buffer;
  for (;;) {
    c->busy = false;
    if (st->stopping.load(std::memory_order_acquire)) break;
    detail::request_parser parser;
    detail::configure_parser(parser, o);
    if (buffer.size() == 0) {
      // Idle until the request's first byte (a kept-alive client may have pipelined it already).
      c->stream.expires_after(o.idle_timeout);
      auto [idle_ec, got] =
          co_await c->stream.async_read_some(buffer.prepare(4096), asio::as_tuple(use_awaitable));
      if (idle_ec) break;  // idle too long, the client left, or the server stops
      buffer.commit(got);
    }
    // From its first byte the request is in progress: a stop lets it arrive whole and be answered.
    c->busy = true;
    c->stream.expires_after(o.request_timeout);
    auto [ec, n] =
        co_await beast_http::async_read_header(c->stream, buffer, parser, asio::as_tuple(use_awaitable));
    if (!ec && !parser.is_done() && expects_continue(parser.get())) {
      // The client waits for a go-ahead before sending the body (curl does for bodies over 1 KiB). A body
      // over the limit was refused with the header already (body_limit checks Content-Length); a caller
      // without a key is refused before it sends one.
      if (!detail::authorised(st->access, parser.get())) {
        auto res = detail::unauthorised();
        res.version(parser.get().version());
        detail::allow_origin(res, detail::allowed_origin(st->access, parser.get()));
        res.keep_alive(false);
        res.prepare_payload();
        if (co_await send(o, *c, res)) co_await linger(*c);
        break;
      }
      static constexpr std::string_view k_continue = "HTTP/1.1 100 Continue\r\n\r\n";
      c->stream.expires_after(o.request_timeout);
      auto [wec, written] =
          co_await asio::async_write(c->stream, asio::buffer(k_continue), asio::as_tuple(use_awaitable));
      (void)written;
      ec = wec;
    }
    if (!ec && !parser.is_done()) {
      std::tie(ec, n) =
          co_await beast_http::async_read(c->stream, buffer, parser, asio::as_tuple(use_awaitable));
    }
    (void)n;
    if (ec) {
      auto res = unreadable(ec, parser.got_some() || buffer.size() > 0, o);
      if (res) {
        res->keep_alive(false);
        res->prepare_payload();
        if (co_await send(o, *c, *res)) co_await linger(*c);
      }
      break;
    }
    auto req = parser.release();
    const auto origin = detail::allowed_origin(st->access, req);
    std::optional<detail::response> answer;
    if (auto pre = detail::preflight(st->access, req)) {
      answer = std::move(*pre);
    } else if (detail::foreign_origin(st->access, req)) {
      answer = detail::forbidden_origin();
    } else if (!detail::authorised(st->access, req)) {
      answer = detail::unauthorised();
    } else if (auto sse = detail::sse_route(req)) {
      if (auto* refused = std::get_if<detail::response>(&*sse)) {
        answer = std::move(*refused);
      } else {
        const detail::sse_link link{
            c->stream,           c->wake, st->stopping, o.request_timeout, o.heartbeat_interval,
            o.max_queued_events, st->sse, origin};
        answer = co_await detail::serve_sse(st->e, std::get<detail::sse_request>(*sse), link);
        if (!answer) break;  // the event stream was served: its end closes the connection
      }
    } else if (detail::is_dashboard(req.target())) {
      answer = detail::dashboard(req);
    } else if (detail::is_metrics(req)) {
      answer = co_await detail::metrics(st->e, req, st->stats());
    } else {
      answer = co_await detail::handle(st->e, req);
    }
    auto& res = *answer;
    res.version(req.version());
    detail::allow_origin(res, origin);
    const bool stream_head = res[beast_http::field::content_type] == "text/event-stream";
    res.keep_alive(req.keep_alive() && !st->stopping.load(std::memory_order_acquire) && !stream_head);
    const bool again = res.keep_alive();
    if (req.method() == beast_http::verb::head) {
      // The head a GET would get, without its body: the GET's length, or (an event stream) its chunking.
      if (stream_head && req.version() >= 11) {
        res.chunked(true);
      } else if (!stream_head) {
        res.content_length(res.body().size());
      }
      if (!co_await send_head(o, *c, res) || !again) break;
      continue;
    }
    res.prepare_payload();
    if (!co_await send(o, *c, res) || !again) break;
  }
  beast::error_code ignored;
  c->stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  c->stream.close();
}

/// Over max_connections: told so, briefly, and closed.
asio::awaitable<void> refuse(state_ptr st, std::shared_ptr<connection> c) {
  auto res = detail::error_response(beast_http::status::service_unavailable, "too_many_connections",
                                    "the server has too many connections open; try again shortly");
  res.keep_alive(false);
  res.prepare_payload();
  server_options o = st->options;
  o.request_timeout = std::chrono::seconds(1);
  co_await send(o, *c, res);
  c->stream.close();
}

asio::awaitable<void> accept_loop(state_ptr st) {
  for (;;) {
    auto [ec, socket] =
        co_await st->acceptor.async_accept(asio::make_strand(st->executor), asio::as_tuple(use_awaitable));
    if (st->stopping.load(std::memory_order_acquire) || ec == asio::error::operation_aborted) break;
    if (ec) {
      // Out of file descriptors and the like: say so, and go on (the next accept may succeed).
      log::warn("http", "accept failed: " + ec.message());
      asio::steady_timer pause(st->accept_strand, std::chrono::milliseconds(50));
      co_await pause.async_wait(asio::as_tuple(use_awaitable));
      continue;
    }
    auto c = std::make_shared<connection>(std::move(socket));
    bool over;
    {
      std::lock_guard lock(st->m);
      over = st->connections.size() >= st->options.max_connections;
      st->connections.insert(c);
    }
    auto done = [st, c](std::exception_ptr e) {
      if (e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          log::error("http", std::string("a connection failed: ") + ex.what());
        }
      }
      st->ended(c);
    };
    auto ex = c->stream.get_executor();
    if (over) {
      asio::co_spawn(ex, refuse(st, c), std::move(done));
    } else {
      asio::co_spawn(ex, serve(st, c), std::move(done));
    }
  }
}

}  // namespace

server::server(engine& e, server_options options)
    : state_(std::make_shared<detail::server_state>(e, std::move(options))) {}

server::~server() {
  stop_blocking();
}

result<void> server::start() {
  auto& st = *state_;
  beast::error_code ec;
  const auto address = asio::ip::make_address(st.options.address, ec);
  if (ec) return ec;
  const tcp::endpoint endpoint(address, st.options.port);
  if (st.acceptor.open(endpoint.protocol(), ec); ec) return ec;
  if (st.acceptor.set_option(asio::socket_base::reuse_address(true), ec); ec) return ec;
  if (st.acceptor.bind(endpoint, ec); ec) return ec;
  if (st.acceptor.listen(asio::socket_base::max_listen_connections, ec); ec) return ec;
  st.port = st.acceptor.local_endpoint(ec).port();
  {
    std::lock_guard lock(st.m);
    st.accepting = true;
  }
  asio::co_spawn(st.accept_strand, accept_loop(state_), [st = state_](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log::error("http", std::string("the accept loop failed: ") + ex.what());
      }
    }
    std::lock_guard lock(st->m);
    st->accepting = false;
    st->changed.notify_all();
  });
  log::info("http", "listening on " + st.options.address + ":" + std::to_string(st.port));
  return {};
}

unsigned short server::port() const noexcept {
  return state_->port;
}

server_stats server::stats() const noexcept {
  return state_->stats();
}

void server::stop_blocking(std::chrono::milliseconds deadline) {
  auto st = state_;
  if (st->stopping.exchange(true)) return;
  st->e.end_webhook_waits();  // a request waiting for its webhook's answer gets 202 now, not at its timeout
  asio::post(st->accept_strand, [st] {
    beast::error_code ignored;
    st->acceptor.close(ignored);
  });
  std::unique_lock lock(st->m);
  // Idle connections (waiting for a request) close now; busy ones finish their request first.
  for (const auto& c : st->connections) {
    asio::post(c->stream.get_executor(), [c] {
      if (c->busy) {
        c->wake.cancel();  // an event stream ends; a request in progress does not use it
      } else {
        c->stream.cancel();
      }
    });
  }
  const auto quiet = [&] { return st->connections.empty() && !st->accepting; };
  if (!st->changed.wait_for(lock, deadline, quiet)) {
    log::warn("http", "stop: " + std::to_string(st->connections.size()) +
                          " connection(s) still busy after the deadline; closing them");
    for (const auto& c : st->connections)
      asio::post(c->stream.get_executor(), [c] { c->stream.close(); });
    // A request waiting on the engine still holds it: wait for it (engine calls have their own time
    // limits), so that the engine is never stopped under a request.
    while (!st->changed.wait_for(lock, std::chrono::seconds(10), quiet))
      log::warn("http", "stop: still waiting for " + std::to_string(st->connections.size()) + " request(s)");
  }
}

}  // namespace keel::http
