// Server-Sent Events. A lifecycle event carries its run log position as its id: a client resuming with
// Last-Event-ID first gets what the log holds after it, then the live stream, deduplicated by position
// (the stream is opened before the log is read, so nothing falls between them). A client too slow for
// the live stream has its queue dropped and re-read from the log: it loses progress frames (counted),
// never a lifecycle event, and never holds up the engine or anyone else.
#include "sse.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/serialize.hpp>
#include <charconv>
#include <initializer_list>
#include <limits>
#include <map>
#include <tuple>

#include "access.hpp"
#include "errors.hpp"
#include "keel/common/log.hpp"
#include "keel/engine.hpp"
#include "keel/storage/json_limits.hpp"

namespace keel::http::detail {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace beast_http = boost::beast::http;
namespace json = boost::json;
using asio::use_awaitable;
using beast_http::status;

/// Bytes gathered into one write.
constexpr std::size_t k_write_batch = 64 * 1024;
/// Events per log read while catching up.
constexpr std::size_t k_catch_up_page = 1000;
/// How long a client waits before reconnecting (the SSE `retry` field).
constexpr int k_retry_ms = 1000;

std::optional<std::int64_t> non_negative(std::string_view text) {
  std::int64_t v = 0;
  const auto* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc() || p != end || v < 0) return std::nullopt;
  return v;
}

/// One SSE message; `data` is one line (serialised JSON has no raw line break).
void append_message(std::string& out, std::optional<std::string_view> id, std::string_view event,
                    std::string_view data) {
  if (id) {
    out += "id: ";
    out += *id;
    out += '\n';
  }
  if (!event.empty()) {
    out += "event: ";
    out += event;
    out += '\n';
  }
  out += "data: ";
  out += data;
  out += "\n\n";
}

/// The head of an event stream's answer (a HEAD request gets it alone).
template <class Body>
void stream_head(beast_http::response<Body>& res, std::string_view origin) {
  allow_origin(res, origin);
  res.set(beast_http::field::content_type, "text/event-stream");
  res.set(beast_http::field::cache_control, "no-cache");
  res.set("X-Accel-Buffering", "no");  // proxies that buffer responses (nginx) pass this one through
  res.keep_alive(false);
}

response head_answer(const sse_request& r) {
  response res{status::ok, r.version};
  stream_head(res, {});  // the server adds the origin to every answer it writes
  return res;
}

class sse_body {
 public:
  sse_body(sse_link link, unsigned version) : link_(link), chunked_(version >= 11), version_(version) {
    ++link_.counters.clients;
  }
  ~sse_body() { --link_.counters.clients; }
  sse_body(const sse_body&) = delete;
  sse_body& operator=(const sse_body&) = delete;

  /// The response head: a chunked text/event-stream. False when the client is gone.
  asio::awaitable<bool> start() {
    beast_http::response<beast_http::empty_body> res{status::ok, version_};
    stream_head(res, link_.origin);
    // HTTP/1.1: chunked; HTTP/1.0: no length, the body ends when the connection closes.
    if (chunked_) res.chunked(true);
    beast_http::response_serializer<beast_http::empty_body> sr{res};
    link_.stream.expires_after(link_.write_timeout);
    auto [ec, n] = co_await beast_http::async_write_header(link_.stream, sr, asio::as_tuple(use_awaitable));
    (void)n;
    if (ec) co_return false;
    pending_ = "retry: " + std::to_string(k_retry_ms) + "\n\n";
    co_return co_await flush();
  }

  std::string& pending() noexcept { return pending_; }

  /// Writes what is pending as one chunk. False when the client is gone (or too slow to take it).
  asio::awaitable<bool> flush() {
    if (pending_.empty()) co_return true;
    link_.stream.expires_after(link_.write_timeout);
    beast::error_code ec;
    if (chunked_) {
      auto chunk = beast_http::make_chunk(asio::buffer(pending_));
      std::tie(ec, std::ignore) =
          co_await asio::async_write(link_.stream, chunk, asio::as_tuple(use_awaitable));
    } else {
      auto raw = asio::buffer(pending_);
      std::tie(ec, std::ignore) =
          co_await asio::async_write(link_.stream, raw, asio::as_tuple(use_awaitable));
    }
    pending_.clear();
    co_return !ec;
  }

