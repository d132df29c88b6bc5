// Hardening against poisoned writes, refused writes, versions, overlapping steps, session settings, bounded
// stops and stale heartbeats, against a real PostgreSQL.
#define BOOST_TEST_MODULE hardening
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <deque>
#include <map>
#include <mutex>

#include "engine_fixture.hpp"
#include "keel/storage/json_limits.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace {

using steady = std::chrono::steady_clock;

/// `depth` arrays nested in one another, built without recursion. Destroy it with storage::destroy_deep:
/// the destructor of a value this deep recurses past the stack.
json::value nested(std::size_t depth) {
  json::value v = json::array();
  for (std::size_t i = 1; i < depth; ++i) {
    json::array outer;
    outer.push_back(std::move(v));
    v = json::value(std::move(outer));
  }
  return v;
}

long as_long(const std::string& text) {
  return std::stol(text);
}

/// Runs a storage coroutine to completion on `ioc` (for store-level tests without an engine).
template <class T>
T run_on(asio::io_context& ioc, asio::awaitable<T> aw) {
  auto f = asio::co_spawn(ioc, std::move(aw), asio::use_future);
  ioc.restart();
  ioc.run();
  return f.get();
}

/// One enqueue of a concurrent storm, and what came of it.
struct enqueue_slot {
  std::string workflow;
  const json::value* input = nullptr;  // owned by the test: a deep input must never be copied
  enqueue_options options;
  std::optional<error_code> expected_error;  // empty: must succeed
  result<run_id> outcome{errc::run_not_found};
  steady::duration latency{};
};

asio::awaitable<void> enqueue_into(engine& e, enqueue_slot& slot, steady::time_point spawned) {
  auto pending = e.enqueue(slot.workflow, *slot.input, slot.options);
  slot.outcome = co_await std::move(pending);
  slot.latency = steady::now() - spawned;
}

/// The enqueues of a storm and the inputs they point to. Declare it before the engine: the engine's
/// coroutines must be gone before it is.
struct storm {
  std::deque<json::value> inputs;  // a deque: slots keep pointing at their inputs as it grows
  std::deque<enqueue_slot> slots;

  storm() = default;
  storm(const storm&) = delete;
  storm& operator=(const storm&) = delete;
  ~storm() {
    // Inputs nested deeper than the stack allows cannot go through the recursive destructor.
    for (auto& v : inputs)
      storage::destroy_deep(std::move(v));
  }

  enqueue_slot& add(std::string workflow, json::value input, std::optional<error_code> expected = {},
                    enqueue_options options = {}) {
    inputs.push_back(std::move(input));
    auto& s = slots.emplace_back();
    s.workflow = std::move(workflow);
    s.input = &inputs.back();
    s.options = std::move(options);
    s.expected_error = expected;
    return s;
  }

  /// Starts every enqueue at once on the engine's threads, so that good and bad writes meet in the same
  /// group-commit batches; false when they did not all complete within `timeout`.
  bool run(engine& e, std::chrono::milliseconds timeout) {
    struct tally {
      std::atomic<std::size_t> done{0}, crashed{0};
    };
    // Shared: on a timeout this returns while handlers may still run.
    auto t = std::make_shared<tally>();
    const auto spawned = steady::now();
    for (auto& slot : slots) {
      asio::co_spawn(e.get_executor(), enqueue_into(e, slot, spawned), [t](std::exception_ptr ex) {
        if (ex) ++t->crashed;
        ++t->done;
      });
    }
    const bool finished = wait_until([&] { return t->done.load() == slots.size(); }, timeout);
    BOOST_TEST(t->crashed.load() == 0u);
    return finished;
  }

  /// Every enqueue succeeded.
  bool all_enqueued() const {
    return std::all_of(slots.begin(), slots.end(), [](const enqueue_slot& s) { return bool(s.outcome); });
  }
};

