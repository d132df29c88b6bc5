// Live streams against a real PostgreSQL: every logged event reaches every stream once, in log order,
// from any worker; filters, progress frames (fenced by the lease, coalesced for slow consumers), and
// backpressure that pauses the engine without ever wedging it.
#define BOOST_TEST_MODULE stream
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "engine_fixture.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace {

/// The next event within `timeout` (a real next(), cancelled when the timer wins); nullopt on timeout or
/// at the end of the stream.
std::optional<stream_event> pull(event_stream& s, std::chrono::milliseconds timeout = 10s) {
  using namespace boost::asio::experimental::awaitable_operators;
  asio::io_context io;
  std::optional<stream_event> out;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer t(io, timeout);
        auto next = s.next();
        auto r = co_await (std::move(next) || t.async_wait(asio::use_awaitable));
        if (r.index() == 0) out = std::move(std::get<0>(r));
      },
      asio::detached);
  io.run();
  return out;
}

/// Events until one of kind `kind` for `run` (included), or the timeout.
std::vector<stream_event> pull_until(event_stream& s, const run_id& run, std::string_view kind,
                                     std::chrono::milliseconds timeout = 20s) {
  std::vector<stream_event> out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto e = pull(s, 1s);
    if (!e) continue;
    const bool done = e->run == run && e->kind() == kind;
    out.push_back(std::move(*e));
    if (done) return out;
  }
  BOOST_FAIL("no " << kind << " for run " << run);
  return out;
}

/// Steps the run has checkpointed so far.
std::size_t steps_done(engine& e, const run_id& id) {
  auto r = e.get_blocking(id);
  return r ? r->steps.size() : 0;
}

