// keel-bench's HTTP workloads: hook-resumes (POST /v1/hooks/{token} from keep-alive connections, beside
// engine::resume_hook called directly) and sse-fanout (one run's events to many SSE clients). The clients
// are asynchronous Beast clients on one io_context thread of their own, in this process, over loopback: they
// share the machine's cores with the server (the engine's io_context threads) and PostgreSQL.
#include "http_load.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
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

#include "json_line.hpp"
#include "keel/common/log.hpp"
#include "keel/engine.hpp"
#include "keel/http/server.hpp"

namespace keel::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace json = boost::json;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using tcp = asio::ip::tcp;

constexpr std::string_view k_component = "bench";
constexpr std::string_view k_hook_workflow = "approve_http";
constexpr std::string_view k_fanout_workflow = "fanout";
/// Errors as values (eof, resets, timeouts), not exceptions; named, so no completion token is a temporary
/// inside a co_await expression.
constexpr auto k_nothrow = asio::as_tuple(asio::use_awaitable);
/// One request (connect, write, answer) may take this long before the client gives up on it.
constexpr auto k_request_limit = 30s;
/// sse-fanout: the pause between two iterations (a step, then a frame) of the run: a modest rate.
constexpr auto k_fanout_gap = 50ms;
/// sse-fanout: how long after the run completed the clients may take to receive its last event.
constexpr auto k_drain_limit = 30s;
/// Enqueue calls in flight while enqueueing the hook-resumes runs.
constexpr std::size_t k_enqueuers = 256;
constexpr auto k_progress_every = 2s;
constexpr auto k_poll = 5ms;
/// Descriptors the process needs beside the SSE clients' and the server's sockets: PostgreSQL connections,
/// the embedded server's pipes, the engine's own.
constexpr rlim_t k_spare_descriptors = 256;

std::int64_t steady_micros(steady::time_point t = steady::now()) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