  /// The last chunk: the response ends.
  asio::awaitable<void> finish() {
    if (!co_await flush() || !chunked_) co_return;
    link_.stream.expires_after(link_.write_timeout);
    auto last = beast_http::make_chunk_last();
    co_await asio::async_write(link_.stream, last, asio::as_tuple(use_awaitable));
  }

  /// Waits for `next` or the heartbeat, whichever comes first; on the heartbeat, writes one. nullopt:
  /// heartbeat (or stop: see stopping()); false inside: the client is gone.
  template <class T>
  asio::awaitable<std::variant<T, bool>> next_or_heartbeat(asio::awaitable<T> next) {
    using namespace asio::experimental::awaitable_operators;
    // A stop set the flag before it cancelled the timer: seen here, or the cancel ends the wait.
    if (stopping()) co_return std::variant<T, bool>(std::in_place_index<1>, false);
    link_.wake.expires_after(link_.heartbeat_interval);
    auto beat = link_.wake.async_wait(asio::as_tuple(use_awaitable));
    auto r = co_await (std::move(next) || std::move(beat));
    if (r.index() == 0) co_return std::variant<T, bool>(std::in_place_index<0>, std::move(std::get<0>(r)));
    if (stopping()) co_return std::variant<T, bool>(std::in_place_index<1>, false);
    pending_ += ": keepalive\n\n";
    co_return std::variant<T, bool>(std::in_place_index<1>, co_await flush());
  }

  [[nodiscard]] bool stopping() const noexcept { return link_.stopping.load(std::memory_order_acquire); }
  sse_counters& counters() noexcept { return link_.counters; }
  [[nodiscard]] std::size_t max_queued() const noexcept { return link_.max_queued_events; }

 private:
  sse_link link_;
  const bool chunked_;
  const unsigned version_;
  std::string pending_;
};

// ---- lifecycle events ----

class event_feed {
 public:
  event_feed(engine& e, const sse_request& r, sse_body& body) : e_(e), r_(r), body_(body) {}

  stream_options stream_options_for() const {
    stream_options so;
    so.filter.workflow = r_.workflow;
    if (r_.what == sse_request::source::run_events) so.filter.run = r_.run;
    so.filter.progress = r_.frames;
    return so;
  }

  /// Adds `ev` to what is pending (unless already sent).
  void add(const stream_event& ev) {
    if (const auto* f = ev.as<events::progress>()) {
      if (f->missed > 0) body_.counters().dropped_frames += f->missed;
      append_message(body_.pending(), std::nullopt, "frame", json::serialize(to_json(ev)));
      return;
    }
    if (const auto* g = ev.as<events::log_gap>()) {
      if (g->until <= gap_reported_) return;
      gap_reported_ = g->until;
      append_message(body_.pending(), std::nullopt, "gap",
                     json::serialize(json::object{{"until", g->until}}));
      return;
    }
    if (last_ && ev.id <= *last_) return;  // read from the log already
    last_ = ev.id;
    const auto id = std::to_string(ev.id);
    append_message(body_.pending(), id, "", json::serialize(to_json(ev)));
  }

  /// What the log holds after `last_`, page by page. False when the client is gone or the log unreadable.
  asio::awaitable<bool> catch_up() {
    read_log_options o;
    if (r_.what == sse_request::source::run_events) {
      o.run = r_.run;
      o.descendants = true;
    }
    o.workflow = r_.workflow;
    o.limit = k_catch_up_page;
    for (;;) {
      auto page = co_await e_.read_log(*last_, o);
      if (!page) {
        log::warn("http", "SSE: reading the run log failed: " + page.error().message());
        co_return false;
      }
      if (page->gap_until && *page->gap_until > gap_reported_) {
        stream_event gap;
        gap.body = events::log_gap{*page->gap_until};
        add(gap);
      }
      const bool more = page->events.size() == o.limit;
      for (auto& le : page->events) {
        add(to_stream_event(std::move(le)));
        if (body_.pending().size() >= k_write_batch && !co_await body_.flush()) co_return false;
      }
      if (!co_await body_.flush()) co_return false;
      if (!more) co_return true;
    }
  }