void add_counter(engine& e, int steps) {
  add_workflow(e, "count", [steps](context& ctx, json::value) -> asio::awaitable<json::value> {
    for (int i = 0; i < steps; ++i) {
      auto step = [i] { return i; };
      co_await ctx.step("s" + std::to_string(i), step);
    }
    co_return json::value(steps);
  });
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(a_stream_gets_every_logged_event_of_both_workers_once_in_log_order, *utf::timeout(120)) {
  auto db = fresh_database();
  engine a(options_for(db)), b(options_for(db));
  add_counter(a, 3);
  add_counter(b, 3);
  BOOST_REQUIRE(a.start_blocking());
  BOOST_REQUIRE(b.start_blocking());
  auto s = a.stream_blocking();
  BOOST_REQUIRE(s);
  std::vector<run_id> ids;
  for (int i = 0; i < 40; ++i)
    ids.push_back((i % 2 ? a : b).enqueue_blocking("count", json::object{}).value());
  for (const auto& id : ids)
    BOOST_REQUIRE(a.wait_blocking(id, 30s));
  // Everything the log holds now, read back in pages, is what the stream delivers, in the same order.
  std::vector<std::int64_t> logged;
  std::int64_t after = 0;
  for (;;) {
    auto page = a.read_log_blocking(after);
    BOOST_REQUIRE(page);
    if (page->events.empty()) break;
    for (const auto& ev : page->events)
      logged.push_back(ev.pos);
    after = page->events.back().pos;
  }
  std::vector<std::int64_t> streamed;
  std::map<std::string, int> kinds;
  while (streamed.size() < logged.size()) {
    auto e = pull(*s, 10s);
    BOOST_REQUIRE_MESSAGE(e, "the stream stopped after " << streamed.size() << " of " << logged.size());
    streamed.push_back(e->id);
    ++kinds[std::string(e->kind())];
    BOOST_TEST(e->workflow == "count");
  }
  BOOST_TEST(streamed == logged);
  BOOST_TEST(kinds["run_enqueued"] == 40);
  BOOST_TEST(kinds["run_started"] == 40);
  BOOST_TEST(kinds["step_started"] == 120);
  BOOST_TEST(kinds["step_completed"] == 120);
  BOOST_TEST(kinds["run_completed"] == 40);
  BOOST_TEST(!pull(*s, 300ms));  // nothing twice
}

// The follower reads log rows whole and takes a step's details from the checkpoint its own worker just
// wrote, or from keel.steps for another worker's: either way each step event says what the log says.
BOOST_AUTO_TEST_CASE(step_details_are_the_logs_whichever_worker_wrote_them, *utf::timeout(120)) {
  auto db = fresh_database();
  engine a(options_for(db)), b(options_for(db));
  // Outputs that array quoting must carry through: quotes, backslashes, commas, braces, "NULL", unicode.
  const json::value tricky{{"q", "say \"hi\", {x}\\n"},
                           {"null", "NULL"},
                           {"list", json::array{1, "a,b", nullptr, json::object{{"}", "{"}}}},
                           {"text", "\u00e9t\u00e9 \xe2\x9c\x93"},
                           // Numbers as jsonb gives them back: a whole double is read as an integer.
                           {"numbers", json::array{1.0, -0.0, 2.5, 1e20, std::uint64_t{7}, 0.1}}};
  // Each worker runs only its own workflow: a's stream takes "mine" from a's checkpoints, "theirs" from
  // the step rows b wrote.
  for (auto [e, name] : {std::pair{&a, "mine"}, std::pair{&b, "theirs"}}) {
    add_workflow(*e, name, [tricky](context& ctx, json::value in) -> asio::awaitable<json::value> {
      auto first = [tricky] { return tricky; };
      co_await ctx.step("first, \"quoted\"", first);
      auto plain = [in] { return in; };
      co_await ctx.step("plain", plain);
      auto fails = []() -> int { throw std::runtime_error("no, \"really\" {}"); };
      step_options once;
      once.retry.max_attempts = 1;
      try {
        co_await ctx.step("fails", fails, once);
      } catch (const step_failed_error&) {
      }
      co_return json::value("done");
    });
  }
  BOOST_REQUIRE(a.start_blocking());
  BOOST_REQUIRE(b.start_blocking());
  auto s = a.stream_blocking();
  BOOST_REQUIRE(s);
  std::vector<run_id> ids;
  for (int i = 0; i < 20; ++i)
    ids.push_back(i % 2 ? a.enqueue_blocking("mine", json::value(i)).value()
                        : b.enqueue_blocking("theirs", json::value(i)).value());
  for (const auto& id : ids)
    BOOST_REQUIRE(a.wait_blocking(id, 30s));
  std::map<std::int64_t, storage::log_event> logged;
  for (std::int64_t after = 0;;) {
    auto page = a.read_log_blocking(after);
    BOOST_REQUIRE(page);
    if (page->events.empty()) break;
    after = page->events.back().pos;
    for (auto& ev : page->events)
      logged.emplace(ev.pos, std::move(ev));
  }
  std::map<std::string, int> steps_by_kind, steps_by_workflow;
  for (std::size_t seen = 0; seen < logged.size(); ++seen) {
    auto e = pull(*s, 10s);
    BOOST_REQUIRE_MESSAGE(e, "the stream stopped after " << seen << " of " << logged.size());
    const auto it = logged.find(e->id);
    BOOST_REQUIRE(it != logged.end());
    BOOST_REQUIRE(it->second.kind == e->kind());
    const auto& d = it->second.data;
    if (const auto* st = e->as<events::step_started>()) {
      BOOST_TEST(st->name == d.at("name").as_string());
      BOOST_TEST(st->seq == d.at("seq").to_number<int>());
      ++steps_by_kind["step_started"];
    } else if (const auto* c = e->as<events::step_completed>()) {
      BOOST_TEST(c->name == d.at("name").as_string());
      BOOST_TEST(c->seq == d.at("seq").to_number<int>());
      BOOST_TEST(c->attempts == d.at("attempts").to_number<int>());
      BOOST_TEST(c->duration.count() == d.at("duration_us").to_number<std::int64_t>());
      BOOST_TEST(c->output == d.at("output"));
      ++steps_by_kind["step_completed"];
      ++steps_by_workflow[e->workflow];
    } else if (const auto* f = e->as<events::step_failed>()) {
      BOOST_TEST(f->name == d.at("name").as_string());
      BOOST_TEST(f->error == d.at("error"));
      BOOST_TEST(f->error.at("message").as_string() == "no, \"really\" {}");
      ++steps_by_kind["step_failed"];
    }
  }
  BOOST_TEST(steps_by_kind["step_started"] == 60);
  BOOST_TEST(steps_by_kind["step_completed"] == 40);
  BOOST_TEST(steps_by_kind["step_failed"] == 20);
  BOOST_TEST(steps_by_workflow["mine"] == 20);
  BOOST_TEST(steps_by_workflow["theirs"] == 20);
  BOOST_TEST(!pull(*s, 300ms));  // nothing twice
}

// store::follow_log, page by page with a small limit: rows are cut anywhere, a page is full while more
// events wait, and a row whose arrays the follower cannot split (two-dimensional here) is read event by
// event instead; together the pages are exactly the log.
BOOST_AUTO_TEST_CASE(follow_pages_are_full_while_more_wait_and_cut_rows_anywhere, *utf::timeout(120)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_counter(e, 3);
  BOOST_REQUIRE(e.start_blocking());
  std::vector<run_id> ids;
  for (int i = 0; i < 30; ++i)
    ids.push_back(e.enqueue_blocking("count", json::object{}).value());
  for (const auto& id : ids)
    BOOST_REQUIRE(e.wait_blocking(id, 30s));
  e.stop_blocking();
  const auto odd_row =
      query_value(db, "SELECT pos FROM keel.run_log WHERE n > 3 ORDER BY pos OFFSET 1 LIMIT 1");
  BOOST_REQUIRE(!odd_row.empty());
  query_value(db,
              "UPDATE keel.run_log SET runs = ARRAY[runs], kinds = ARRAY[kinds], data = ARRAY[data] "
              "WHERE pos = " +
                  odd_row);
  std::vector<storage::log_event> logged;
  for (std::int64_t after = 0;;) {
    auto page = e.read_log_blocking(after);
    BOOST_REQUIRE(page);
    if (page->events.empty()) break;
    after = page->events.back().pos;
    for (auto& ev : page->events)
      logged.push_back(std::move(ev));
  }
  BOOST_REQUIRE(logged.size() == 30u * 9);
  asio::io_context ioc;  // outlives the store
  storage::store s({db});
  auto follow = [&](std::int64_t after, std::size_t limit) {
    auto f = asio::co_spawn(ioc, s.follow_log(after, limit), asio::use_future);
    ioc.restart();
    ioc.run();
    return f.get();
  };
  constexpr std::size_t k_limit = 7;
  std::vector<storage::log_event> followed;
  std::int64_t after = logged.front().pos - 1;
  for (int pages = 0; pages < 1000; ++pages) {
    auto page = follow(after, k_limit);
    BOOST_REQUIRE(page);
    if (page->page.events.empty()) break;
    const bool last = followed.size() + page->page.events.size() == logged.size();
    // Full, or one short when the limit fell between a step's start and its end (the start comes next).
    if (!last) BOOST_TEST(page->page.events.size() >= k_limit - 1);
    for (auto& ev : page->page.events) {
      BOOST_TEST(ev.pos > after);
      followed.push_back(std::move(ev));
    }
    after = followed.back().pos;
  }
  BOOST_REQUIRE(followed.size() == logged.size());
  for (std::size_t i = 0; i < logged.size(); ++i) {
    BOOST_TEST_CONTEXT("event " << i << " at " << logged[i].pos << " (" << logged[i].kind << ")") {
      BOOST_TEST(followed[i].pos == logged[i].pos);
      BOOST_TEST(followed[i].run == logged[i].run);
      BOOST_TEST(followed[i].kind == logged[i].kind);
      if (logged[i].data.is_object() && logged[i].data.as_object().contains("name")) {
        BOOST_TEST(followed[i].data.at("name") == logged[i].data.at("name"));
        if (logged[i].kind == "step_completed")
          BOOST_TEST(followed[i].data.at("output") == logged[i].data.at("output"));
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(events_carry_typed_details_and_each_stream_has_its_own_copy, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "greet", [](context& ctx, json::value in) -> asio::awaitable<json::value> {
    auto hello = [&] { return json::value{{"greeting", "hello " + std::string(in.as_string())}}; };
    auto out = co_await ctx.step("hello", hello);
    co_return out;
  });
  BOOST_REQUIRE(e.start_blocking());
  auto one = e.stream_blocking().value();
  auto two = e.stream_blocking().value();
  auto id = e.enqueue_blocking("greet", json::value("ada")).value();
  auto first = pull_until(one, id, "run_completed");
  auto second = pull_until(two, id, "run_completed");
  BOOST_REQUIRE(first.size() == 5u);
  BOOST_REQUIRE(second.size() == 5u);
  const auto* started = first[1].as<events::run_started>();
  BOOST_REQUIRE(started);
  BOOST_TEST(started->execution == 1);
  BOOST_TEST(started->worker == e.worker_id());
  BOOST_TEST(first[2].as<events::step_started>()->name == "hello");
  first.erase(first.begin() + 2);
  second.erase(second.begin() + 2);
  auto* step = std::get_if<events::step_completed>(&first[2].body);
  BOOST_REQUIRE(step);
  BOOST_TEST(step->name == "hello");
  BOOST_TEST(step->attempts == 1);
  BOOST_TEST(step->output.at("greeting").as_string() == "hello ada");
  // A consumer changing its copy changes nothing elsewhere.
  step->output.as_object()["greeting"] = "changed";
  std::get<events::run_completed>(first[3].body).output = nullptr;
  BOOST_TEST(second[2].as<events::step_completed>()->output.at("greeting").as_string() == "hello ada");
  BOOST_TEST(second[3].as<events::run_completed>()->output.at("greeting").as_string() == "hello ada");
  BOOST_TEST(e.get_blocking(id)->output.at("greeting").as_string() == "hello ada");
  BOOST_TEST(first[0].id < first[1].id);
}

BOOST_AUTO_TEST_CASE(a_run_filter_follows_the_run_and_the_runs_it_started, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "leaf", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    ctx.emit(json::value{{"pct", 50}});
    auto work = [] { return 1; };
    co_await ctx.step("work", work);
    co_return json::value(1);
  });
  add_workflow(e, "mid", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    json::value none = json::object{};
    auto n = co_await ctx.child<int>("leaf", none);
    co_return json::value(n);
  });
  add_workflow(e, "root", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    co_await ctx.wait_for_event("go");
    json::value none = json::object{};
    auto n = co_await ctx.child<int>("mid", none);
    co_return json::value(n);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto root = e.enqueue_blocking("root", json::object{}).value();
  auto other = e.enqueue_blocking("leaf", json::object{}).value();  // not in the tree
  BOOST_REQUIRE(wait_until([&] { return status_of(e, root) == "waiting"; }, 10s));
  stream_options o;
  o.filter.run = root;
  auto tree = e.stream_blocking(o).value();
  stream_options w;
  w.filter.workflow = "leaf";
  w.filter.progress = false;
  auto leaves = e.stream_blocking(w).value();
  BOOST_REQUIRE(e.wait_blocking(other, 10s));
  BOOST_REQUIRE(e.send_event_blocking(root, "go", json::value(true)));
  BOOST_REQUIRE(e.wait_blocking(root, 20s));
  auto got = pull_until(tree, root, "run_completed");
  while (auto late = pull(tree, 300ms))  // a frame may come after the events that placed its run
    got.push_back(std::move(*late));
  std::set<run_id> runs;
  int frames = 0;
  for (const auto& ev : got) {
    runs.insert(ev.run);
    BOOST_TEST(ev.run != other);
    if (const auto* p = ev.as<events::progress>()) {
      ++frames;
      BOOST_TEST(p->frame.at("pct").as_int64() == 50);
      BOOST_TEST(ev.workflow == "leaf");
      BOOST_TEST(ev.id == 0);  // frames are not in the log
    }
  }
  BOOST_TEST(runs.size() == 3u);  // root, mid, leaf
  BOOST_TEST(frames == 1);
  // The workflow filter: only leaf runs, no frames.
  while (auto ev = pull(leaves, 500ms)) {
    BOOST_TEST(ev->workflow == "leaf");
    BOOST_TEST(!ev->as<events::progress>());
  }
  auto bad =
      e.stream_blocking(stream_options{std::nullopt, stream_filter{std::nullopt, run_id("nope"), true}});
  BOOST_TEST(!bad);
  BOOST_TEST((bad.error() == errc::invalid_run_id));
}

BOOST_AUTO_TEST_CASE(a_slow_consumer_gets_the_latest_frames_and_a_count_of_what_it_missed,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "tokens", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto gen = [&]() -> asio::awaitable<int> {
      for (int i = 1; i <= 200; ++i)
        ctx.emit(json::value{{"token", i}});
      co_return 200;
    };
    auto n = co_await ctx.step("generate", gen);
    co_return json::value(n);
  });
  BOOST_REQUIRE(e.start_blocking());
  stream_options o;
  auto s = e.stream_blocking(o).value();
  auto id = e.enqueue_blocking("tokens", json::object{}).value();
  BOOST_REQUIRE(e.wait_blocking(id, 10s));
  std::this_thread::sleep_for(300ms);  // the consumer was away
  auto got = pull_until(s, id, "run_completed");
  std::vector<const events::progress*> frames;
  for (const auto& ev : got) {
    if (const auto* p = ev.as<events::progress>()) frames.push_back(p);
  }
  BOOST_REQUIRE(frames.size() == 64u);
  BOOST_TEST(frames.front()->missed == 136);
  BOOST_TEST(frames.front()->seq == 137);
  BOOST_TEST(frames.back()->seq == 200);
  BOOST_TEST(frames.back()->frame.at("token").as_int64() == 200);
  BOOST_TEST(frames.back()->execution == 1);
  // Never part of the result or the log.
  BOOST_TEST(e.get_blocking(id)->output.as_int64() == 200);
  const auto log = e.read_log_blocking(0);
  BOOST_REQUIRE(log);
  for (const auto& ev : log->events)
    BOOST_TEST(ev.kind != "progress");
}

