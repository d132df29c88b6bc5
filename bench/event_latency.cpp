#include "event_latency.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "json_line.hpp"
#include "keel/common/log.hpp"
#include "keel/engine.hpp"

namespace keel::bench {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;
using std::chrono::system_clock;

constexpr std::string_view k_component = "bench";
constexpr std::string_view k_workflow = "emitter";
/// The pause between two frames: latency, not throughput (frames this close are not coalesced).
constexpr auto k_frame_gap = 2ms;
constexpr auto k_consumer_limit = 120s;

std::int64_t now_micros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(system_clock::now().time_since_epoch())
      .count();
}

/// Pulls a stream on a thread of its own: each frame's age (ms since its "t") and each logged
/// step_completed event's age (ms since it was appended), until `frames` frames or the end of the stream.
class latency_consumer {
 public:
  latency_consumer(event_stream s, std::size_t frames)
      : stream_(std::move(s)), want_(frames), thread_([this] { consume(); }) {}
  ~latency_consumer() { join(); }
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  std::vector<double> frames, logged;

 private:
  void consume() {
    using namespace asio::experimental::awaitable_operators;
    asio::io_context io;
    asio::co_spawn(
        io,
        [this, &io]() -> asio::awaitable<void> {
          const auto deadline = std::chrono::steady_clock::now() + k_consumer_limit;
          while (frames.size() < want_ && std::chrono::steady_clock::now() < deadline) {
            asio::steady_timer limit(io, deadline);
            auto next = stream_.next();
            auto got = co_await (std::move(next) || limit.async_wait(asio::use_awaitable));
            if (got.index() != 0) break;
            auto& ev = std::get<0>(got);
            if (!ev) break;  // ended
            const auto now = now_micros();
            if (const auto* p = ev->as<events::progress>()) {
              frames.push_back(static_cast<double>(now - p->frame.at("t").to_number<std::int64_t>()) /
                               1000.0);
            } else if (ev->as<events::step_completed>()) {
              const auto at =
                  std::chrono::duration_cast<std::chrono::microseconds>(ev->at.time_since_epoch());
              logged.push_back(static_cast<double>(now - at.count()) / 1000.0);
            }
          }
        },
        asio::detached);
    io.run();
  }
  event_stream stream_;
  std::size_t want_;
  std::thread thread_;
};

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

/// Emits input.n frames, each after a step of its own (whose checkpoint is a logged event), k_frame_gap
/// apart; each frame carries the time it was emitted.
asio::awaitable<json::value> emitter(context& ctx, json::value input) {
  const auto n = input.at("n").to_number<std::int64_t>();
  asio::steady_timer gap(co_await asio::this_coro::executor);
  for (std::int64_t i = 0; i < n; ++i) {
    auto tick = [i] { return i; };
    co_await ctx.step("tick", tick);
    json::object frame;
    frame["i"] = i;
    frame["t"] = now_micros();
    ctx.emit(frame);
    gap.expires_after(k_frame_gap);
    co_await gap.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  co_return json::value(n);
}

}  // namespace