  /// Too slow for the live stream: drops its queue (frames counted as lost) and opens a new one; the
  /// lifecycle events it held are read from the log again. False when that fails.
  asio::awaitable<bool> restart(event_stream& live) {
    // The new stream first: what commits from now on is in it, what came before in the old one.
    const auto so = stream_options_for();
    auto fresh = co_await e_.stream(so);
    if (!fresh) co_return false;
    std::int64_t frames = 0;
    std::optional<std::int64_t> first;
    while (auto ev = live.try_next()) {
      if (ev->as<events::progress>() != nullptr) {
        ++frames;
      } else if (ev->id > 0 && !first && (!last_ || ev->id > *last_)) {
        first = ev->id;
      }
    }
    body_.counters().dropped_frames += frames;
    live = std::move(*fresh);
    if (!last_ && first) last_ = *first - 1;
    if (last_) co_return co_await catch_up();
    co_return true;
  }

  asio::awaitable<void> run(event_stream live) {
    last_ = r_.after;
    if (last_ && !co_await catch_up()) co_return;
    for (;;) {
      if (live.buffered() > body_.max_queued() && !co_await restart(live)) co_return;
      auto next = live.next();
      auto got = co_await body_.next_or_heartbeat(std::move(next));
      if (got.index() == 1) {
        if (!std::get<1>(got)) co_return;
        continue;
      }
      auto& ev = std::get<0>(got);
      if (!ev) break;  // the engine is stopping
      add(*ev);
      while (body_.pending().size() < k_write_batch) {
        auto more = live.try_next();
        if (!more) break;
        add(*more);
      }
      if (!co_await body_.flush()) co_return;
    }
    co_await body_.finish();
  }

 private:
  engine& e_;
  const sse_request& r_;
  sse_body& body_;
  /// The last log position sent (or read past while catching up).
  std::optional<std::int64_t> last_;
  std::int64_t gap_reported_ = 0;
};

asio::awaitable<std::optional<response>> serve_events(engine& e, const sse_request& r, sse_link link) {
  if (r.what == sse_request::source::run_events) {
    auto run = co_await e.get(r.run);
    if (!run) co_return from_error(run.error());
  }
  if (r.head) co_return head_answer(r);
  sse_body body(link, r.version);
  event_feed feed(e, r, body);
  // Opened before the log is read: what commits meanwhile is in one or the other (or both: deduplicated).
  const auto so = feed.stream_options_for();
  auto live = co_await e.stream(so);
  if (!live) co_return from_error(live.error());
  if (!co_await body.start()) co_return std::nullopt;
  co_await feed.run(std::move(*live));
  co_return std::nullopt;
}

// ---- output streams ----

void add_chunk(std::string& out, const output_chunk& c) {
  if (c.rewound) {
    // Chunks from c.index on were replaced: a client reconnecting from here resumes at c.index.
    const auto id = c.index > 0 ? std::to_string(c.index - 1) : std::string();
    append_message(out, id, "rewound", json::serialize(json::object{{"from", c.index}}));
    return;
  }
  append_message(out, std::to_string(c.index), "", json::serialize(c.data));
}

asio::awaitable<std::optional<response>> serve_output(engine& e, const sse_request& r, sse_link link) {
  auto run = co_await e.get(r.run);
  if (!run) co_return from_error(run.error());
  auto reader = co_await e.read_stream(r.run, r.stream, r.from);
  if (!reader) co_return from_error(reader.error());
  if (r.head) co_return head_answer(r);
  sse_body body(link, r.version);
  if (!co_await body.start()) co_return std::nullopt;
  for (;;) {
    auto next = reader->next();
    auto got = co_await body.next_or_heartbeat(std::move(next));
    if (got.index() == 1) {
      if (!std::get<1>(got)) co_return std::nullopt;
      continue;
    }
    auto& chunk = std::get<0>(got);
    if (!chunk) break;  // closed, or the run ended (or the engine stops)
    add_chunk(body.pending(), *chunk);
    if (!co_await body.flush()) co_return std::nullopt;
  }
  // Clients close on `end` (an EventSource would otherwise reconnect).
  append_message(body.pending(), std::nullopt, "end", "{}");
  co_await body.finish();
  co_return std::nullopt;
}