double ms_between(steady::time_point from, steady::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

double seconds_between(steady::time_point from, steady::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

/// Counts the engine's run events (engine_options::on_event, any engine thread): runs parked on a wait,
/// runs that completed and those that did not, and when the last outcome came.
class run_counter {
 public:
  void on_event(const run_event& ev) {
    bool ok = false;
    switch (ev.what) {
      case run_event::kind::waiting:
        waiting_.fetch_add(1, std::memory_order_relaxed);
        return;
      case run_event::kind::completed:
        ok = true;
        break;
      case run_event::kind::failed:
      case run_event::kind::abandoned:
      case run_event::kind::dead_lettered:
        break;
      default:
        return;
    }
    {
      std::lock_guard lock(m_);
      last_ = steady::now();
    }
    // After last_: whoever sees the count sees the time too.
    (ok ? completed_ : unsuccessful_).fetch_add(1, std::memory_order_release);
  }
  [[nodiscard]] std::size_t waiting() const noexcept { return waiting_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::size_t completed() const noexcept { return completed_.load(std::memory_order_acquire); }
  [[nodiscard]] std::size_t unsuccessful() const noexcept {
    return unsuccessful_.load(std::memory_order_acquire);
  }
  /// When the latest outcome arrived.
  [[nodiscard]] steady::time_point last() {
    std::lock_guard lock(m_);
    return last_;
  }

 private:
  std::atomic<std::size_t> waiting_{0}, completed_{0}, unsuccessful_{0};
  std::mutex m_;
  steady::time_point last_;
};

/// Waits (polling; on the main thread) until `done()` holds; throws once `deadline` passes or a signal
/// asks the benchmark to stop. `progress()` says where it is, every k_progress_every.
template <class Done, class Progress>
void wait_until(const latency_setup& s, steady::time_point deadline, std::string_view what, Done done,
                Progress progress) {
  auto last_log = steady::now();
  while (!done()) {
    s.check_interrupted();
    const auto now = steady::now();
    if (now > deadline) throw std::runtime_error(std::string(what) + " timed out: " + progress());
    if (now - last_log >= k_progress_every) {
      last_log = now;
      log::info(k_component, std::string(what) + ": " + progress());
    }
    std::this_thread::sleep_for(k_poll);
  }
}

engine_options options_for(const latency_setup& s, run_counter& counter) {
  auto eo = engine_options_for(s);
  eo.on_event = [&counter](const run_event& ev) { counter.on_event(ev); };
  return eo;
}

/// Serves the engine's API on 127.0.0.1, any free port, for up to `connections` clients at once.
std::unique_ptr<http::server> start_server_blocking(engine& e, std::size_t connections) {
  http::server_options so;
  so.address = "127.0.0.1";
  so.port = 0;
  so.max_connections = connections;
  auto srv = std::make_unique<http::server>(e, so);
  if (auto r = srv->start(); !r)
    throw std::runtime_error("the HTTP server did not start: " + r.error().message());
  return srv;
}

/// The load generator's io_context and its one thread. Whatever its coroutines use must outlive it.
class client_thread {
 public:
  client_thread() = default;
  ~client_thread() {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }
  client_thread(const client_thread&) = delete;
  client_thread& operator=(const client_thread&) = delete;

  asio::io_context& io() noexcept { return io_; }
  /// Runs the io_context until its coroutines are done.
  void start() {
    thread_ = std::thread([this] {
      io_.run();
      finished_.store(true, std::memory_order_release);
    });
  }
  [[nodiscard]] bool finished() const noexcept { return finished_.load(std::memory_order_acquire); }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  asio::io_context io_{1};
  std::thread thread_;
  std::atomic<bool> finished_{false};
};

/// The message of the exception a coroutine ended with ("" for none).
std::string what_of(std::exception_ptr ep) {
  if (!ep) return {};
  try {
    std::rethrow_exception(ep);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

// ---------------------------------------------------------------------------------------------------------------
// hook-resumes

/// What the approve_http runs hand out: each run's hook token, by run.
class token_book {
 public:
  void put(const run_id& id, std::string token) {
    std::lock_guard lock(m_);
    tokens_.emplace(id, std::move(token));
  }
  [[nodiscard]] std::string of(const run_id& id) {
    std::lock_guard lock(m_);
    auto it = tokens_.find(id);
    return it == tokens_.end() ? std::string() : it->second;
  }

 private:
  std::mutex m_;
  std::map<run_id, std::string> tokens_;
};

/// Shared by the enqueuing coroutines (on the engine's threads) and the main thread.
struct enqueue_batch {
  std::string_view workflow;
  std::size_t offset = 0;   // the first run's input index
  std::vector<run_id> ids;  // each slot written by the coroutine that took its index
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> live{0};
  std::promise<void> done;
  std::mutex m;
  std::string first_error;  // under m
  void fail(std::string message) {
    std::lock_guard lock(m);
    if (first_error.empty()) first_error = std::move(message);
    next.store(ids.size());  // no point in going on
  }
};

asio::awaitable<void> enqueue_some(engine& e, std::shared_ptr<enqueue_batch> b) {
  const enqueue_options options;  // named: no class temporary inside the co_await (GCC 12)
  for (std::size_t i = b->next.fetch_add(1); i < b->ids.size(); i = b->next.fetch_add(1)) {
    json::object in;
    in["i"] = b->offset + i;
    const json::value input(std::move(in));
    auto r = co_await e.enqueue(b->workflow, input, options);
    if (r) {
      b->ids[i] = *r;
    } else {
      b->fail("enqueue failed: " + r.error().message());
    }
  }
}

/// Enqueues `n` runs of `workflow` (inputs {"i": offset + k}), k_enqueuers calls in flight; their ids.
std::vector<run_id> enqueue_many_blocking(const latency_setup& s, engine& e, std::string_view workflow,
                                          std::size_t n, std::size_t offset) {
  auto b = std::make_shared<enqueue_batch>();
  b->workflow = workflow;
  b->offset = offset;
  b->ids.resize(n);
  const std::size_t k = std::min(k_enqueuers, n);
  b->live = k;
  auto done = b->done.get_future();
  for (std::size_t i = 0; i < k; ++i) {
    asio::co_spawn(e.get_executor(), enqueue_some(e, b), [b](std::exception_ptr ep) {
      if (ep) b->fail(what_of(ep));
      if (b->live.fetch_sub(1) == 1) b->done.set_value();
    });
  }
  const auto deadline = steady::now() + s.timeout;
  while (done.wait_for(50ms) != std::future_status::ready) {
    if (steady::now() > deadline) throw std::runtime_error("enqueueing timed out");
    // A signal: the enqueues in flight end on their own; stop handing out more.
    try {
      s.check_interrupted();
    } catch (...) {
      b->next.store(n);
      done.wait();
      throw;
    }
  }
  std::lock_guard lock(b->m);
  if (!b->first_error.empty()) throw std::runtime_error(b->first_error);
  return std::move(b->ids);
}

/// The HTTP load: `connections` keep-alive connections, each POSTing the next hook path until none is
/// left. On the client thread only.
struct resume_load {
  tcp::endpoint endpoint;
  std::vector<std::string> paths;
  std::string payload = R"({"approved":true,"by":"keel-bench"})";
  std::size_t connections = 0;
  std::size_t next = 0;   // the next path to POST
  std::size_t ready = 0;  // connections that connected (or failed to)
  std::size_t accepted = 0, refused = 0;
  std::string first_refusal;
  std::vector<double> ms;  // each answered request, from its write to its answer
  steady::time_point t0, last;

  void refuse(std::string why) {
    if (refused++ == 0) first_refusal = std::move(why);
  }
};

/// `gate` holds every connection until the last one is open (shared: the frames own it).
asio::awaitable<void> resume_connection(resume_load& l, std::shared_ptr<asio::steady_timer> gate) {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  stream.expires_after(k_request_limit);
  auto [cec] = co_await stream.async_connect(l.endpoint, k_nothrow);
  if (!cec) stream.socket().set_option(tcp::no_delay(true));
  // All connections open before the clock starts: the last one to connect starts it.
  if (++l.ready == l.connections) {
    l.t0 = steady::now();
    gate->cancel();
  } else {
    co_await gate->async_wait(k_nothrow);
  }
  if (cec) {
    l.refuse("connect: " + cec.message());
    co_return;
  }
  beast::flat_buffer buffer;
  for (std::size_t i = l.next++; i < l.paths.size(); i = l.next++) {
    bhttp::request<bhttp::string_body> req{bhttp::verb::post, l.paths[i], 11};
    req.set(bhttp::field::host, "127.0.0.1");
    req.set(bhttp::field::content_type, "application/json");
    req.body() = l.payload;
    req.prepare_payload();
    const auto sent = steady::now();
    stream.expires_after(k_request_limit);
    auto [wec, written] = co_await bhttp::async_write(stream, req, k_nothrow);
    (void)written;
    if (wec) {
      l.refuse("write: " + wec.message());
      co_return;
    }
    bhttp::response<bhttp::string_body> res;
    auto [rec, read] = co_await bhttp::async_read(stream, buffer, res, k_nothrow);
    (void)read;
    const auto answered = steady::now();
    if (rec) {
      l.refuse("read: " + rec.message());
      co_return;
    }
    l.ms.push_back(ms_between(sent, answered));
    l.last = std::max(l.last, answered);
    if (res.result_int() == 202) {
      ++l.accepted;
    } else {
      l.refuse(std::to_string(res.result_int()) + " " + res.body());
    }
    if (!res.keep_alive()) {
      l.refuse("the server closed the connection");
      co_return;
    }
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

/// GET `target` on a connection of its own: the status and the body.
asio::awaitable<std::pair<unsigned, std::string>> get_once(tcp::endpoint endpoint, std::string target) {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  stream.expires_after(k_request_limit);
  co_await stream.async_connect(endpoint, asio::use_awaitable);
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, target, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  co_await bhttp::async_write(stream, req, asio::use_awaitable);
  beast::flat_buffer buffer;
  bhttp::response<bhttp::string_body> res;
  co_await bhttp::async_read(stream, buffer, res, asio::use_awaitable);
  co_return std::pair<unsigned, std::string>(res.result_int(), res.body());
}

/// Checks that GET /v1/runs/{id} lists the hook at `path` (what a client that did not start the run would
/// POST to): the paths the workflow handed out are the API's.
void check_run_lists_hook_blocking(tcp::endpoint endpoint, const run_id& id, const std::string& path) {
  asio::io_context io;
  auto answer = asio::co_spawn(io, get_once(endpoint, "/v1/runs/" + id), asio::use_future);
  io.run();
  const auto [status, body] = answer.get();
  if (status != 200) throw std::runtime_error("GET /v1/runs/" + id + " answered " + std::to_string(status));
  const auto run = json::parse(body);
  for (const auto& h : run.at("hooks").as_array()) {
    if (h.at("path").as_string() == path) return;
  }
  throw std::runtime_error("GET /v1/runs/" + id + " does not list the hook " + path + ": " + body);
}

/// The direct comparison: `concurrency` coroutines on the engine's executor calling engine::resume_hook.
struct direct_load {
  explicit direct_load(engine& en) : e(en) {}
  engine& e;
  std::vector<std::string> tokens;
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> live{0};
  std::promise<void> done;
  std::mutex m;
  std::vector<double> ms;  // under m
  std::size_t accepted = 0, refused = 0;
  std::string first_refusal;
  steady::time_point last;
};

asio::awaitable<void> resume_directly(std::shared_ptr<direct_load> l) {
  const json::value payload{{"approved", true}, {"by", "keel-bench"}};
  const resume_options options;  // named: no class temporary inside the co_await (GCC 12)
  std::vector<double> ms;
  std::size_t accepted = 0;
  for (std::size_t i = l->next.fetch_add(1); i < l->tokens.size(); i = l->next.fetch_add(1)) {
    const std::string& token = l->tokens[i];
    const auto called = steady::now();
    auto r = co_await l->e.resume_hook(token, payload, options);
    const auto returned = steady::now();
    ms.push_back(ms_between(called, returned));
    std::lock_guard lock(l->m);
    l->last = std::max(l->last, returned);
    if (r && !r->repeated) {
      ++accepted;
    } else if (l->refused++ == 0) {
      l->first_refusal = r ? "a repeat" : r.error().message();
    }
  }
  std::lock_guard lock(l->m);
  l->ms.insert(l->ms.end(), ms.begin(), ms.end());
  l->accepted += accepted;
}

/// Runs `n` approve_http runs until each waits on its hook; their hook tokens, in enqueue order.
std::pair<std::vector<run_id>, std::vector<std::string>> park_runs_blocking(const latency_setup& s, engine& e,
                                                                            run_counter& counter,
                                                                            token_book& book, std::size_t n,
                                                                            std::size_t offset) {
  const std::size_t parked_before = counter.waiting();
  auto ids = enqueue_many_blocking(s, e, k_hook_workflow, n, offset);
  wait_until(
      s, steady::now() + s.timeout, "parking the runs on their hooks",
      [&] { return counter.waiting() >= parked_before + n || counter.unsuccessful() > 0; },
      [&] {
        return std::to_string(counter.waiting() - parked_before) + "/" + std::to_string(n) + " waiting";
      });
  if (counter.unsuccessful() > 0) throw std::runtime_error("a run failed before it parked on its hook");
  std::vector<std::string> tokens;
  tokens.reserve(n);
  for (const auto& id : ids) {
    tokens.push_back(book.of(id));
    if (tokens.back().empty()) throw std::runtime_error("run " + id + " handed out no hook token");
  }
  return {std::move(ids), std::move(tokens)};
}

/// What one resume phase measured.
struct phase_figures {
  std::size_t accepted = 0;  // 202 over HTTP; a first resume directly
  std::size_t refused = 0;   // any other answer, a failed call, or a request left unanswered
  std::string first_refusal;
  std::vector<double> ms;        // each call, from its start to its answer
  double seconds = 0;            // from the first call to the last answer
  double completed_seconds = 0;  // from the first call until the last resumed run completed

  void add(phase_figures&& p) {
    accepted += p.accepted;
    refused += p.refused;
    if (first_refusal.empty()) first_refusal = std::move(p.first_refusal);
    ms.insert(ms.end(), p.ms.begin(), p.ms.end());
    seconds += p.seconds;
    completed_seconds += p.completed_seconds;
  }
  [[nodiscard]] double rate() const { return static_cast<double>(accepted) / seconds; }
};

/// Waits until `accepted` more runs than `completed_before` completed; the seconds from `t0` to the last.
double wait_for_completions(const latency_setup& s, run_counter& counter, std::size_t completed_before,
                            std::size_t accepted, steady::time_point t0) {
  wait_until(
      s, steady::now() + s.timeout, "completing the resumed runs",
      [&] { return counter.completed() + counter.unsuccessful() >= completed_before + accepted; },
      [&] {
        return std::to_string(counter.completed() - completed_before) + "/" + std::to_string(accepted) +
               " completed";
      });
  if (counter.unsuccessful() > 0) throw std::runtime_error("some resumed runs failed or were abandoned");
  return seconds_between(t0, counter.last());
}

/// POSTs each of `tokens`' hook paths over `s.connections` keep-alive connections (the client thread).
phase_figures resume_over_http_blocking(const latency_setup& s, run_counter& counter,
                                        const tcp::endpoint& endpoint,
                                        const std::vector<std::string>& tokens) {
  const std::size_t completed_before = counter.completed();
  resume_load load;
  load.endpoint = endpoint;
  load.connections = s.connections;
  load.paths.reserve(tokens.size());
  for (const auto& t : tokens)
    load.paths.push_back("/v1/hooks/" + t);
  {
    std::string failure;  // outlives the client thread, which writes it
    client_thread clients;
    auto gate = std::make_shared<asio::steady_timer>(clients.io(), steady::time_point::max());
    for (std::size_t c = 0; c < s.connections; ++c) {
      asio::co_spawn(clients.io(), resume_connection(load, gate), [&failure](std::exception_ptr ep) {
        if (ep && failure.empty()) failure = what_of(ep);
      });
    }
    clients.start();
    wait_until(
        s, steady::now() + s.timeout, "resuming over HTTP", [&] { return clients.finished(); },
        [&] { return std::to_string(counter.completed() - completed_before) + " completed"; });
    clients.join();
    if (!failure.empty()) throw std::runtime_error("an HTTP client failed: " + failure);
  }
  phase_figures f;
  f.accepted = load.accepted;
  // A request that never got its answer (its connection failed) counts too.
  f.refused = load.refused + (tokens.size() - std::min(tokens.size(), load.accepted + load.refused));
  f.first_refusal = load.first_refusal;
  f.ms = std::move(load.ms);
  f.seconds = seconds_between(load.t0, load.last);
  if (f.refused == 0)
    f.completed_seconds = wait_for_completions(s, counter, completed_before, f.accepted, load.t0);
  return f;
}

/// Calls engine::resume_hook for each of `tokens`, `s.connections` calls in flight (the engine's threads).
phase_figures resume_directly_blocking(const latency_setup& s, engine& e, run_counter& counter,
                                       std::vector<std::string> tokens) {
  const std::size_t completed_before = counter.completed();
  auto direct = std::make_shared<direct_load>(e);
  direct->tokens = std::move(tokens);
  direct->live = s.connections;
  auto done = direct->done.get_future();
  const auto t0 = steady::now();
  for (std::size_t c = 0; c < s.connections; ++c) {
    asio::co_spawn(e.get_executor(), resume_directly(direct), [direct](std::exception_ptr ep) {
      if (ep) {
        std::lock_guard lock(direct->m);
        if (direct->refused++ == 0) direct->first_refusal = what_of(ep);
      }
      if (direct->live.fetch_sub(1) == 1) direct->done.set_value();
    });
  }
  wait_until(
      s, steady::now() + s.timeout, "resuming directly",
      [&] { return done.wait_for(0s) == std::future_status::ready; },
      [&] {
        return std::to_string(direct->next.load()) + "/" + std::to_string(direct->tokens.size()) + " called";
      });
  // Every coroutine has ended (the future says so): nothing else touches direct's fields now.
  phase_figures f;
  f.accepted = direct->accepted;
  f.refused = direct->refused;
  f.first_refusal = direct->first_refusal;
  f.ms = std::move(direct->ms);
  f.seconds = seconds_between(t0, direct->last);
  if (f.refused == 0)
    f.completed_seconds = wait_for_completions(s, counter, completed_before, f.accepted, t0);
  return f;
}

std::string hook_resumes_blocking(const latency_setup& s) {
  run_counter counter;
  token_book book;
  engine e(options_for(s, counter));
  engine_guard guard(e, s);
  // Opens a hook, hands out its token, waits for the answer and completes with it.
  auto body = [&book](context& ctx, json::value) -> asio::awaitable<json::value> {
    const std::string name = "approve";
    auto approval = co_await ctx.create_hook(name);
    book.put(ctx.id(), approval.token());
    auto answer = co_await approval.wait();
    co_return answer ? std::move(*answer) : json::value(nullptr);
  };
  e.register_workflow<json::value, json::value>(std::string(k_hook_workflow), 1, body);
  if (auto r = e.start_blocking(); !r)
    throw std::runtime_error("engine start failed: " + r.error().message());
  auto srv = start_server_blocking(e, s.connections + 16);
  const tcp::endpoint endpoint(asio::ip::make_address_v4("127.0.0.1"), srv->port());

  // Every run parks first: --runs for HTTP, as many again for the direct comparison.
  const std::size_t total = s.skip_direct ? s.runs : 2 * s.runs;
  log::info(k_component, "enqueueing " + std::to_string(total) + " runs that wait on a hook");
  const auto park_started = steady::now();
  auto [ids, tokens] = park_runs_blocking(s, e, counter, book, total, 0);
  const double park_seconds = seconds_between(park_started, steady::now());
  check_run_lists_hook_blocking(endpoint, ids.front(), "/v1/hooks/" + tokens.front());
  log::info(k_component, "all " + std::to_string(total) + " runs wait on their hooks (" +
                             fixed(park_seconds, 3) + " s); resuming them, " + std::to_string(s.connections) +
                             " at a time");

  // HTTP and direct alternate in halves, HTTP-direct-direct-HTTP: a later phase meets a busier table (and
  // whatever else the machine does then); the order cancels that drift out.
  const auto slice = [&](std::size_t from, std::size_t to) {
    return std::vector<std::string>(tokens.begin() + static_cast<std::ptrdiff_t>(from),
                                    tokens.begin() + static_cast<std::ptrdiff_t>(to));
  };
  const std::size_t n = s.runs, half = s.skip_direct ? n : n / 2;
  phase_figures http, direct;
  const auto over_http = [&](std::size_t from, std::size_t to) {
    if (from == to) return;
    auto f = resume_over_http_blocking(s, counter, endpoint, slice(from, to));
    if (f.refused > 0) {
      throw std::runtime_error(std::to_string(f.refused) + " resume(s) over HTTP were not answered 202 (" +
                               std::to_string(f.accepted) + " of " + std::to_string(to - from) +
                               " were); first: " + f.first_refusal);
    }
    http.add(std::move(f));
  };
  const auto directly = [&](std::size_t from, std::size_t to) {
    if (from == to) return;
    auto f = resume_directly_blocking(s, e, counter, slice(from, to));
    if (f.refused > 0) {
      throw std::runtime_error(std::to_string(f.refused) +
                               " direct resume(s) failed; first: " + f.first_refusal);
    }
    direct.add(std::move(f));
  };
  over_http(0, half);
  if (!s.skip_direct) {
    directly(n, n + half);
    directly(n + half, 2 * n);
    over_http(half, n);
  }
  srv->stop_blocking();
  guard.stop_blocking();
  if (counter.unsuccessful() > 0) throw std::runtime_error("some runs failed or were abandoned");
  // Each run: the hook's creation and its wait, one step position each.
  const auto server = verify_blocking(s.conninfo, total, 2);

  std::string line =
      "{\"workload\":" + json_string(s.workload) + ",\"runs\":" + std::to_string(s.runs) +
      ",\"connections\":" + std::to_string(s.connections) + ",\"resumes_per_s\":" + fixed(http.rate(), 1) +
      ",\"p50_ms\":" + fixed(percentile(http.ms, 0.5), 2) +
      ",\"p99_ms\":" + fixed(percentile(http.ms, 0.99), 2) +
      ",\"max_ms\":" + fixed(http.ms.empty() ? 0.0 : *std::max_element(http.ms.begin(), http.ms.end()), 2) +
      ",\"non_202\":" + std::to_string(http.refused) + ",\"resume_seconds\":" + fixed(http.seconds, 3) +
      ",\"completed_seconds\":" + fixed(http.completed_seconds, 3) +
      ",\"park_seconds\":" + fixed(park_seconds, 3);
  if (s.skip_direct) {
    line += ",\"direct_resumes_per_s\":null,\"ratio\":null";
  } else {
    line += ",\"direct_resumes_per_s\":" + fixed(direct.rate(), 1) +
            ",\"ratio\":" + fixed(http.rate() / direct.rate(), 2) +
            ",\"direct_p50_ms\":" + fixed(percentile(direct.ms, 0.5), 2) +
            ",\"direct_p99_ms\":" + fixed(percentile(direct.ms, 0.99), 2) +
            ",\"direct_completed_seconds\":" + fixed(direct.completed_seconds, 3);
  }
  return line + ",\"threads\":" + std::to_string(s.threads) +
         ",\"concurrency\":" + std::to_string(s.concurrency) + ",\"client\":" +
         json_string("1 thread in this process (direct: the engine's threads), sharing " +
                     std::to_string(std::thread::hardware_concurrency()) +
                     " cores with the server's and PostgreSQL's") +
         server_fields(server) + "}";
}

// ---------------------------------------------------------------------------------------------------------------
// sse-fanout

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

}  // namespace

bool is_http_workload(std::string_view workload) noexcept {
  return workload == k_hook_resumes || workload == k_sse_fanout;
}

std::string http_workload_blocking(const latency_setup& s) {
  if (s.workload == k_hook_resumes) return hook_resumes_blocking(s);
  if (s.workload == k_sse_fanout) return sse_fanout_blocking(s);
  throw std::invalid_argument("not an HTTP workload: " + s.workload);
}

}  // namespace keel::bench