BOOST_AUTO_TEST_CASE(frames_cross_to_a_stream_on_another_worker, *utf::timeout(60)) {
  auto db = fresh_database();
  engine watcher(options_for(db)), runner(options_for(db));
  add_workflow(runner, "ticks", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto tick = [&]() -> asio::awaitable<int> {
      for (int i = 1; i <= 5; ++i) {
        ctx.emit(json::value{{"tick", i}});
        co_await async_sleep(20ms);
      }
      co_return 5;
    };
    co_await ctx.step("tick", tick);
    co_return json::value(true);
  });
  BOOST_REQUIRE(watcher.start_blocking());
  BOOST_REQUIRE(runner.start_blocking());
  auto s = watcher.stream_blocking().value();
  auto id = runner.enqueue_blocking("ticks", json::object{}).value();
  auto got = pull_until(s, id, "run_completed");
  std::vector<std::int64_t> ticks;
  for (const auto& ev : got) {
    if (const auto* p = ev.as<events::progress>()) {
      BOOST_TEST(ev.run == id);
      BOOST_TEST(ev.workflow == "ticks");
      ticks.push_back(p->frame.at("tick").as_int64());
    }
  }
  BOOST_TEST(ticks == (std::vector<std::int64_t>{1, 2, 3, 4, 5}));
}

