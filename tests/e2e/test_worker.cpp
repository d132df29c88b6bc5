// keel-test-worker: a real worker process for crash, fencing and multi-process tests.
// Every step appends "<run id> <step>" to the effects file before it returns, and every completion appends
// "<run id> completed", so the test can count what really ran. SIGTERM/SIGINT stop it gracefully.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "keel/common/log.hpp"
#include "keel/engine.hpp"

namespace asio = boost::asio;
namespace json = boost::json;

namespace {

std::string g_effects;

void append_line(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) std::abort();
  const std::string text = line + "\n";
  // One write with O_APPEND: lines from concurrent processes never interleave.
  if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) std::abort();
  ::close(fd);
}

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

std::string arg(int argc, char** argv, const char* name, const char* fallback = "") {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string db = arg(argc, argv, "--db");
  g_effects = arg(argc, argv, "--effects");
  const std::string marker = arg(argc, argv, "--marker");
  const auto hold = std::chrono::milliseconds(std::stol(arg(argc, argv, "--hold-ms", "0")));
  const auto step_time = std::chrono::milliseconds(std::stol(arg(argc, argv, "--step-ms", "5")));
  if (db.empty() || g_effects.empty()) {
    std::cerr << "usage: keel-test-worker --db CONNINFO --effects FILE [--lease-ms N] [--concurrency N]"
                 " [--hold-ms N --marker FILE] [--max-recoveries N] [--step-ms N] [--iterations N"
                 " --hold-at I] [--fetch-ca FILE]\n";
    return 2;
  }

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // inherited by the engine's threads

  keel::engine_options o;
  o.store.conninfo = db;
  o.lease = std::chrono::milliseconds(std::stol(arg(argc, argv, "--lease-ms", "30000")));
  o.concurrency = std::stoul(arg(argc, argv, "--concurrency", "64"));
  o.poll_interval = std::chrono::milliseconds(20);
  o.threads = 2;
  if (auto m = arg(argc, argv, "--max-recoveries"); !m.empty()) o.max_recoveries = std::stoi(m);
  o.fetch_ca_file = arg(argc, argv, "--fetch-ca");
  o.on_event = [](const keel::run_event& ev) {
    if (ev.what == keel::run_event::kind::completed) append_line(g_effects, ev.id + " completed");
    if (ev.what == keel::run_event::kind::abandoned) append_line(g_effects, ev.id + " abandoned");
  };
  keel::engine engine(o);

  // crashable: step s2 announces itself with the marker file and can be held open (to be killed in it).
  engine.register_workflow<json::value, json::value>(
      "crashable", 1, [&](keel::context& ctx, json::value) -> asio::awaitable<json::value> {
        for (const char* name : {"s1", "s2", "s3"}) {
          co_await ctx.step(name, [&, name]() -> asio::awaitable<int> {
            append_line(g_effects, ctx.id() + " " + name);
            if (std::strcmp(name, "s2") == 0 && !marker.empty()) {
              append_line(marker, ctx.id());
              co_await sleep_for(hold);
            }
            co_return 1;
          });
        }
        co_return json::value{{"done", true}};
      });
  engine.register_workflow<json::value, json::value>(
      "noop3", 1, [&](keel::context& ctx, json::value) -> asio::awaitable<json::value> {
        for (const char* name : {"s1", "s2", "s3"}) {
          co_await ctx.step(name, [&, name] {
            append_line(g_effects, ctx.id() + " " + name);
            return json::value{{"i", 1}};
          });
        }
        co_return json::value{{"done", true}};
      });

  // sleepy: three steps of --step-ms each, so that a drain is still under way when the test breaks something.
  engine.register_workflow<json::value, json::value>(
      "sleepy", 1, [&](keel::context& ctx, json::value) -> asio::awaitable<json::value> {
        for (const char* name : {"s1", "s2", "s3"}) {
          co_await ctx.step(name, [&, name]() -> asio::awaitable<int> {
            append_line(g_effects, ctx.id() + " " + name);
            co_await sleep_for(step_time);
            co_return 1;
          });
        }
        co_return json::value{{"done", true}};
      });

  // keyed: one step of --step-ms; at most 3 runs per /tenant at once, across every worker process.
  auto keyed = keel::make_workflow<json::value, json::value>(
      "keyed", 1, [&](keel::context& ctx, json::value in) -> asio::awaitable<json::value> {
        auto work = [&]() -> asio::awaitable<int> {
          append_line(g_effects, ctx.id() + " work");
          co_await sleep_for(step_time);
          co_return 1;
        };
        co_await ctx.step("work", work);
        co_return in;
      });
  keyed.concurrency = keel::concurrency_rule{3, "/tenant"};
  engine.register_workflow(std::move(keyed));

  // paced: one quick step; at most 3 runs per /tenant start in any 500 ms, across every worker process.
  auto paced = keel::make_workflow<json::value, json::value>(
      "paced", 1, [&](keel::context& ctx, json::value in) -> asio::awaitable<json::value> {
        auto work = [&] {
          append_line(g_effects, ctx.id() + " work");
          return 1;
        };
        co_await ctx.step("work", work);
        co_return in;
      });
  paced.throttle = keel::throttle_rule{3, std::chrono::milliseconds(500), "/tenant"};
  engine.register_workflow(std::move(paced));

  // shared: one step of --step-ms; fair by /tenant (tenants take turns in the claims of every worker).
  auto shared = keel::make_workflow<json::value, json::value>(
      "shared", 1, [&](keel::context& ctx, json::value in) -> asio::awaitable<json::value> {
        auto work = [&]() -> asio::awaitable<int> {
          co_await sleep_for(step_time);
          co_return 1;
        };
        co_await ctx.step("work", work);
        co_return in;
      });
  shared.fairness = keel::fairness_rule{"/tenant"};
  engine.register_workflow(std::move(shared));

  // napper: a step, a durable sleep of --step-ms, a step: the worker that parked it can be killed meanwhile.
  engine.register_workflow<json::value, json::value>(
      "napper", 1, [&](keel::context& ctx, json::value) -> asio::awaitable<json::value> {
        auto before = [&] {
          append_line(g_effects, ctx.id() + " before");
          return 1;
        };
        co_await ctx.step("before", before);
        co_await ctx.sleep(step_time);
        auto after = [&] {
          append_line(g_effects, ctx.id() + " after");
          return 2;
        };
        co_await ctx.step("after", after);
        co_return json::value{{"done", true}};
      });

  // family: a step, a child run of crashable (which can be held and killed in its s2), a step.
  engine.register_workflow<json::value, json::value>(
      "family", 1, [&](keel::context& ctx, json::value in) -> asio::awaitable<json::value> {
        auto before = [&] {
          append_line(g_effects, ctx.id() + " p1");
          return 1;
        };
        co_await ctx.step("p1", before);
        auto child = co_await ctx.child("crashable", in);
        auto after = [&] {
          append_line(g_effects, ctx.id() + " p2");
          return 2;
        };
        co_await ctx.step("p2", after);
        co_return json::value{{"child", child}};
      });

  // looper: an agent-style loop of --iterations steps; iteration --hold-at announces itself with the marker
  // file and is held open (to be killed in it).
  const int iterations = std::stoi(arg(argc, argv, "--iterations", "1000"));
  const int hold_at = std::stoi(arg(argc, argv, "--hold-at", "-1"));
  engine.register_workflow<json::value, json::value>(
      "looper", 1, [&](keel::context& ctx, json::value) -> asio::awaitable<json::value> {
        std::int64_t total = 0;
        for (int i = 0; i < iterations; ++i) {
          auto iteration = [&, i]() -> asio::awaitable<std::int64_t> {
            append_line(g_effects, ctx.id() + " i" + std::to_string(i));
            if (i == hold_at && !marker.empty()) {
              append_line(marker, ctx.id());
              co_await sleep_for(hold);
            }
            co_return i;
          };
          total += co_await ctx.step("iteration", iteration);
        }
        co_return json::value{{"total", total}};
      });

  // branches: three parallel branches of two steps each; branch 1's second step announces itself with the
  // marker file and is held open (to be killed in it) once the other branches are done.
  engine.register_workflow<json::value, json::value>(
      "branches", 1, [&](keel::context& ctx, json::value) -> asio::awaitable<json::value> {
        auto branch = [&](int index) {
          return [&, index](keel::context& b) -> asio::awaitable<int> {
            const std::string tag = ctx.id() + " b" + std::to_string(index);
            auto first = [&] {
              append_line(g_effects, tag + "a");
              return index;
            };
            co_await b.step("a", first);
            auto second = [&]() -> asio::awaitable<int> {
              append_line(g_effects, tag + "b");
              if (index == 1 && !marker.empty()) {
                co_await sleep_for(std::chrono::milliseconds(300));  // the others finish meanwhile
                append_line(marker, ctx.id());
                co_await sleep_for(hold);
              }
              co_return index * 10;
            };
            co_return co_await b.step("b", second);
          };
        };
        auto b0 = branch(0), b1 = branch(1), b2 = branch(2);
        auto [x, y, z] = co_await ctx.parallel(b0, b1, b2);
        co_return json::value{{"sum", x + y + z}};
      });

  // fetch_then_hold: ctx.fetch of the input's "url", then step "hold", which announces itself with the marker
  // file and is held open (to be killed in it). Every execution notes the body it got ("<run id> saw
  // <body>"): a replay sees the recorded one.
  engine.register_workflow<json::value, json::value>(
      "fetch_then_hold", 1, [&](keel::context& ctx, json::value in) -> asio::awaitable<json::value> {
        keel::fetch_request request;
        request.url = std::string(in.at("url").as_string());
        const auto response = co_await ctx.fetch(request);
        append_line(g_effects, ctx.id() + " saw " + response.body);
        auto hold_step = [&]() -> asio::awaitable<int> {
          append_line(g_effects, ctx.id() + " hold");
          if (!marker.empty()) {
            append_line(marker, ctx.id());
            co_await sleep_for(hold);
          }
          co_return 1;
        };
        co_await ctx.step("hold", hold_step);
        co_return json::value{{"status", response.status}, {"body", response.body}};
      });

  if (auto r = engine.start_blocking(); !r) {
    std::cerr << "start failed: " << r.error().message() << "\n";
    return 1;
  }
  std::cout << "ready " << engine.worker_id() << std::endl;
  int sig = 0;
  sigwait(&signals, &sig);
  engine.stop_blocking();
  return 0;
}
