// Durable output streams against a real PostgreSQL: chunks read from any index and followed live; a
// retried attempt's or a lost execution's chunks replaced (or removed when the redo writes none), with a
// live reader told what it read was replaced; generations appending to one stream.
#define BOOST_TEST_MODULE output_stream
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <mutex>
#include <thread>
#include <vector>

#include "engine_fixture.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace {

/// A chunk as text: "index=json", or "rewind@index".
std::string text_of(const output_chunk& c) {
  if (c.rewound) return "rewind@" + std::to_string(c.index);
  return std::to_string(c.index) + "=" + json::serialize(c.data);
}

/// Every chunk of a reader until it ends, as (index, chunk) text.
/// `ended`: where to say whether the reader ended (from a thread other than the test's: Boost.Test
/// checks are not thread-safe); without it, a reader that did not end fails the test.
std::vector<std::string> read_all(output_reader& r, std::chrono::milliseconds limit = 20s,
                                  bool* ended_out = nullptr) {
  std::vector<std::string> out;
  auto ended = std::make_shared<bool>(false);
  auto out_ptr = std::make_shared<std::vector<std::string>>();
  auto io = std::make_unique<asio::io_context>();
  asio::co_spawn(
      *io,
      [&r, ended, out_ptr]() -> asio::awaitable<void> {
        while (auto c = co_await r.next())
          out_ptr->push_back(text_of(*c));
        *ended = true;
      },
      asio::detached);
  io->run_for(limit);
  // A reader that did not end in time is a failure; its read is still pending, so its io_context is left
  // alive (a completion posted to a destroyed one would crash the test instead of failing it).
  if (ended_out != nullptr) {
    *ended_out = *ended;
  } else {
    BOOST_TEST(*ended, "the reader did not end within " << limit.count() << " ms");
  }
  if (!*ended) (void)io.release();
  out = *out_ptr;
  return out;
}

/// Collects a reader's chunks on a thread of its own, as they come.
class live_reader {
 public:
  explicit live_reader(output_reader r) : reader_(std::move(r)), thread_([this] { run(); }) {}
  ~live_reader() { thread_.join(); }
  std::vector<std::string> got() {
    std::lock_guard lock(m_);
    return got_;
  }
  std::size_t count() { return got().size(); }
  bool ended() { return ended_.load(); }

 private:
  void run() {
    asio::io_context io;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          while (auto c = co_await reader_.next()) {
            std::lock_guard lock(m_);
            got_.push_back(text_of(*c));
          }
          ended_ = true;
        },
        asio::detached);
    io.run_for(60s);
  }

  output_reader reader_;
  std::mutex m_;
  std::vector<std::string> got_;
  std::atomic<bool> ended_{false};
  std::thread thread_;
};

std::string joined(const std::vector<std::string>& v) {
  std::string all;
  for (const auto& s : v)
    all.append(s).append(",");
  return all;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(an_output_stream_is_read_from_any_index_and_followed_live_until_closed,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "tokens", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto out = ctx.stream("tokens");
    auto first = [&]() -> asio::awaitable<int> {
      for (int i = 0; i < 50; ++i)
        co_await out.write(json::value("t" + std::to_string(i)));
      co_return 50;
    };
    co_await ctx.step("first", first);
    co_await ctx.wait_for_event("more");
    auto second = [&]() -> asio::awaitable<int> {
      for (int i = 50; i < 100; ++i)
        co_await out.write(json::value("t" + std::to_string(i)));
      co_return 50;
    };
    co_await ctx.step("second", second);
    co_await out.close();
    co_return json::value(100);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("tokens", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, id) == "waiting"; }, 10s));
  // A reader that starts now gets the 50 written, then follows until the close.
  auto live = e.read_stream_blocking(id, "tokens").value();
  std::vector<std::string> got;
  bool live_ended = false;
  std::thread reader([&] { got = read_all(live, 20s, &live_ended); });
  std::this_thread::sleep_for(300ms);
  BOOST_REQUIRE(e.send_event_blocking(id, "more", json::value(true)));
  reader.join();
  BOOST_TEST(live_ended);
  BOOST_REQUIRE(got.size() == 100u);
  for (int i = 0; i < 100; ++i)
    BOOST_TEST(got[i] == std::to_string(i) + "=\"t" + std::to_string(i) + "\"");
  // Reconnecting at 73 gets 73 next; a finished run's stream ends after its last chunk.
  auto again = e.read_stream_blocking(id, "tokens", 73).value();
  auto rest = read_all(again);
  BOOST_REQUIRE(rest.size() == 27u);
  BOOST_TEST(rest.front() == "73=\"t73\"");
  // Typed errors for bad arguments; an unknown stream of a finished run is simply empty.
  BOOST_TEST((e.read_stream_blocking("nope", "tokens").error() == errc::invalid_run_id));
  BOOST_TEST(!e.read_stream_blocking(id, std::string(300, 'x')));
  BOOST_TEST(!e.read_stream_blocking(id, "tokens", -1));
  auto none = e.read_stream_blocking(id, "other").value();
  BOOST_TEST(read_all(none).empty());
}

