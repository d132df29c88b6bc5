// keel-bench's sse-fanout workload: one run's events fanned out over Server-Sent Events to many clients
// (asynchronous Beast clients on a thread of their own, in this process, over loopback), and how late each
// client receives them.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstdint>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "http_load.hpp"
#include "http_load_support.hpp"
#include "json_line.hpp"

namespace keel::bench::http_load {
namespace {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;

constexpr std::string_view k_fanout_workflow = "fanout";
/// The pause between two iterations (a step, then a frame) of the run: a modest rate.
constexpr auto k_fanout_gap = 50ms;
/// How long after the run completed the clients may take to receive its last event.
constexpr auto k_drain_limit = 30s;
/// Descriptors the process needs beside the SSE clients' and the server's sockets: PostgreSQL connections,
/// the embedded server's pipes, the engine's own.
constexpr rlim_t k_spare_descriptors = 256;

/// Input {"n", "gap_ms"}: waits for the event "go", then n times: a step returning {"i", "t"}, a frame
/// {"i", "t"} (t: steady_clock µs when it was made; the clients are in this process), a pause of gap_ms.
asio::awaitable<json::value> fanout(context& ctx, json::value input) {
  const auto n = input.at("n").to_number<std::int64_t>();
  const std::chrono::milliseconds gap{input.at("gap_ms").to_number<std::int64_t>()};
  const std::string go = "go";
  co_await ctx.wait_for_event(go);
  asio::steady_timer pause(co_await asio::this_coro::executor);
  for (std::int64_t i = 0; i < n; ++i) {
    auto tick = [i] { return json::value{{"i", i}, {"t", steady_micros()}}; };
    co_await ctx.step("tick", tick);
    json::object frame;
    frame["i"] = i;
    frame["t"] = steady_micros();
    ctx.emit(frame);
    pause.expires_after(gap);
    co_await pause.async_wait(k_nothrow);
  }
  co_return json::value(n);
}

/// What one SSE client received.
struct sse_client {
  std::size_t frames = 0, lifecycle = 0, gaps = 0, out_of_order = 0;
  std::int64_t missed = 0;  // frames the server's stream said it had dropped (the frames' "missed")
  std::int64_t last_id = 0;
  bool caught_up = false;  // got the run's history up to its wait for "go"
  bool done = false;       // got run_completed
  beast::tcp_stream* stream = nullptr;
};

/// Everything the clients share; on the client thread, except the atomics (read by the main thread while
/// they run) and what the main thread reads after the thread ended.
struct fanout_load {
  tcp::endpoint endpoint;
  std::string target;
  std::vector<sse_client> clients;
  std::vector<double> frame_ms, step_ms, connect_ms;
  std::size_t failures = 0;
  std::string first_failure;
  bool closing = false;  // the main thread closes every stream: errors are expected
  steady::time_point started, last_caught_up, last_done;
  std::atomic<std::size_t> caught_up{0}, done{0}, ended{0}, failed{0};

  void fail(std::string why) {
    if (closing) return;
    if (failures++ == 0) first_failure = std::move(why);
    failed.fetch_add(1, std::memory_order_release);
  }
};

/// Parses an event stream's body, a piece at a time, and takes each event's figures.
class sse_reader {
 public:
  sse_reader(fanout_load& l, sse_client& me) : l_(l), me_(me) {}

  /// `bytes` arrived at `now`.
  void feed(std::string_view bytes, steady::time_point now) {
    while (!bytes.empty()) {
      const auto nl = bytes.find('\n');
      if (nl == std::string_view::npos) {
        line_.append(bytes);
        return;
      }
      line_.append(bytes.substr(0, nl));
      bytes.remove_prefix(nl + 1);
      on_line(now);
      line_.clear();
    }
  }

 private:
  void on_line(steady::time_point now) {
    std::string_view line = line_;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) {
      if (has_data_) dispatch(now);
      event_.clear();
      data_.clear();
      id_.clear();
      has_data_ = false;
      return;
    }
    if (line.front() == ':') return;  // a comment (keepalive)
    const auto colon = line.find(':');
    const auto name = line.substr(0, colon);
    auto value = colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (name == "event") {
      event_ = value;
    } else if (name == "data") {
      if (has_data_) data_ += '\n';
      data_ += value;
      has_data_ = true;
    } else if (name == "id") {
      id_ = value;
    }
  }