std::string event_latency_blocking(const latency_setup& s) {
  // The other process: started first, it says when its stream is open.
  const auto self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string command = shell_quote(self) + " " + std::string(k_event_consumer_flag) + " " +
                              shell_quote(s.conninfo) + " " + std::to_string(s.runs);
  FILE* child = ::popen(command.c_str(), "r");
  if (child == nullptr) throw std::runtime_error("cannot start the consumer process");
  struct closer {
    FILE* f;
    ~closer() {
      if (f != nullptr) ::pclose(f);
    }
  } close_child{child};
  char line[4096];
  if (std::fgets(line, sizeof line, child) == nullptr || std::string_view(line).rfind("ready", 0) != 0)
    throw std::runtime_error("the consumer process did not start");

  engine_options eo;
  eo.store.conninfo = s.conninfo;
  eo.concurrency = s.concurrency;
  eo.threads = s.threads;
  eo.store.writers = s.writers;
  eo.store.max_batch = s.max_batch;
  eo.store.pool_size = s.pool;
  engine e(eo);
  e.register_workflow<json::value, json::value>(std::string(k_workflow), 1, emitter);
  if (auto r = e.start_blocking(); !r)
    throw std::runtime_error("engine start failed: " + r.error().message());
  auto stream = e.stream_blocking();
  if (!stream) throw std::runtime_error("cannot open a stream: " + stream.error().message());
  latency_consumer local(std::move(*stream), s.runs);
  json::object input;
  input["n"] = s.runs;
  auto id = e.enqueue_blocking(k_workflow, input);
  if (!id) throw std::runtime_error("enqueue failed: " + id.error().message());
  log::info(k_component, "emitting " + std::to_string(s.runs) + " frames");
  auto done = e.wait_blocking(*id, std::chrono::duration_cast<std::chrono::milliseconds>(s.timeout));
  if (!done || done->status != run_status::completed) throw std::runtime_error("the emitting run failed");
  local.join();
  std::string remote;
  if (std::fgets(line, sizeof line, child) != nullptr) remote = line;
  s.stop_engine_blocking(e);
  if (remote.empty()) throw std::runtime_error("the consumer process reported nothing");
  auto r = json::parse(remote).as_object();
  if (local.frames.size() < s.runs)
    throw std::runtime_error("the local stream got " + std::to_string(local.frames.size()) + " of " +
                             std::to_string(s.runs) + " frames");
  return "{\"workload\":" + json_string(s.workload) + ",\"frames\":" + std::to_string(s.runs) +
         ",\"p50_ms\":" + fixed(percentile(local.frames, 0.5), 2) +
         ",\"p99_ms\":" + fixed(percentile(local.frames, 0.99), 2) +
         ",\"remote_p50_ms\":" + fixed(r.at("p50_ms").to_number<double>(), 2) +
         ",\"remote_p99_ms\":" + fixed(r.at("p99_ms").to_number<double>(), 2) +
         ",\"remote_frames\":" + std::to_string(r.at("frames").to_number<std::int64_t>()) +
         ",\"remote_log_p50_ms\":" + fixed(r.at("log_p50_ms").to_number<double>(), 2) +
         ",\"remote_log_p99_ms\":" + fixed(r.at("log_p99_ms").to_number<double>(), 2) +
         ",\"log_p50_ms\":" + fixed(percentile(local.logged, 0.5), 2) +
         ",\"log_p99_ms\":" + fixed(percentile(local.logged, 0.99), 2) + "}";
}

int run_event_consumer(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: keel-bench " << k_event_consumer_flag << " CONNINFO FRAMES\n";
    return 2;
  }
  engine_options eo;
  eo.store.conninfo = argv[2];
  eo.threads = 1;
  engine e(eo);
  if (auto r = e.start_blocking(); !r) {
    log::error(k_component, "consumer: engine start failed: " + r.error().message());
    return 1;
  }
  auto stream = e.stream_blocking();
  if (!stream) {
    log::error(k_component, "consumer: cannot open a stream: " + stream.error().message());
    return 1;
  }
  latency_consumer remote(std::move(*stream), std::stoul(argv[3]));
  std::cout << "ready" << std::endl;
  remote.join();
  std::cout << "{\"frames\":" << remote.frames.size()
            << ",\"p50_ms\":" << fixed(percentile(remote.frames, 0.5), 2)
            << ",\"p99_ms\":" << fixed(percentile(remote.frames, 0.99), 2)
            << ",\"log_p50_ms\":" << fixed(percentile(remote.logged, 0.5), 2)
            << ",\"log_p99_ms\":" << fixed(percentile(remote.logged, 0.99), 2) << "}" << std::endl;
  e.stop_blocking();
  return 0;
}