BOOST_AUTO_TEST_CASE(frames_of_an_execution_that_lost_its_lease_never_show, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db, 1s));
  std::atomic<bool> cancelled_seen{false};
  add_workflow(e, "chatty", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    // A step that ignores cancellation and keeps publishing for 3 s.
    auto talk = [&]() -> asio::awaitable<int> {
      for (int i = 0; i < 150; ++i) {
        ctx.emit(json::value{{"i", i}});
        co_await async_sleep(20ms);
      }
      co_return 1;
    };
    co_await ctx.step("talk", talk);
    co_return json::value(1);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto s = e.stream_blocking().value();
  auto id = e.enqueue_blocking("chatty", json::object{}).value();
  // Frames flow; then the run is cancelled with no grace: fenced at once.
  int before = 0;
  while (before < 5) {
    auto ev = pull(s, 5s);
    BOOST_REQUIRE(ev);
    if (ev->as<events::progress>()) ++before;
  }
  cancel_options now;
  now.grace = 0ms;
  BOOST_REQUIRE(e.cancel_blocking(id, now));
  const auto fenced_at = std::chrono::system_clock::now();
  // Within a heartbeat the worker knows; no frame published after that reaches any stream.
  int late = 0;
  const auto until = std::chrono::steady_clock::now() + 3500ms;
  while (std::chrono::steady_clock::now() < until) {
    auto ev = pull(s, 200ms);
    if (!ev) continue;
    if (ev->as<events::progress>() && ev->at > fenced_at + 700ms) ++late;
  }
  BOOST_TEST(late == 0);
  BOOST_TEST(status_of(e, id) == "cancelled");
}