/// The query's parameters, each known and at most once.
std::map<std::string, std::string> query_of(const target& t, std::initializer_list<std::string_view> known) {
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : t.query) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      std::string names;
      for (auto k : known)
        names += (names.empty() ? "" : ", ") + std::string(k);
      throw bad_request{"unknown query parameter '" + key + "' (" + (names.empty() ? "none" : names) + ")"};
    }
    if (!out.emplace(key, value).second) throw bad_request{"query parameter '" + key + "' given twice"};
  }
  return out;
}

std::int64_t position_of(std::string_view text, std::string_view what) {
  auto v = non_negative(text);
  // (The largest is refused too: one past it is where an output stream would go on.)
  if (!v || *v == std::numeric_limits<std::int64_t>::max())
    throw bad_request{std::string(what) + " must be a non-negative integer"};
  return *v;
}

bool flag_of(std::string_view text, std::string_view what) {
  if (text == "true" || text == "1") return true;
  if (text == "false" || text == "0") return false;
  throw bad_request{std::string(what) + " must be true or false"};
}

std::optional<sse_request> decode(const request& req) {
  auto t = parse_target(req.target());
  const auto& path = t.path;
  const auto n = path.size();
  const bool all = n == 2 && path[0] == "v1" && path[1] == "events";
  const bool run_events = n == 4 && path[0] == "v1" && path[1] == "runs" && path[3] == "events";
  const bool output = n == 5 && path[0] == "v1" && path[1] == "runs" && path[3] == "streams";
  if (!all && !run_events && !output) return std::nullopt;
  allow_only(req.method(), beast_http::verb::get);
  sse_request r;
  r.head = req.method() == beast_http::verb::head;
  r.version = req.version() == 10 ? 10 : 11;
  std::optional<std::string_view> last_id;
  if (auto it = req.find("Last-Event-ID"); it != req.end() && !it->value().empty()) last_id = it->value();
  if (output) {
    r.what = sse_request::source::output;
    r.run = path[2];
    r.stream = path[4];
    auto q = query_of(t, {"from"});
    if (q.contains("from")) r.from = position_of(q["from"], "from");
    // The id is the last chunk the client has: it goes on with the next one.
    if (last_id) r.from = position_of(*last_id, "Last-Event-ID") + 1;
    return r;
  }
  std::map<std::string, std::string> q;
  if (all) {
    r.what = sse_request::source::all_events;
    q = query_of(t, {"workflow", "after", "frames"});
    if (q.contains("workflow")) {
      // Checked here: a stream that failed after its head would have its client reconnect, and fail again.
      if (q["workflow"].empty() || q["workflow"].size() > 255 || !storage::is_valid_utf8(q["workflow"]))
        throw bad_request{"workflow must be a workflow name (1 to 255 bytes of UTF-8)"};
      r.workflow = q["workflow"];
    }
  } else {
    r.what = sse_request::source::run_events;
    r.run = path[2];
    q = query_of(t, {"after", "frames"});
    r.after = 0;  // a run's stream starts with its history
  }
  if (q.contains("after")) r.after = position_of(q["after"], "after");
  if (q.contains("frames")) r.frames = flag_of(q["frames"], "frames");
  if (last_id) r.after = position_of(*last_id, "Last-Event-ID");
  return r;
}

}  // namespace

std::optional<std::variant<sse_request, response>> sse_route(const request& req) {
  try {
    auto r = decode(req);
    if (!r) return std::nullopt;
    return std::move(*r);
  } catch (const bad_request& b) {
    return error_response(status::bad_request, b.code, b.message);
  } catch (const wrong_method& w) {
    return method_not_allowed(w.allowed);
  }
}

asio::awaitable<std::optional<response>> serve_sse(engine& e, const sse_request& r, sse_link link) {
  if (r.what == sse_request::source::output) co_return co_await serve_output(e, r, link);
  co_return co_await serve_events(e, r, link);
}

}  // namespace keel::http::detail