  void dispatch(steady::time_point now) {
    const auto now_us = steady_micros(now);
    try {
      if (event_ == "frame") {
        // The stream event, as lifecycle events come: its "data" holds the frame and what was missed.
        const auto v = json::parse(data_);
        const auto& d = v.at("data");
        const auto t = d.at("frame").at("t").to_number<std::int64_t>();
        l_.frame_ms.push_back(static_cast<double>(now_us - t) / 1000.0);
        me_.missed += d.at("missed").to_number<std::int64_t>();
        ++me_.frames;
      } else if (event_ == "gap") {
        ++me_.gaps;
      } else if (event_.empty()) {
        ++me_.lifecycle;
        const std::int64_t id = std::stoll(id_);
        if (id <= me_.last_id) ++me_.out_of_order;
        me_.last_id = std::max(me_.last_id, id);
        const auto v = json::parse(data_);
        const auto& kind = v.at("kind").as_string();
        if (kind == "step_completed") {
          const auto* out = v.at("data").as_object().if_contains("output");
          const auto* o = out != nullptr ? out->if_object() : nullptr;
          if (o != nullptr && o->contains("t"))
            l_.step_ms.push_back(static_cast<double>(now_us - o->at("t").to_number<std::int64_t>()) / 1000.0);
        } else if (kind == "run_waiting" && !me_.caught_up) {
          me_.caught_up = true;
          l_.connect_ms.push_back(ms_between(l_.started, now));
          l_.last_caught_up = std::max(l_.last_caught_up, now);
          l_.caught_up.fetch_add(1, std::memory_order_release);
        } else if (kind == "run_completed") {
          me_.done = true;
          l_.last_done = std::max(l_.last_done, now);
          l_.done.fetch_add(1, std::memory_order_release);
        }
      }
    } catch (const std::exception& e) {
      l_.fail("a malformed event (" + std::string(e.what()) + "): " + data_);
    }
  }

  fanout_load& l_;
  sse_client& me_;
  std::string line_, event_, data_, id_;
  bool has_data_ = false;
};

/// One SSE client: GET the run's events, then read until run_completed (or the stream is closed).
asio::awaitable<void> sse_connection(fanout_load& l, std::size_t k) {
  auto& me = l.clients[k];
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  me.stream = &stream;
  struct forget {  // the main thread's close must not reach a stream that is gone
    sse_client& me;
    fanout_load& l;
    ~forget() {
      me.stream = nullptr;
      l.ended.fetch_add(1, std::memory_order_release);
    }
  } forget_on_exit{me, l};
  stream.expires_after(k_request_limit);
  auto [cec] = co_await stream.async_connect(l.endpoint, k_nothrow);
  if (cec) {
    l.fail("connect: " + cec.message());
    co_return;
  }
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, l.target, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  req.set(bhttp::field::accept, "text/event-stream");
  auto [wec, written] = co_await bhttp::async_write(stream, req, k_nothrow);
  (void)written;
  if (wec) {
    l.fail("write: " + wec.message());
    co_return;
  }
  sse_reader reader(l, me);
  bhttp::response_parser<bhttp::empty_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  // One clock reading per piece of body the parser hands over: the time the bytes were read.
  auto on_chunk = [&reader](std::uint64_t, beast::string_view body, beast::error_code&) {
    reader.feed(std::string_view(body.data(), body.size()), steady::now());
    return body.size();
  };
  parser.on_chunk_body(on_chunk);
  beast::flat_buffer buffer;
  auto [hec, header_bytes] = co_await bhttp::async_read_header(stream, buffer, parser, k_nothrow);
  (void)header_bytes;
  if (hec || parser.get().result() != bhttp::status::ok) {
    l.fail(hec ? "read: " + hec.message() : "GET answered " + std::to_string(parser.get().result_int()));
    co_return;
  }
  stream.expires_never();
  while (!me.done && !parser.is_done()) {
    auto [ec, n] = co_await bhttp::async_read_some(stream, buffer, parser, k_nothrow);
    (void)n;
    if (ec) {
      l.fail("read: " + ec.message());
      break;
    }
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

/// RLIMIT_NOFILE's soft limit raised to the hard one; throws when that is too low for `clients` clients
/// (a client's socket and the server's for each, in this one process).
void raise_descriptor_limit(std::size_t clients) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) throw std::runtime_error("getrlimit(RLIMIT_NOFILE) failed");
  if (rl.rlim_cur != rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0)
      throw std::runtime_error("cannot raise RLIMIT_NOFILE to its hard limit " + std::to_string(rl.rlim_max));
  }
  const rlim_t need = 2 * static_cast<rlim_t>(clients) + k_spare_descriptors;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
    throw std::runtime_error("sse-fanout: " + std::to_string(clients) + " clients need about " +
                             std::to_string(need) +
                             " file descriptors (a client and a server socket each, in this process), but "
                             "RLIMIT_NOFILE's hard limit is " +
                             std::to_string(rl.rlim_max) + "; raise it (ulimit -Hn) or pass fewer --clients");
  }
}

}  // namespace