BOOST_AUTO_TEST_CASE(a_slow_steps_start_shows_while_it_runs_and_each_failed_attempt_is_logged,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> calls{0};
  add_workflow(e, "slow", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto flaky = [&]() -> int {
      if (++calls < 3) throw std::runtime_error("try again");
      return 1;
    };
    step_options retry;
    retry.retry.max_attempts = 3;
    retry.retry.initial_delay = 10ms;
    co_await ctx.step("flaky", flaky, retry);
    auto slow = [&]() -> asio::awaitable<int> {
      co_await async_sleep(600ms);
      co_return 2;
    };
    co_await ctx.step("slow", slow);
    co_return json::value(true);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto s = e.stream_blocking().value();
  auto id = e.enqueue_blocking("slow", json::object{}).value();
  std::vector<std::string> seen;
  std::optional<std::chrono::steady_clock::time_point> slow_started;
  while (seen.empty() || seen.back() != "run_completed") {
    auto ev = pull(s, 10s);
    BOOST_REQUIRE(ev);
    std::string k(ev->kind());
    if (const auto* r = ev->as<events::step_retrying>()) {
      k.append(":").append(std::to_string(r->attempt));
      BOOST_TEST(r->error == "try again");
      BOOST_TEST(r->name == "flaky");
    }
    if (const auto* st = ev->as<events::step_started>()) {
      k.append(":").append(st->name);
      if (st->name == "slow") slow_started = std::chrono::steady_clock::now();
    }
    if (ev->as<events::step_completed>() && ev->as<events::step_completed>()->name == "slow") {
      // The slow step's start arrived while it ran, well before its end.
      BOOST_REQUIRE(slow_started);
      BOOST_TEST((std::chrono::steady_clock::now() - *slow_started > 300ms));
    }
    seen.push_back(std::move(k));
  }
  std::string all;
  for (const auto& k : seen)
    all.append(k).append(",");
  BOOST_TEST(all ==
             "run_enqueued,run_started,step_started:flaky,step_retrying:1,step_retrying:2,step_completed,"
             "step_started:slow,step_completed,run_completed,");
}

BOOST_AUTO_TEST_CASE(a_bounded_stream_pauses_the_engine_until_its_consumer_pulls, *utf::timeout(120)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_counter(e, 40);
  BOOST_REQUIRE(e.start_blocking());
  stream_options o;
  o.buffer_size = 3;
  auto s = e.stream_blocking(o).value();
  auto id = e.enqueue_blocking("count", json::object{}).value();
  // Nobody pulls: the run stops a step or two after 3 events are buffered, and stays stopped.
  std::this_thread::sleep_for(1s);
  const auto paused_at = steps_done(e, id);
  BOOST_TEST(paused_at <= 8u);  // the follower's lag lets a few more through
  std::this_thread::sleep_for(500ms);
  BOOST_TEST(steps_done(e, id) == paused_at);
  BOOST_TEST(s.buffered() >= 3u);
  BOOST_TEST(status_of(e, id) == "running");
  // Pulling lets it go on, to the end.
  auto got = pull_until(s, id, "run_completed", 30s);
  BOOST_TEST(got.size() == 83u);  // enqueued, started, 40 steps' starts and ends, completed
  BOOST_TEST(status_of(e, id) == "completed");
}

BOOST_AUTO_TEST_CASE(a_rendezvous_stream_lets_the_engine_go_on_only_while_its_consumer_waits,
                     *utf::timeout(120)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_counter(e, 10);
  BOOST_REQUIRE(e.start_blocking());
  stream_options o;
  o.buffer_size = 0;
  auto s = e.stream_blocking(o).value();
  auto id = e.enqueue_blocking("count", json::object{}).value();
  // Nobody waits in next(): nothing is claimed at all.
  std::this_thread::sleep_for(700ms);
  BOOST_TEST(status_of(e, id) == "queued");
  // A consumer that pulls one event at a time, with a pause after each: the engine follows its pace.
  std::vector<std::string> kinds;
  while (kinds.empty() || kinds.back() != "run_completed") {
    auto ev = pull(s, 10s);
    BOOST_REQUIRE(ev);
    kinds.emplace_back(ev->kind());
    const auto done = steps_done(e, id);
    std::this_thread::sleep_for(50ms);
    BOOST_TEST(steps_done(e, id) <= done + 1);  // at most the unit of work already under way
  }
  BOOST_TEST(kinds.size() == 23u);
}

BOOST_AUTO_TEST_CASE(a_stalled_consumer_never_costs_a_lease_and_cancel_stop_or_unsubscribe_release_it,
                     *utf::timeout(120)) {
  auto db = fresh_database();
  engine e(options_for(db, 1s));
  add_counter(e, 50);
  // The runs that must stall are long, so that no delay of the follower (a loaded machine) lets one finish
  // before its first event reaches the stream and the engine pauses.
  constexpr int k_long = 2000;
  add_workflow(e, "long", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    for (int i = 0; i < k_long; ++i) {
      auto step = [i] { return i; };
      co_await ctx.step("s" + std::to_string(i), step);
    }
    co_return json::value(k_long);
  });
  BOOST_REQUIRE(e.start_blocking());
  stream_options o;
  o.buffer_size = 1;
  auto s = e.stream_blocking(o).value();
  auto a = e.enqueue_blocking("long", json::object{}).value();
  // Paused three leases long: the heartbeat keeps the lease, nobody reclaims it.
  BOOST_REQUIRE(wait_until([&] { return s.buffered() >= 1; }, 10s));
  std::this_thread::sleep_for(3s);
  auto held = e.get_blocking(a).value();
  BOOST_TEST(to_string(held.status) == "running");
  BOOST_TEST(held.owner.value_or("") == e.worker_id());
  BOOST_TEST(held.claims == 1);
  BOOST_TEST(held.recoveries == 0);
  // A cancel releases the paused run, whatever the consumer does.
  BOOST_REQUIRE(e.cancel_blocking(a));
  auto ended = e.wait_blocking(a, 10s);
  BOOST_REQUIRE(ended);
  BOOST_TEST(to_string(ended->status) == "cancelled");
  // The stream is still full: the next run waits; destroying the stream unsubscribes it and lets it go.
  auto b = e.enqueue_blocking("count", json::object{}).value();
  std::this_thread::sleep_for(500ms);
  BOOST_TEST(steps_done(e, b) == 0u);
  s = event_stream{};
  BOOST_REQUIRE(e.wait_blocking(b, 30s));
  // A stop ends a stalled stream and does not wait for its consumer.
  auto s2 = e.stream_blocking(o).value();
  auto c = e.enqueue_blocking("long", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return s2.buffered() >= 1; }, 10s));
  std::this_thread::sleep_for(300ms);
  const auto held_at = steps_done(e, c);
  BOOST_TEST_MESSAGE("c paused after " << held_at << " steps, " << s2.buffered() << " events buffered");
  BOOST_TEST(held_at < static_cast<std::size_t>(k_long));
  const auto t0 = std::chrono::steady_clock::now();
  e.stop_blocking(10s);
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < 5s));
  std::size_t rest = 0;
  while (pull(s2, 2s))
    ++rest;
  BOOST_TEST(rest >= 1u);
  BOOST_TEST(!pull(s2, 100ms));             // ended
  BOOST_TEST(status_of(e, c) == "queued");  // handed back for another worker
}