BOOST_AUTO_TEST_CASE(chunks_of_a_failed_attempt_or_a_lost_execution_are_replaced_not_duplicated,
                     *utf::timeout(90)) {
  auto db = fresh_database();
  std::atomic<int> attempts{0};
  std::atomic<bool> hang{true};
  auto body = [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto out = ctx.stream("log");
    co_await out.write(json::value("start"));  // the workflow's own code: once, not again on replay
    auto a = [&]() -> asio::awaitable<int> {
      co_await out.write(json::value("a1"));
      co_await out.write(json::value("a2"));
      co_return 1;
    };
    co_await ctx.step("a", a);
    auto b = [&]() -> asio::awaitable<int> {
      const int n = ++attempts;
      co_await out.write(json::value("b" + std::to_string(n)));
      if (n == 1) throw std::runtime_error("first attempt fails");  // its chunk is replaced by the retry's
      if (n == 2 && hang) {
        co_await out.flush();  // durable, then this execution is lost
        co_await async_sleep(60s);
      }
      co_return n;
    };
    step_options retry;
    retry.retry.initial_delay = 1ms;
    co_await ctx.step("b", b, retry);
    co_await out.close();
    co_return json::value(true);
  };
  run_id id;
  {
    engine first(options_for(db, 1s));
    add_workflow(first, "w", body);
    BOOST_REQUIRE(first.start_blocking());
    id = first.enqueue_blocking("w", json::object{}).value();
    BOOST_REQUIRE(wait_until([&] { return attempts.load() >= 2; }, 10s));
    std::this_thread::sleep_for(300ms);
    first.stop_blocking(100ms);  // the hung execution is abandoned; its lease lapses
  }
  hang = false;
  engine second(options_for(db, 1s));
  add_workflow(second, "w", body);
  BOOST_REQUIRE(second.start_blocking());
  auto done = second.wait_blocking(id, 30s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST_MESSAGE(
      "stored: " << query_value(db,
                                "SELECT string_agg(idx || ':' || data::text || ':' || epoch || ':' || seq || "
                                "':' || attempt, ' ' ORDER BY idx) FROM keel.output_chunks"));
  auto reader = second.read_stream_blocking(id, "log").value();
  const auto chunks = read_all(reader);
  std::string all;
  for (const auto& c : chunks)
    all.append(c).append(",");
  // start, step a's two chunks, then step b's from the execution that completed it (attempt 3).
  BOOST_TEST(all == "0=\"start\",1=\"a1\",2=\"a2\",3=\"b3\",");
}

BOOST_AUTO_TEST_CASE(each_generation_appends_to_the_stream_and_a_redone_close_is_reopened,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "gens", [](context& ctx, json::value in) -> asio::awaitable<json::value> {
    auto out = ctx.stream("out");
    const auto n = in.as_int64();
    co_await out.write(json::value("g" + std::to_string(n)));
    co_await out.close();  // each generation closes; the next one reopens it
    if (n < 2) {
      json::value next(n + 1);
      co_await ctx.continue_as_new(next);
    }
    co_return json::value(n);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("gens", json::value(0)).value();
  auto done = e.wait_blocking(id, 20s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  auto reader = e.read_stream_blocking(id, "out").value();
  const auto chunks = read_all(reader);
  std::string all;
  for (const auto& c : chunks)
    all.append(c).append(",");
  BOOST_TEST(all == "0=\"g0\",1=\"g1\",2=\"g2\",");
}

BOOST_AUTO_TEST_CASE(
    a_retry_that_writes_nothing_removes_its_failed_attempts_chunks_and_a_live_reader_hears_of_it,
    *utf::timeout(60)) {
  auto db = fresh_database();
  std::atomic<int> attempts{0};
  std::atomic<bool> release{false};
  engine e(options_for(db));
  add_workflow(e, "w", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto out = ctx.stream("s");
    co_await out.write(json::value("start"));
    auto a = [&]() -> asio::awaitable<int> {
      if (++attempts == 1) {
        co_await out.write(json::value("a1"));
        co_await out.write(json::value("a2"));
        co_await out.flush();  // durable and read live; then this attempt fails
        while (!release)
          co_await async_sleep(5ms);
        throw std::runtime_error("first attempt fails");
      }
      co_return 2;  // the retry writes nothing
    };
    step_options retry;
    retry.retry.initial_delay = 1ms;
    co_await ctx.step("a", a, retry);
    auto b = [&]() -> asio::awaitable<int> {
      co_await out.write(json::value("b"));
      co_return 1;
    };
    co_await ctx.step("b", b);
    co_await out.close();
    co_return json::value(true);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("w", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return attempts.load() == 1; }, 10s));
  live_reader live(e.read_stream_blocking(id, "s").value());
  BOOST_REQUIRE(wait_until([&] { return live.count() == 3; }, 10s));
  release = true;
  auto done = e.wait_blocking(id, 20s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  wait_until([&] { return live.count() >= 5; }, 10s);
  // The live reader read the failed attempt's chunks, heard they were replaced, then got what replaced them.
  BOOST_TEST(joined(live.got()) == "0=\"start\",1=\"a1\",2=\"a2\",rewind@1,1=\"b\",");
  BOOST_TEST(wait_until([&] { return live.ended(); }, 10s));  // closed
  auto after = e.read_stream_blocking(id, "s").value();
  BOOST_TEST(joined(read_all(after)) == "0=\"start\",1=\"b\",");
  // The removal is in the run's log, in the transaction that made it.
  read_log_options o;
  o.run = id;
  auto log = e.read_log_blocking(0, o).value();
  int rewinds = 0;
  for (const auto& ev : log.events) {
    if (ev.kind != "stream_rewound") continue;
    ++rewinds;
    BOOST_TEST((ev.data == json::object{{"stream", "s"}, {"from", 1}}));
  }
  BOOST_TEST(rewinds == 1);
}

BOOST_AUTO_TEST_CASE(a_lost_executions_chunks_go_when_the_redo_writes_none_and_readers_elsewhere_follow,
                     *utf::timeout(90)) {
  auto db = fresh_database();
  std::atomic<bool> first_execution{true};
  std::atomic<int> b_runs{0};
  auto body = [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto out = ctx.stream("log");
    co_await out.write(json::value("start"));  // replayed in the second execution: not written again
    auto a = [] { return 1; };
    co_await ctx.step("a", a);
    auto b = [&]() -> asio::awaitable<int> {
      ++b_runs;
      if (first_execution) {
        co_await out.write(json::value("x1"));
        co_await out.write(json::value("x2"));
        co_await out.flush();
        co_await async_sleep(60s);  // this execution is lost here
      }
      co_return 2;
    };
    co_await ctx.step("b", b);
    co_return json::value(true);
  };
  // A reader on a third engine (it runs no workflow) follows the stream across both executions.
  engine watcher(options_for(db));
  BOOST_REQUIRE(watcher.start_blocking());
  run_id id;
  std::unique_ptr<live_reader> live;
  {
    engine first(options_for(db, 1s));
    add_workflow(first, "w", body);
    BOOST_REQUIRE(first.start_blocking());
    id = first.enqueue_blocking("w", json::object{}).value();
    live = std::make_unique<live_reader>(watcher.read_stream_blocking(id, "log").value());
    BOOST_REQUIRE(wait_until([&] { return live->count() == 3; }, 10s));
    first.stop_blocking(100ms);  // the hung execution is abandoned; its lease lapses
  }
  first_execution = false;
  engine second(options_for(db, 1s));
  add_workflow(second, "w", body);
  BOOST_REQUIRE(second.start_blocking());
  auto done = second.wait_blocking(id, 30s);
  BOOST_REQUIRE(done);
  BOOST_TEST(to_string(done->status) == "completed");
  BOOST_TEST(b_runs.load() == 2);
  BOOST_REQUIRE(wait_until([&] { return live->count() == 4; }, 10s));
  BOOST_TEST(joined(live->got()) == "0=\"start\",1=\"x1\",2=\"x2\",rewind@1,");
  BOOST_REQUIRE(wait_until([&] { return live->ended(); }, 10s));  // the run has ended, all was read
  live.reset();
  auto after = second.read_stream_blocking(id, "log").value();
  BOOST_TEST(joined(read_all(after)) == "0=\"start\",");
  BOOST_TEST(query_value(db, "SELECT count(*) FROM keel.output_chunks") == "1");
}

BOOST_AUTO_TEST_CASE(a_later_generation_that_writes_nothing_leaves_a_closed_stream_closed,
                     *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "gens", [](context& ctx, json::value in) -> asio::awaitable<json::value> {
    auto out = ctx.stream("out");
    if (in.as_int64() == 0) {
      co_await out.write(json::value("g0"));
      co_await out.close();
      json::value next(1);
      co_await ctx.continue_as_new(next);
    }
    auto step = [] { return 1; };  // a record of new work, with the stream open and nothing written
    co_await ctx.step("s", step);
    co_await ctx.wait_for_event("go");
    co_return json::value(true);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("gens", json::value(0)).value();
  BOOST_REQUIRE(wait_until([&] { return status_of(e, id) == "waiting"; }, 10s));
  // The run waits: only the close can end this reader.
  auto reader = e.read_stream_blocking(id, "out").value();
  BOOST_TEST(joined(read_all(reader, 5s)) == "0=\"g0\",");
  BOOST_TEST(query_value(db, "SELECT closed FROM keel.output_streams") == "t");
}

BOOST_AUTO_TEST_CASE(a_read_cut_short_by_a_timer_loses_nothing, *utf::timeout(90)) {
  // A reader racing every next() against a short timer (as an SSE heartbeat does): whichever wins, each
  // chunk comes exactly once, in order. (Mutation: a cancelled call that returns a chunk it read loses it.)
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "drip", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto out = ctx.stream("drip");
    for (int i = 0; i < 300; ++i) {
      auto write = [&out, i]() -> asio::awaitable<int> {
        co_await out.write(json::value(i));
        co_await out.flush();
        co_return i;
      };
      co_await ctx.step("w" + std::to_string(i), write);
    }
    co_await out.close();
    co_return json::value(300);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("drip", json::object{}).value();
  auto reader = e.read_stream_blocking(id, "drip").value();
  auto got = std::make_shared<std::vector<std::int64_t>>();
  auto timeouts = std::make_shared<int>(0);
  auto ended = std::make_shared<bool>(false);
  auto io = std::make_unique<asio::io_context>();
  asio::co_spawn(
      *io,
      [&reader, got, timeouts, ended]() -> asio::awaitable<void> {
        using namespace asio::experimental::awaitable_operators;
        int round = 0;
        for (;;) {
          asio::steady_timer t(co_await asio::this_coro::executor,
                               std::chrono::microseconds(200 * (++round % 7)));
          auto next = reader.next();
          auto r = co_await (std::move(next) || t.async_wait(asio::as_tuple(asio::use_awaitable)));
          if (r.index() == 1) {
            ++*timeouts;
            continue;
          }
          auto& c = std::get<0>(r);
          if (!c) break;
          got->push_back(c->rewound ? -1 : c->index);
        }
        *ended = true;
      },
      asio::detached);
  io->run_for(60s);
  BOOST_REQUIRE(*ended);
  BOOST_TEST_MESSAGE("reads cut short: " << *timeouts);
  BOOST_TEST(*timeouts > 0);
  BOOST_REQUIRE(got->size() == 300u);
  for (std::int64_t i = 0; i < 300; ++i)
    BOOST_TEST((*got)[i] == i);
}

BOOST_AUTO_TEST_SUITE_END()