std::string sse_fanout_blocking(const latency_setup& s) {
  raise_descriptor_limit(s.clients);
  run_counter counter;
  engine e(options_for(s, counter));
  engine_guard guard(e, s);
  e.register_workflow<json::value, json::value>(std::string(k_fanout_workflow), 1, fanout);
  if (auto r = e.start_blocking(); !r)
    throw std::runtime_error("engine start failed: " + r.error().message());
  auto srv = start_server_blocking(e, s.clients + 64);

  // The run first, parked on its event: the clients connect to its events while it waits.
  const auto frames = s.runs;
  const json::value input{{"n", frames}, {"gap_ms", k_fanout_gap.count()}};
  auto id = e.enqueue_blocking(k_fanout_workflow, input);
  if (!id) throw std::runtime_error("enqueue failed: " + id.error().message());
  wait_until(
      s, steady::now() + s.timeout, "the run's wait", [&] { return counter.waiting() >= 1; },
      [] { return std::string("not parked yet"); });

  fanout_load load;
  load.endpoint = tcp::endpoint(asio::ip::make_address_v4("127.0.0.1"), srv->port());
  load.target = "/v1/runs/" + *id + "/events";
  load.clients.resize(s.clients);
  load.frame_ms.reserve(s.clients * frames);
  load.step_ms.reserve(s.clients * frames);
  std::string failure;  // outlives the client thread, which writes it
  client_thread clients;
  for (std::size_t k = 0; k < s.clients; ++k) {
    asio::co_spawn(clients.io(), sse_connection(load, k), [&failure](std::exception_ptr ep) {
      if (ep && failure.empty()) failure = what_of(ep);
    });
  }
  log::info(k_component, "connecting " + std::to_string(s.clients) + " SSE clients to " + load.target);
  // Ends the clients that still read (their streams closed on the client thread), and their thread.
  const auto close_all_and_join = [&] {
    asio::post(clients.io(), [&load] {
      load.closing = true;
      for (auto& c : load.clients) {
        beast::error_code ignored;
        if (c.stream != nullptr) c.stream->socket().close(ignored);
      }
    });
    clients.join();
  };
  load.started = steady::now();
  clients.start();
  wait_until(
      s, steady::now() + s.timeout, "connecting the SSE clients",
      [&] { return load.caught_up.load(std::memory_order_acquire) >= s.clients || load.failed.load() > 0; },
      [&] { return std::to_string(load.caught_up.load()) + "/" + std::to_string(s.clients) + " caught up"; });
  if (load.failed.load(std::memory_order_acquire) > 0) {
    close_all_and_join();
    throw std::runtime_error(std::to_string(load.failures) +
                             " SSE client(s) failed to connect; first: " + load.first_failure);
  }
  const double connect_seconds = seconds_between(load.started, load.last_caught_up);
  const auto streams_open = srv->stats().event_streams;
  log::info(k_component, std::to_string(s.clients) + " clients connected and caught up in " +
                             fixed(connect_seconds, 3) + " s (" + std::to_string(streams_open) +
                             " streams open); sending go");

  const auto go_at = steady::now();
  if (auto r = e.send_event_blocking(*id, "go", json::value(true)); !r)
    throw std::runtime_error("send_event failed: " + r.error().message());
  wait_until(
      s, go_at + s.timeout, "the run", [&] { return counter.completed() + counter.unsuccessful() >= 1; },
      [&] { return std::to_string(load.done.load()) + " clients got its completion"; });
  const auto run_done = counter.last();
  const auto drain_deadline = steady::now() + k_drain_limit;
  // Each client ends once it got the run's completion (or its stream failed).
  while (load.ended.load(std::memory_order_acquire) < s.clients && steady::now() < drain_deadline) {
    s.check_interrupted();
    std::this_thread::sleep_for(k_poll);
  }
  const auto dropped = srv->stats().dropped_frames;
  // Whoever did not get the run's completion is closed now (a count short of the expected shows it).
  close_all_and_join();
  if (!failure.empty()) throw std::runtime_error("an SSE client failed: " + failure);

  // Every lifecycle event the run logged, up to its completion: what each client must have got.
  read_log_options ro;
  ro.run = *id;
  ro.limit = 10'000;
  auto page = e.read_log_blocking(0, ro);
  if (!page) throw std::runtime_error("read_log failed: " + page.error().message());
  std::size_t expected = 0;
  for (const auto& ev : page->events) {
    ++expected;
    if (ev.kind == "run_completed") break;
  }
  srv->stop_blocking();
  guard.stop_blocking();
  if (counter.unsuccessful() > 0) throw std::runtime_error("the run failed");
  // The wait for "go" and the n ticks.
  const auto server = verify_blocking(s.conninfo, 1, frames + 1);

  std::size_t complete = 0, lifecycle_min = std::numeric_limits<std::size_t>::max(), lifecycle_max = 0;
  std::size_t frames_min = std::numeric_limits<std::size_t>::max(), frames_max = 0, out_of_order = 0,
              gaps = 0;
  std::int64_t missed = 0;
  for (const auto& c : load.clients) {
    if (c.done && c.lifecycle == expected && c.out_of_order == 0) ++complete;
    lifecycle_min = std::min(lifecycle_min, c.lifecycle);
    lifecycle_max = std::max(lifecycle_max, c.lifecycle);
    frames_min = std::min(frames_min, c.frames);
    frames_max = std::max(frames_max, c.frames);
    out_of_order += c.out_of_order;
    gaps += c.gaps;
    missed += c.missed;
  }
  const auto max_of = [](const std::vector<double>& v) {
    return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end());
  };
  const std::string line =
      "{\"workload\":" + json_string(s.workload) + ",\"clients\":" + std::to_string(s.clients) +
      ",\"frames\":" + std::to_string(frames) + ",\"gap_ms\":" + std::to_string(k_fanout_gap.count()) +
      ",\"frame_p50_ms\":" + fixed(percentile(load.frame_ms, 0.5), 2) +
      ",\"frame_p99_ms\":" + fixed(percentile(load.frame_ms, 0.99), 2) +
      ",\"frame_max_ms\":" + fixed(max_of(load.frame_ms), 2) +
      ",\"step_p50_ms\":" + fixed(percentile(load.step_ms, 0.5), 2) +
      ",\"step_p99_ms\":" + fixed(percentile(load.step_ms, 0.99), 2) +
      ",\"step_max_ms\":" + fixed(max_of(load.step_ms), 2) +
      ",\"frames_received\":" + std::to_string(load.frame_ms.size()) +
      ",\"frames_min\":" + std::to_string(frames_min) + ",\"frames_max\":" + std::to_string(frames_max) +
      ",\"frames_missed\":" + std::to_string(missed) + ",\"dropped_frames\":" + std::to_string(dropped) +
      ",\"lifecycle_expected\":" + std::to_string(expected) +
      ",\"lifecycle_min\":" + std::to_string(lifecycle_min) +
      ",\"lifecycle_max\":" + std::to_string(lifecycle_max) +
      ",\"clients_complete\":" + std::to_string(complete) +
      ",\"out_of_order\":" + std::to_string(out_of_order) + ",\"gaps\":" + std::to_string(gaps) +
      ",\"connect_seconds\":" + fixed(connect_seconds, 3) +
      ",\"connect_p50_ms\":" + fixed(percentile(load.connect_ms, 0.5), 2) +
      ",\"connect_p99_ms\":" + fixed(percentile(load.connect_ms, 0.99), 2) +
      ",\"event_streams\":" + std::to_string(streams_open) +
      ",\"run_seconds\":" + fixed(seconds_between(go_at, run_done), 3) +
      ",\"threads\":" + std::to_string(s.threads) + ",\"client\":" +
      json_string("1 thread in this process, sharing " + std::to_string(std::thread::hardware_concurrency()) +
                  " cores with the server's and PostgreSQL's") +
      server_fields(server) + "}";
  if (complete != s.clients || load.failures > 0) {
    log::error(k_component, "figures: " + line);
    for (std::size_t k = 0; k < load.clients.size(); ++k) {
      const auto& c = load.clients[k];
      if (c.done && c.lifecycle == expected && c.out_of_order == 0) continue;
      log::error(k_component, "client " + std::to_string(k) + ": " + std::to_string(c.lifecycle) +
                                  " lifecycle events (last id " + std::to_string(c.last_id) + "), " +
                                  std::to_string(c.out_of_order) + " out of order, " +
                                  (c.done ? "got" : "did not get") + " run_completed");
      break;
    }
    throw std::runtime_error(std::to_string(s.clients - complete) +
                             " client(s) did not get every lifecycle event (" + std::to_string(expected) +
                             ")" +
                             (load.failures > 0 ? "; first failure: " + load.first_failure : std::string()));
  }
  return line;
}

}  // namespace keel::bench::http_load