BOOST_AUTO_TEST_CASE(step_middleware_observes_steps_and_waits_and_one_that_throws_changes_nothing,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  auto o = options_for(db);
  std::mutex m;
  std::vector<std::string> calls;
  auto note = [&](std::string s) {
    std::lock_guard lock(m);
    calls.push_back(std::move(s));
  };
  step_middleware recorder;
  recorder.before_step = [&](const step_info& i) {
    note("before:" + i.step + ":" + std::to_string(i.attempt));
  };
  recorder.on_step_error = [&](const step_info& i, std::string_view error, bool again) {
    note("error:" + i.step + ":" + std::string(error) + (again ? ":again" : ":final"));
  };
  recorder.after_step = [&](const step_info& i, const json::value& output, std::chrono::microseconds took) {
    note("after:" + i.step + ":" + json::serialize(output));
    BOOST_TEST(took.count() >= 0);
  };
  recorder.on_wait = [&](const run_id&, const std::string& workflow, std::string_view what) {
    note("wait:" + workflow + ":" + std::string(what));
  };
  step_middleware thrower;
  thrower.before_step = [](const step_info&) { throw std::runtime_error("middleware bug"); };
  thrower.after_step = [](const step_info&, const json::value&, std::chrono::microseconds) {
    throw std::runtime_error("middleware bug");
  };
  thrower.on_step_error = [](const step_info&, std::string_view, bool) { throw 42; };
  thrower.on_wait = [](const run_id&, const std::string&, std::string_view) {
    throw std::runtime_error("bug");
  };
  o.middleware = {thrower, recorder};
  engine e(o);
  std::atomic<int> tries{0};
  add_workflow(e, "observed", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto flaky = [&]() -> int {
      if (++tries == 1) throw std::runtime_error("first");
      return 7;
    };
    step_options retry;
    retry.retry.initial_delay = 1ms;
    auto a = co_await ctx.step("a", flaky, retry);
    auto go = co_await ctx.wait_for_event("go");
    co_return json::value{{"a", a}, {"go", *go}};
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("observed", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, id) == "waiting"; }, 10s));
  BOOST_REQUIRE(e.send_event_blocking(id, "go", json::value(1)));
  auto done = e.wait_blocking(id, 10s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  std::string all;
  for (const auto& c : calls)
    all.append(c).append(",");
  // Replayed steps are not reported (the second execution replays "a").
  BOOST_TEST(all == "before:a:1,error:a:first:again,before:a:2,after:a:7,wait:observed:go,");
}

