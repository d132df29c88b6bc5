// keel-bench's hook-resumes workload: runs parked on hooks, resumed by POST /v1/hooks/{token} from keep-alive
// connections (asynchronous Beast clients on a thread of their own, in this process, over loopback), beside
// engine::resume_hook called directly at the same concurrency.
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

constexpr std::string_view k_hook_workflow = "approve_http";
/// Enqueue calls in flight while enqueueing the hook-resumes runs.
constexpr std::size_t k_enqueuers = 256;

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

}  // namespace

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

}  // namespace keel::bench::http_load