/// How often each run's step function really ran, by run id.
struct execution_counter {
  std::mutex m;
  std::map<std::string, int> by_run;
  void add(const std::string& id) {
    std::lock_guard lock(m);
    ++by_run[id];
  }
  int of(const std::string& id) {
    std::lock_guard lock(m);
    auto it = by_run.find(id);
    return it == by_run.end() ? 0 : it->second;
  }
};

long runs_in(const std::string& db, const std::string& condition) {
  return as_long(query_value(db, "SELECT count(*) FROM keel.runs WHERE " + condition));
}

/// A workflow whose one step returns the input's "out" (so that a test decides which output is refused).
void add_echo_step(engine& e, execution_counter& calls) {
  add_workflow(e, "echo", [counter = &calls](context& ctx, json::value in) -> asio::awaitable<json::value> {
    auto emit = [&] {
      counter->add(ctx.id());
      return in.at("out");
    };
    co_return co_await ctx.step("emit", emit);
  });
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(a_storm_of_poisoned_writes_fails_alone_while_a_thousand_runs_complete,
                     *utf::timeout(180)) {
  auto db = fresh_database();
  auto o = options_for(db);
  o.store.limits.max_bytes = 64 * 1024;
  storm st;
  execution_counter calls;
  engine e(o);
  add_workflow(e, "normal", [](context& ctx, json::value in) -> asio::awaitable<json::value> {
    const auto n = in.at("n").as_int64();
    auto add_one = [n] { return n + 1; };
    auto v = co_await ctx.step("add", add_one);
    co_return json::value{{"v", v}};
  });
  // Each kind is an output the store cannot take (or, for "throw", a failure message that is not UTF-8).
  add_workflow(e, "bad_step", [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
    const std::string kind(in.at("kind").as_string());
    step_options so;
    so.retry.max_attempts = kind == "throw" ? 1 : 3;  // a refused output must not be retried either
    so.retry.initial_delay = 1ms;
    auto emit = [&]() -> json::value {
      calls.add(ctx.id());
      if (kind == "oversize") return json::value(std::string(100 * 1024, 'x'));
      if (kind == "deep") return nested(200'000);
      if (kind == "nul") return json::value(std::string("a\0b", 3));
      if (kind == "bad_utf8") return json::value(std::string("caf\xc3\x28"));
      if (kind == "throw") throw std::runtime_error(std::string("upstream said \xff\xfe\xc0 and hung up"));
      return json::value(1);  // "deep_result": the step is fine, the run's own output is not
    };
    co_await ctx.step("emit", emit, so);
    if (kind == "deep_result") co_return nested(200'000);
    co_return nullptr;
  });
  BOOST_REQUIRE(e.start_blocking());

  const std::vector<std::string> bad_kinds{"oversize", "deep", "nul", "bad_utf8", "throw", "deep_result"};
  for (int i = 0; i < 1'000; ++i) {
    st.add("normal", json::value{{"n", i}});
    if (i % 17 != 0) continue;
    switch ((i / 17) % 6) {
      case 0: {
        enqueue_options long_key;
        long_key.idempotency_key = std::string(3'000, 'k');
        st.add("normal", json::value{{"n", -1}}, make_error_code(storage::errc::invalid_argument), long_key);
        break;
      }
      case 1:
        st.add("normal", json::value(std::string(100 * 1024, 'y')),
               make_error_code(storage::errc::payload_too_large));
        break;
      case 2:
        st.add("normal", nested(1'000), make_error_code(storage::errc::payload_too_deep));
        break;
      case 3:
        st.add("normal", nested(200'000), make_error_code(storage::errc::payload_too_deep));
        break;
      case 4:
        st.add("normal", json::value{{"s", std::string("nul\0inside", 10)}},
               make_error_code(storage::errc::invalid_argument));
        break;
      case 5:
        st.add("normal", json::value{{"s", std::string("\xed\xa0\x80 surrogate")}},
               make_error_code(storage::errc::invalid_argument));
        break;
    }
    st.add("bad_step", json::value{{"kind", bad_kinds[static_cast<std::size_t>(i / 17) % bad_kinds.size()]}});
  }

  const auto t0 = steady::now();
  BOOST_REQUIRE(st.run(e, 60s));
  std::vector<std::string> good, bad;
  auto max_latency = steady::duration::zero();
  for (const auto& s : st.slots) {
    if (s.expected_error) {
      BOOST_TEST(!s.outcome);
      if (!s.outcome) BOOST_TEST(s.outcome.error() == *s.expected_error, s.outcome.error().message());
      continue;
    }
    BOOST_REQUIRE_MESSAGE(s.outcome, s.outcome.error().message());
    (s.workflow == "normal" ? good : bad).push_back(*s.outcome);
    if (s.workflow == "normal") max_latency = std::max(max_latency, s.latency);
  }
  BOOST_TEST(good.size() == 1'000u);
  BOOST_TEST_MESSAGE("slowest normal enqueue: "
                     << std::chrono::duration_cast<std::chrono::milliseconds>(max_latency).count() << " ms");
  // Far below the 10 s request timeout: no enqueue waited behind a poisoned write.
  BOOST_TEST(std::chrono::duration_cast<std::chrono::milliseconds>(max_latency).count() < 5'000);

  const long total = static_cast<long>(good.size() + bad.size());
  BOOST_REQUIRE(
      wait_until([&] { return runs_in(db, "status IN ('completed', 'failed', 'cancelled')") == total; },
                 std::chrono::duration_cast<std::chrono::milliseconds>(60s - (steady::now() - t0))));
  BOOST_TEST((steady::now() - t0) < 60s);
  BOOST_TEST_MESSAGE("every run ended after "
                     << std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0).count()
                     << " ms");
  BOOST_TEST(runs_in(db,
                     "workflow = 'normal' AND status = 'completed' AND output = jsonb_build_object("
                     "'v', (input->>'n')::int + 1)") == 1'000);

  for (const auto& id : bad) {
    auto run = e.get_blocking(id);
    BOOST_REQUIRE(run);
    const std::string kind(run->input.at("kind").as_string());
    BOOST_TEST_CONTEXT("kind " << kind << ", run " << id) {
      BOOST_TEST(to_string(run->status) == "failed");
      BOOST_TEST(calls.of(id) == 1);
      BOOST_REQUIRE(run->error.is_object());
      const std::string code(run->error.at("code").as_string());
      BOOST_TEST(code == (kind == "throw" ? "step_failed" : "output_rejected"));
      const std::string message(run->error.at("message").as_string());
      BOOST_TEST(storage::is_valid_utf8(message));
      if (kind == "throw") BOOST_TEST(message.find("upstream said") != std::string::npos);
      BOOST_REQUIRE_EQUAL(run->steps.size(), 1u);
      BOOST_TEST(run->steps[0].failed == (kind != "deep_result"));
    }
  }
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(an_output_the_database_refuses_fails_its_run_alone_while_others_complete,
                     *utf::timeout(120)) {
  auto db = fresh_database();
  storm st;
  execution_counter calls;
  engine e(options_for(db));
  add_echo_step(e, calls);
  BOOST_REQUIRE(e.tick_blocking());  // migrates
  // Not a limit the store checks: only the database knows. P0001 is an error that retrying cannot cure.
  query_value(db, R"sql(
CREATE FUNCTION public.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.output = '"poison"'::jsonb THEN RAISE EXCEPTION 'poisoned output refused'; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT ON keel.steps
  FOR EACH ROW EXECUTE FUNCTION public.refuse_poison();)sql");
  BOOST_REQUIRE(e.start_blocking());

  for (int i = 0; i < 201; ++i)
    st.add("echo", i == 100 ? json::value{{"out", "poison"}} : json::value{{"out", i}});
  const auto t0 = steady::now();
  BOOST_REQUIRE(st.run(e, 30s));
  BOOST_REQUIRE(st.all_enqueued());
  const auto poison = *st.slots[100].outcome;

  auto run = e.wait_blocking(poison, 30s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "failed");
  BOOST_TEST(run->error.at("code").as_string() == "output_rejected");
  BOOST_TEST(calls.of(poison) == 1);
  BOOST_REQUIRE_EQUAL(run->steps.size(), 1u);
  BOOST_TEST(run->steps[0].failed);
  BOOST_TEST(run->steps[0].output.is_null());
  BOOST_TEST(wait_until([&] { return runs_in(db, "status = 'completed'") == 200; }, 30s));
  BOOST_TEST((steady::now() - t0) < 30s);
  BOOST_TEST(runs_in(db, "status = 'failed'") == 1);
}

BOOST_AUTO_TEST_CASE(a_step_name_the_database_refuses_fails_its_run_instead_of_rerunning_the_step,
                     *utf::timeout(120)) {
  // The checkpoint is refused, and so is the failure record that replaces it (it carries the same name):
  // the run must still end, failed, without its step running again.
  auto db = fresh_database();
  storm st;
  std::atomic<int> poison_calls{0}, normal_calls{0};
  engine e(options_for(db, 1s));  // a short lease: a run wrongly left to lapse is reclaimed quickly
  add_workflow(e, "named", [&](context& ctx, json::value in) -> asio::awaitable<json::value> {
    const std::string name(in.at("step").as_string());
    auto emit = [&] { return name == "poison" ? ++poison_calls : ++normal_calls; };
    co_return co_await ctx.step(name, emit);
  });
  BOOST_REQUIRE(e.tick_blocking());
  query_value(db, "ALTER TABLE keel.steps ADD CONSTRAINT no_poison CHECK (name <> 'poison')");
  BOOST_REQUIRE(e.start_blocking());

  for (int i = 0; i < 21; ++i)
    st.add("named", json::value{{"step", i == 10 ? "poison" : "fine"}});
  BOOST_REQUIRE(st.run(e, 30s));
  BOOST_REQUIRE(st.all_enqueued());
  auto run = e.wait_blocking(*st.slots[10].outcome, 30s);
  BOOST_REQUIRE_MESSAGE(run, "the poisoned run never ended: " << run.error().message());
  BOOST_TEST(to_string(run->status) == "failed");
  BOOST_TEST(run->error.at("code").as_string() == "output_rejected");
  BOOST_TEST(poison_calls == 1);
  BOOST_TEST(wait_until([&] { return runs_in(db, "status = 'completed'") == 20; }, 30s));
  BOOST_TEST(normal_calls == 20);
}

BOOST_AUTO_TEST_CASE(a_statement_timeout_fails_the_write_instead_of_retrying_it_forever, *utf::timeout(120)) {
  auto db = fresh_database();
  auto o = options_for(db);
  o.store.statement_timeout = 500ms;
  storm st;
  execution_counter calls;
  engine e(o);
  add_echo_step(e, calls);
  BOOST_REQUIRE(e.tick_blocking());
  // Every attempt to write this output outlives the statement timeout.
  query_value(db, R"sql(
CREATE FUNCTION public.stall_slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.output = '"slow"'::jsonb THEN PERFORM pg_sleep(5); END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER stall_slow BEFORE INSERT ON keel.steps FOR EACH ROW EXECUTE FUNCTION public.stall_slow();)sql");
  BOOST_REQUIRE(e.start_blocking());

  for (int i = 0; i < 51; ++i)
    st.add("echo", i == 25 ? json::value{{"out", "slow"}} : json::value{{"out", i}});
  const auto t0 = steady::now();
  BOOST_REQUIRE(st.run(e, 30s));
  BOOST_REQUIRE(st.all_enqueued());
  const auto slow = *st.slots[25].outcome;
  auto run = e.wait_blocking(slow, 30s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "failed");
  BOOST_TEST(run->error.at("code").as_string() == "output_rejected");
  BOOST_TEST(calls.of(slow) == 1);
  BOOST_TEST(wait_until([&] { return runs_in(db, "status = 'completed'") == 50; }, 30s));
  BOOST_TEST((steady::now() - t0) < 30s);
}

BOOST_AUTO_TEST_CASE(each_run_executes_the_body_of_its_own_workflow_version, *utf::timeout(60)) {
  auto db = fresh_database();
  engine worker(options_for(db));
  auto body_of = [](int version) {
    return [version](context& ctx, json::value) -> asio::awaitable<json::value> {
      auto which = [version] { return version; };
      auto v = co_await ctx.step("which", which);
      co_return json::value{{"ran", v}};
    };
  };
  add_workflow(worker, "wf", body_of(1), 1);
  add_workflow(worker, "wf", body_of(2), 2);
  BOOST_REQUIRE(worker.tick_blocking());  // migrates

  auto newest = worker.enqueue_blocking("wf", json::object{});
  BOOST_REQUIRE(newest);
  enqueue_options v1;
  v1.version = 1;
  auto pinned = worker.enqueue_blocking("wf", json::object{}, v1);
  BOOST_REQUIRE(pinned);
  BOOST_TEST(worker.tick_blocking().value() == 2u);
  auto r2 = worker.get_blocking(*newest).value();
  BOOST_TEST(r2.version == 2);
  BOOST_TEST(json::serialize(r2.output) == R"({"ran":2})");
  auto r1 = worker.get_blocking(*pinned).value();
  BOOST_TEST(r1.version == 1);
  BOOST_TEST(json::serialize(r1.output) == R"({"ran":1})");

  // A newer deployment enqueues version 3; this worker does not have it and must leave it alone.
  engine newer(options_for(db));
  add_workflow(newer, "wf", body_of(3), 3);
  auto v3 = newer.enqueue_blocking("wf", json::object{});
  BOOST_REQUIRE(v3);
  for (int cycle = 0; cycle < 3; ++cycle)
    BOOST_TEST(worker.tick_blocking().value() == 0u);
  auto queued = worker.get_blocking(*v3).value();
  BOOST_TEST(to_string(queued.status) == "queued");
  BOOST_TEST(queued.version == 3);
  BOOST_TEST(queued.claims == 0);

  // The record says why it waits: no live worker has version 3. A worker that runs version 2 makes a queued
  // version-2 run claimable, and stops counting once it stopped.
  engine live(options_for(db));
  add_workflow(live, "wf", body_of(1), 1);
  add_workflow(live, "wf", body_of(2), 2);
  BOOST_REQUIRE(live.start_blocking());
  auto waiting = live.get_blocking(*v3).value();
  BOOST_REQUIRE(waiting.unclaimable.has_value());
  BOOST_TEST(waiting.unclaimable->find("version 3") != std::string::npos);
  enqueue_options tomorrow;
  tomorrow.run_at = std::chrono::system_clock::now() + 24h;
  const auto later_v2 = live.enqueue_blocking("wf", json::object{}, tomorrow).value();
  auto later_record = live.get_blocking(later_v2).value();
  BOOST_TEST(to_string(later_record.status) == "queued");
  BOOST_TEST(!later_record.unclaimable.has_value());
  live.stop_blocking();
  BOOST_TEST(live.get_blocking(later_v2).value().unclaimable.has_value());

  enqueue_options v7;
  v7.version = 7;
  auto missing = worker.enqueue_blocking("wf", json::object{}, v7);
  BOOST_REQUIRE(!missing);
  BOOST_TEST(missing.error() == make_error_code(errc::unknown_workflow));
  BOOST_TEST(runs_in(db, "version = 7") == 0);
}

BOOST_AUTO_TEST_CASE(overlapping_steps_of_one_run_fail_it_with_concurrent_step, *utf::timeout(60)) {
  using namespace boost::asio::experimental::awaitable_operators;
  auto db = fresh_database();
  engine e(options_for(db));
  std::atomic<int> a_calls{0}, b_calls{0};
  add_workflow(e, "overlap", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    // Named first: GCC 12 destroys closure temporaries inside a co_await expression twice.
    auto fa = [&]() -> asio::awaitable<int> {
      ++a_calls;
      co_await async_sleep(200ms);
      co_return 1;
    };
    auto fb = [&] { return ++b_calls; };
    auto both = co_await (ctx.step("a", fa) && ctx.step("b", fb));
    co_return json::value(std::get<0>(both) + std::get<1>(both));
  });
  BOOST_REQUIRE(e.start_blocking());
  auto run = e.wait_blocking(e.enqueue_blocking("overlap", json::object{}).value(), 20s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "failed");
  BOOST_TEST(run->error.at("code").as_string() == "concurrent_step", json::serialize(run->error));
  BOOST_TEST(b_calls == 0);
}

BOOST_AUTO_TEST_CASE(store_sessions_pin_their_settings_whatever_the_database_defaults, *utf::timeout(60)) {
  auto db = fresh_database();
  {
    storage::store setup({db});
    BOOST_REQUIRE(setup.migrate_blocking());
  }
  const auto name = query_value(db, "SELECT current_database()");
  for (const char* setting :
       {"synchronous_commit = off", "statement_timeout = 0", "lock_timeout = 0",
        "idle_in_transaction_session_timeout = 0", "default_transaction_isolation = 'repeatable read'"}) {
    query_value(db, "ALTER DATABASE " + name + " SET " + setting);
  }
  BOOST_REQUIRE(query_value(db, "SHOW synchronous_commit") == "off");  // new sessions do get the defaults
  // The writer's own session reports its settings through a trigger on the table it checkpoints into.
  query_value(db, R"sql(
CREATE TABLE public.seen (settings text NOT NULL);
CREATE FUNCTION public.record_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.seen VALUES (concat_ws(' ', current_setting('synchronous_commit'),
    current_setting('statement_timeout'), current_setting('lock_timeout'),
    current_setting('idle_in_transaction_session_timeout'), current_setting('transaction_isolation')));
  RETURN NEW;
END $$;
CREATE TRIGGER record_session BEFORE INSERT ON keel.steps
  FOR EACH ROW EXECUTE FUNCTION public.record_session();)sql");

  auto o = options_for(db);
  o.store.statement_timeout = 12'345ms;
  o.store.lock_timeout = 2'345ms;
  o.store.idle_in_transaction_timeout = 34'567ms;
  engine e(o);
  execution_counter calls;
  add_echo_step(e, calls);
  BOOST_REQUIRE(e.start_blocking());
  auto run = e.wait_blocking(e.enqueue_blocking("echo", json::value{{"out", 1}}).value(), 20s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "completed");
  BOOST_TEST(query_value(db, "SELECT count(*) FROM public.seen") == "1");
  BOOST_TEST(query_value(db, "SELECT settings FROM public.seen") ==
             "on 12345ms 2345ms 34567ms read committed");
}

BOOST_AUTO_TEST_CASE(stop_abandons_a_step_past_its_deadline_and_another_worker_resumes_the_run,
                     *utf::timeout(90)) {
  auto db = fresh_database();
  std::atomic<bool> quick{false}, in_step{false};
  std::atomic<int> calls{0};
  auto body = [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto hang = [&]() -> asio::awaitable<int> {
      ++calls;
      in_step = true;
      if (!quick) co_await async_sleep(1h);
      co_return 1;
    };
    co_await ctx.step("hang", hang);
    co_return json::value("done");
  };
  run_id id;
  {
    engine first(options_for(db, 1s));
    add_workflow(first, "hang", body);
    BOOST_REQUIRE(first.start_blocking());
    id = first.enqueue_blocking("hang", json::object{}).value();
    BOOST_REQUIRE(wait_until([&] { return in_step.load(); }, 10s));
    const auto t0 = steady::now();
    first.stop_blocking(500ms);
    const auto took = steady::now() - t0;
    BOOST_TEST(std::chrono::duration_cast<std::chrono::milliseconds>(took).count() < 2'000);
    BOOST_TEST((took >= 450ms));  // it did wait for the step, up to the deadline
    // Abandoned, not released: the step never reached a boundary, so the run is still leased.
    BOOST_TEST(query_value(db, "SELECT status FROM keel.runs") == "running");
    BOOST_TEST(runs_in(db, "owner IS NOT NULL") == 1);
  }
  quick = true;
  engine second(options_for(db, 1s));
  add_workflow(second, "hang", body);
  BOOST_REQUIRE(second.start_blocking());
  auto run = second.wait_blocking(id, 20s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "completed");
  BOOST_TEST(calls == 2);
  BOOST_TEST(run->claims == 2);
  BOOST_TEST(run->recoveries == 1);  // its first worker was lost, as far as the database knows
}

BOOST_AUTO_TEST_CASE(stop_leaves_no_listener_session_behind, *utf::timeout(60)) {
  auto db = fresh_database();
  auto listeners = [&] {
    return as_long(query_value(db,
                               "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND application_name = 'keel listener'"));
  };
  engine e(options_for(db));
  add_workflow(e, "wf", [](context&, json::value v) -> asio::awaitable<json::value> { co_return v; });
  BOOST_REQUIRE(e.start_blocking());
  BOOST_REQUIRE(wait_until([&] { return listeners() == 1; }, 10s));
  auto id = e.enqueue_blocking("wf", json::value(1)).value();
  BOOST_REQUIRE(e.wait_blocking(id, 20s));
  e.stop_blocking();
  BOOST_TEST(wait_until([&] { return listeners() == 0; }, 5s));
  // Only the listener went: reads still work until the engine is destroyed.
  BOOST_TEST(to_string(e.get_blocking(id).value().status) == "completed");
}

BOOST_AUTO_TEST_CASE(a_heartbeat_for_an_older_execution_does_not_stand_for_the_newer_one, *utf::timeout(60)) {
  auto db = fresh_database();
  asio::io_context ioc;  // outlives the store (see store.hpp)
  storage::store s({db});
  BOOST_REQUIRE(s.migrate_blocking());
  const storage::new_run run{new_run_id(),   "wf",         1,
                             json::object{}, std::nullopt, 0,
                             std::nullopt,   std::nullopt, std::nullopt,
                             std::nullopt,   std::nullopt, std::nullopt,
                             std::nullopt,   std::nullopt, std::nullopt};
  BOOST_REQUIRE(run_on(ioc, s.enqueue(run)));
  const std::vector<storage::workflow_version> wf{{"wf", 1}};
  const storage::claim_request short_claim{"owner-a", wf, 1, 50ms};
  auto first = run_on(ioc, s.claim(short_claim)).value().runs;
  BOOST_REQUIRE_EQUAL(first.size(), 1u);

  // The same owner claims it again once the short lease lapsed: a newer execution of the same run.
  const storage::claim_request long_claim{"owner-a", wf, 1, 30s};
  std::vector<storage::claimed_run> second;
  BOOST_REQUIRE(wait_until(
      [&] {
        second = run_on(ioc, s.claim(long_claim)).value().runs;
        return !second.empty();
      },
      10s));
  BOOST_TEST(second[0].epoch > first[0].epoch);
  BOOST_TEST(second[0].recoveries == 1);

  const storage::lease_token old_lease{run.id, "owner-a", first[0].epoch};
  const storage::lease_token new_lease{run.id, "owner-a", second[0].epoch};
  const std::vector<storage::lease_token> both{old_lease, new_lease};
  auto lost = run_on(ioc, s.heartbeat(both, 30s));
  BOOST_REQUIRE(lost);
  BOOST_REQUIRE_EQUAL(lost->size(), 1u);
  BOOST_TEST((*lost)[0].epoch == old_lease.epoch);

  const std::vector<storage::lease_token> only_old{old_lease}, only_new{new_lease};
  auto lost_old = run_on(ioc, s.heartbeat(only_old, 30s));
  BOOST_REQUIRE(lost_old);
  BOOST_TEST(lost_old->size() == 1u);
  auto lost_new = run_on(ioc, s.heartbeat(only_new, 30s));
  BOOST_REQUIRE(lost_new);
  BOOST_TEST(lost_new->empty());
}

BOOST_AUTO_TEST_CASE(a_late_lease_loss_reply_for_an_old_execution_does_not_abandon_the_new_one,
                     *utf::timeout(90)) {
  // The engine's own lease lapses while its heartbeat is held up, so it reclaims the run it is executing
  // (a newer execution, a newer epoch). The held-up reply then reports the old epoch lost: that must stop
  // only the old execution.
  auto db = fresh_database();
  std::atomic<int> a_calls{0}, b_calls{0}, abandoned{0};
  std::atomic<bool> in_a{false};
  // The hold (2.2 s) outlasts the lease (1.5 s) once; frequent heartbeats renew the newer lease well before
  // it could lapse in turn.
  auto o = options_for(db, 1500ms);
  o.heartbeat = 100ms;
  o.on_event = [&](const run_event& ev) {
    if (ev.what == run_event::kind::abandoned) ++abandoned;
  };
  engine e(o);
  add_workflow(e, "long", [&](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto slow = [&]() -> asio::awaitable<int> {
      ++a_calls;
      in_a = true;
      co_await async_sleep(3s);
      co_return 1;
    };
    auto quick = [&] { return ++b_calls; };
    co_await ctx.step("a", slow);
    co_await ctx.step("b", quick);
    co_return json::value("done");
  });
  BOOST_REQUIRE(e.tick_blocking());  // migrates
  // Holds up the next heartbeat statement once, before it locks anything (so the reclaim is not blocked).
  query_value(db, R"sql(
CREATE TABLE public.hold_heartbeat (armed bool NOT NULL);
INSERT INTO public.hold_heartbeat VALUES (false);
CREATE FUNCTION public.hold_heartbeat() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_query() LIKE '%UPDATE keel.runs r SET due_at =%' THEN
    UPDATE public.hold_heartbeat SET armed = false WHERE armed;
    IF FOUND THEN PERFORM pg_sleep(2.2); END IF;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER hold_heartbeat BEFORE UPDATE ON keel.runs
  FOR EACH STATEMENT EXECUTE FUNCTION public.hold_heartbeat();)sql");
  BOOST_REQUIRE(e.start_blocking());
  auto id = e.enqueue_blocking("long", json::object{}).value();
  BOOST_REQUIRE(wait_until([&] { return in_a.load(); }, 10s));
  query_value(db, "UPDATE public.hold_heartbeat SET armed = true");
  BOOST_REQUIRE(wait_until([&] { return a_calls.load() == 2; }, 10s));  // reclaimed by this same engine
  // The held heartbeat has not committed yet: its reply, about the old epoch, is still to come.
  BOOST_TEST(query_value(db, "SELECT armed FROM public.hold_heartbeat") == "t");

  auto run = e.wait_blocking(id, 30s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "completed");
  BOOST_TEST(query_value(db, "SELECT armed FROM public.hold_heartbeat") == "f");  // the hold did happen
  BOOST_TEST(run->claims == 2);  // not abandoned and claimed a third time
  BOOST_TEST(b_calls == 1);
  BOOST_TEST(abandoned == 1);  // the old execution only (its late checkpoint is fenced)
}

BOOST_AUTO_TEST_SUITE_END()