BOOST_AUTO_TEST_CASE(event_hooks_get_each_runs_events_in_order_and_one_that_throws_is_ignored,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  auto o = options_for(db);
  std::mutex m;
  std::map<run_id, std::vector<std::int64_t>> seen;
  std::atomic<int> calls{0};
  o.hooks.push_back([&](const stream_event& ev) -> asio::awaitable<void> {
    // Slow, and slower for some events: a run's later event must still wait for its earlier one.
    co_await async_sleep(std::chrono::milliseconds(ev.id % 7));
    if (ev.id == 0) co_return;  // frames
    std::lock_guard lock(m);
    seen[ev.run].push_back(ev.id);
  });
  o.hooks.push_back([&](const stream_event&) -> asio::awaitable<void> {
    ++calls;
    throw std::runtime_error("hook bug");
    co_return;
  });
  engine e(o);
  add_counter(e, 5);
  BOOST_REQUIRE(e.start_blocking());
  std::this_thread::sleep_for(200ms);  // the hooks' stream opens with the engine
  std::vector<run_id> ids;
  for (int i = 0; i < 4; ++i)
    ids.push_back(e.enqueue_blocking("count", json::object{}).value());
  for (const auto& id : ids)
    BOOST_REQUIRE(e.wait_blocking(id, 20s));
  for (const auto& id : ids) {
    read_log_options ro;
    ro.run = id;
    std::vector<std::int64_t> logged;
    const auto page = e.read_log_blocking(0, ro);
    BOOST_REQUIRE(page);
    for (const auto& ev : page->events)
      logged.push_back(ev.pos);
    BOOST_REQUIRE(wait_until(
        [&] {
          std::lock_guard lock(m);
          return seen[id].size() >= logged.size();
        },
        10s));
    std::lock_guard lock(m);
    BOOST_TEST(seen[id] == logged);
  }
  BOOST_TEST(calls.load() >= 4 * 13);
}

BOOST_AUTO_TEST_SUITE_END()