namespace {

/// Waits for "go", then writes input.n chunks {"t": µs, "i": i} to output stream "out" in one step and
/// closes it; returns how long that took, in seconds, from the first write to the close being durable.
asio::awaitable<json::value> writer(context& ctx, json::value input) {
  const auto n = input.at("n").to_number<std::int64_t>();
  co_await ctx.wait_for_event("go");
  auto out = ctx.stream("out");
  auto write_all = [&]() -> asio::awaitable<double> {
    const auto t0 = std::chrono::steady_clock::now();
    for (std::int64_t i = 0; i < n; ++i) {
      json::object chunk;
      chunk["i"] = i;
      chunk["t"] = now_micros();
      co_await out.write(chunk);
    }
    co_await out.close();
    co_return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  auto seconds = co_await ctx.step("write", write_all);
  co_return json::value(seconds);
}

}  // namespace

std::string stream_write_blocking(const latency_setup& s) {
  const std::size_t chunks = s.runs * 100;
  engine_options eo;
  eo.store.conninfo = s.conninfo;
  eo.concurrency = s.concurrency;
  eo.threads = s.threads;
  eo.store.writers = s.writers;
  eo.store.max_batch = s.max_batch;
  eo.store.pool_size = s.pool;
  engine e(eo);
  e.register_workflow<json::value, json::value>("writer", 1, writer);
  if (auto r = e.start_blocking(); !r)
    throw std::runtime_error("engine start failed: " + r.error().message());
  json::object input;
  input["n"] = chunks;
  auto id = e.enqueue_blocking("writer", input);
  if (!id) throw std::runtime_error("enqueue failed: " + id.error().message());
  const auto self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string command = shell_quote(self) + " " + std::string(k_stream_reader_flag) + " " +
                              shell_quote(s.conninfo) + " " + *id + " " + std::to_string(chunks);
  FILE* child = ::popen(command.c_str(), "r");
  if (child == nullptr) throw std::runtime_error("cannot start the reader process");
  struct closer {
    FILE* f;
    ~closer() {
      if (f != nullptr) ::pclose(f);
    }
  } close_child{child};
  char line[4096];
  if (std::fgets(line, sizeof line, child) == nullptr || std::string_view(line).rfind("ready", 0) != 0)
    throw std::runtime_error("the reader process did not start");
  if (auto r = e.send_event_blocking(*id, "go", json::value(true)); !r)
    throw std::runtime_error("send_event failed: " + r.error().message());
  log::info(k_component, "writing " + std::to_string(chunks) + " chunks");
  auto done = e.wait_blocking(*id, std::chrono::duration_cast<std::chrono::milliseconds>(s.timeout));
  if (!done || done->status != run_status::completed) throw std::runtime_error("the writing run failed");
  const double seconds = done->output.to_number<double>();
  std::string remote;
  if (std::fgets(line, sizeof line, child) != nullptr) remote = line;
  s.stop_engine_blocking(e);
  if (remote.empty()) throw std::runtime_error("the reader process reported nothing");
  auto r = json::parse(remote).as_object();
  if (r.at("chunks").to_number<std::int64_t>() != static_cast<std::int64_t>(chunks))
    throw std::runtime_error("the reader got " + json::serialize(r.at("chunks")) + " of " +
                             std::to_string(chunks) + " chunks");
  return "{\"workload\":" + json_string(s.workload) + ",\"chunks\":" + std::to_string(chunks) +
         ",\"chunks_per_s\":" + fixed(static_cast<double>(chunks) / seconds, 1) +
         ",\"p50_ms\":" + fixed(r.at("p50_ms").to_number<double>(), 2) +
         ",\"p99_ms\":" + fixed(r.at("p99_ms").to_number<double>(), 2) + "}";
}

int run_stream_reader(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: keel-bench " << k_stream_reader_flag << " CONNINFO RUN_ID CHUNKS\n";
    return 2;
  }
  engine_options eo;
  eo.store.conninfo = argv[2];
  eo.threads = 1;
  engine e(eo);
  if (auto r = e.start_blocking(); !r) {
    log::error(k_component, "reader: engine start failed: " + r.error().message());
    return 1;
  }
  auto reader = e.read_stream_blocking(argv[3], "out");
  if (!reader) {
    log::error(k_component, "reader: cannot open the stream: " + reader.error().message());
    return 1;
  }
  std::cout << "ready" << std::endl;
  std::vector<double> latencies;
  std::int64_t expected = 0;
  bool in_order = true;
  asio::io_context io;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        while (auto c = co_await reader->next()) {
          latencies.push_back(static_cast<double>(now_micros() - c->data.at("t").to_number<std::int64_t>()) /
                              1000.0);
          in_order = in_order && c->index == expected;
          ++expected;
        }
      },
      asio::detached);
  io.run_for(k_consumer_limit);
  std::cout << "{\"chunks\":" << (in_order ? latencies.size() : 0)
            << ",\"p50_ms\":" << fixed(percentile(latencies, 0.5), 2)
            << ",\"p99_ms\":" << fixed(percentile(latencies, 0.99), 2) << "}" << std::endl;
  e.stop_blocking();
  return 0;
}

}  // namespace keel::bench
