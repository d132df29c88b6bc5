// Faults between one engine and PostgreSQL, injected by a protocol-aware proxy: COMMITs whose acknowledgement
// is lost (of enqueues, checkpoints, finishes, claims), heartbeats that stall until the worker's own lease
// lapses; and several writer connections.
#define BOOST_TEST_MODULE faults
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>
#include <map>
#include <mutex>
#include <stdexcept>

#include "engine_fixture.hpp"
#include "tcp_proxy.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

// Prepared statements of the store (libstorage/src/statements.cpp) that the proxy holds back.
/// Every heartbeat: held, heartbeats stall and the lease lapses.
constexpr const char* k_heartbeat_statement = "keel_heartbeat";
/// Ends each write batch: held, the writer waits while further writes queue up.
constexpr const char* k_commit_statement = "keel_commit";
/// Starts each write batch: held, the batch's transaction starts only once released.
constexpr const char* k_begin_statement = "keel_begin";

/// Ends the proxy's holds when it goes out of scope. Declared after the engine, it runs before the engine's
/// destructor, also when a failed check throws: a held statement would keep the engine's stop() waiting.
struct release_at_exit {
  tcp_proxy& proxy;
  ~release_at_exit() { proxy.release(); }
};

/// What really happened to each run, from the step functions and the engine's events: "<id> <step>" for
/// every call of a step function, "<id> returned" for each return of a body, and "<id> claimed",
/// "<id> checkpointed", "<id> completed", "<id> abandoned" for those events. Thread-safe.
class ledger {
 public:
  void note(const std::string& id, std::string_view what) {
    std::lock_guard lock(mutex_);
    ++counts_[id + " " + std::string(what)];
    ++totals_[std::string(what)];
  }
  [[nodiscard]] int count(const std::string& id, std::string_view what) const {
    std::lock_guard lock(mutex_);
    auto it = counts_.find(id + " " + std::string(what));
    return it == counts_.end() ? 0 : it->second;
  }
  [[nodiscard]] int total(std::string_view what) const {
    std::lock_guard lock(mutex_);
    auto it = totals_.find(std::string(what));
    return it == totals_.end() ? 0 : it->second;
  }
  /// For engine_options::on_event.
  std::function<void(const run_event&)> observer() {
    return [this](const run_event& ev) {
      if (ev.what == run_event::kind::completed) note(ev.id, "completed");
      if (ev.what == run_event::kind::abandoned) note(ev.id, "abandoned");
      if (ev.what == run_event::kind::claimed) note(ev.id, "claimed");
      if (ev.what == run_event::kind::step_completed) note(ev.id, "checkpointed");
    };
  }
  /// Writes of three_steps runs submitted and not yet durable: steps that returned minus checkpoints
  /// reported durable, plus bodies that returned minus runs reported completed.
  [[nodiscard]] int unacknowledged_writes() const {
    return total("s1") + total("s2") + total("s3") - total("checkpointed") + total("returned") -
           total("completed");
  }
  /// Fails the test for every run in `ids` whose steps or completion did not happen exactly once. A run's
  /// completed event follows the commit that a wait on the database sees: it may come a moment later.
  void expect_exactly_once(const std::vector<std::string>& ids) const {
    wait_until(
        [&] {
          return std::all_of(ids.begin(), ids.end(),
                             [&](const std::string& id) { return count(id, "completed") >= 1; });
        },
        std::chrono::seconds(20));
    for (const auto& id : ids) {
      for (const char* what : {"s1", "s2", "s3", "returned", "completed"}) {
        if (count(id, what) != 1)
          BOOST_ERROR(id << " " << what << " happened " << count(id, what) << " times");
      }
    }
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, int, std::less<>> counts_;
  std::map<std::string, int, std::less<>> totals_;
};

/// Three steps that take `step_time` each and note each call in `book` as they return, and the body's return
/// ("returned"): each note is followed at once by a write (a checkpoint, the finish).
wf_fn three_steps(ledger& book, std::chrono::milliseconds step_time) {
  return [&book, step_time](context& ctx, json::value) -> asio::awaitable<json::value> {
    for (const char* name : {"s1", "s2", "s3"}) {
      co_await ctx.step(name, [&, name]() -> asio::awaitable<int> {
        if (step_time.count() > 0) co_await async_sleep(step_time);
        book.note(ctx.id(), name);
        co_return 1;
      });
    }
    book.note(ctx.id(), "returned");
    co_return nullptr;
  };
}

std::vector<std::string> enqueue_many(engine& e, const std::string& workflow, int n) {
  std::vector<std::future<result<run_id>>> pending;
  for (int i = 0; i < n; ++i) {
    pending.push_back(
        asio::co_spawn(e.get_executor(), e.enqueue(workflow, json::value{{"i", i}}), asio::use_future));
  }
  std::vector<std::string> ids;
  for (auto& f : pending)
    ids.push_back(f.get().value());
  return ids;
}

long count_of(const std::string& db, const std::string& sql) {
  return std::stol(query_value(db, sql));
}

/// The database holds exactly `n` runs, all completed after a single claim, each with its three steps.
void expect_drained_once(const std::string& db, long n) {
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs") == n);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs WHERE status = 'completed' AND claims = 1") == n);
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.steps") == 3 * n);
  BOOST_TEST(count_of(db,
                      "SELECT count(*) FROM (SELECT run_id FROM keel.steps GROUP BY run_id "
                      "HAVING count(*) <> 3) x") == 0);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(commits_whose_acknowledgement_was_lost_are_retried_without_running_anything_twice) {
  // The proxy forwards a COMMIT, lets the server execute it, and cuts the connection before the reply: the
  // writer cannot tell a lost commit from a lost acknowledgement, so it retries the whole batch on a new
  // connection. Every statement of a batch must be idempotent for that to be safe.
  auto db = fresh_database();
  tcp_proxy proxy(db);
  ledger book;
  auto o = options_for(proxy.conninfo());
  o.concurrency = 256;    // all 200 runs at once: see the claims below
  o.store.max_batch = 4;  // many batches, most of them with several writes
  o.on_event = book.observer();
  engine e(o);
  release_at_exit release_holds{proxy};
  add_workflow(e, "three", three_steps(book, 20ms));
  {
    storage::store_options so;
    so.conninfo = db;
    BOOST_REQUIRE(storage::store(so).migrate_blocking());
  }

  // Not started yet, the engine's writer commits nothing but these enqueues: a retried insert must not
  // create a run twice, and each caller still gets its run's id.
  proxy.drop_after_commits(1);
  const auto ids = enqueue_many(e, "three", 200);
  BOOST_TEST(proxy.commits_dropped() == 1);

  // Claims share the writer's transactions. They are kept out of what follows: the first claim takes every
  // run before any other fault is armed, so each later claim finds nothing and losing its acknowledgement
  // costs nothing. (A claim that took runs and lost its acknowledgement has a test of its own.)
  BOOST_REQUIRE(e.start_blocking());
  BOOST_REQUIRE(wait_until([&] { return book.total("claimed") == 200; }, 30s));

  // Then checkpoints of each step, and finishes, lost one at a time while the drain goes on...
  int dropped = 1;
  auto lose_one_commit_once = [&](const char* event, int reached) {
    BOOST_REQUIRE(wait_until([&] { return book.total(event) >= reached; }, 60s));
    proxy.drop_after_commits(1);
    ++dropped;
    BOOST_REQUIRE(wait_until([&] { return proxy.commits_dropped() == dropped; }, 30s));
  };
  lose_one_commit_once("checkpointed", 100);  // s1
  lose_one_commit_once("checkpointed", 300);  // s2
  lose_one_commit_once("checkpointed", 500);  // s3
  lose_one_commit_once("completed", 20);

  // ...and a batch of several writes lost three times in a row, which makes the writer split it, and the
  // first of its parts lost too. To get such a batch, the one before it is held at its COMMIT while other
  // runs queue their writes behind it; the proxy lets that COMMIT through.
  BOOST_REQUIRE(wait_until([&] { return book.total("completed") >= 50; }, 60s));
  proxy.hold(k_commit_statement);
  BOOST_REQUIRE(wait_until([&] { return proxy.held() == 1; }, 30s));
  // The held batch has at most max_batch (4) writes: 8 unacknowledged ones leave 4 queued behind it.
  BOOST_REQUIRE(wait_until([&] { return book.unacknowledged_writes() >= 8; }, 30s));
  proxy.drop_after_commits(4, /*let_through=*/1);
  proxy.release();
  dropped += 4;
  BOOST_REQUIRE(wait_until([&] { return proxy.commits_dropped() == dropped; }, 30s));

  BOOST_REQUIRE(wait_until(
      [&] { return count_of(db, "SELECT count(*) FROM keel.runs WHERE status = 'completed'") == 200; }, 60s));
  e.stop_blocking();
  expect_drained_once(db, 200);
  book.expect_exactly_once(ids);
  BOOST_TEST(book.total("abandoned") == 0);
}

// A claim is retried like any write after its COMMIT's acknowledgement was lost. Its retry must adopt the
// runs its first attempt took (claim token), not claim others and strand those until their lease lapses
// (which would also count as a recovery towards dead-lettering).
BOOST_AUTO_TEST_CASE(a_claim_whose_acknowledgement_was_lost_does_not_strand_its_runs) {
  auto db = fresh_database();
  tcp_proxy proxy(db);
  ledger book;
  auto o = options_for(proxy.conninfo(), 3s);  // a stranded run waits 3 s, not 30
  o.on_event = book.observer();
  engine e(o);
  release_at_exit release_holds{proxy};
  add_workflow(e, "three", three_steps(book, 0ms));
  BOOST_REQUIRE(e.start_blocking());

  // Idle, the engine's writer commits nothing but claims that find nothing. The next one is held before its
  // BEGIN, so that its snapshot (and now()) comes after the enqueue below: it takes that run.
  proxy.hold(k_begin_statement);
  BOOST_REQUIRE(wait_until([&] { return proxy.held() == 1; }, 30s));
  engine producer(options_for(db));  // straight to the database: the engine's writer is held
  add_workflow(producer, "three", three_steps(book, 0ms));
  const auto id = producer.enqueue_blocking("three", json::object{}).value();
  proxy.drop_after_commits(1);
  proxy.release();
  BOOST_REQUIRE(wait_until([&] { return proxy.commits_dropped() == 1; }, 30s));

  auto run = e.wait_blocking(id, 30s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "completed");
  BOOST_TEST(run->claims == 1);
  BOOST_TEST(run->recoveries == 0);
  BOOST_TEST(book.count(id, "claimed") == 1);
  book.expect_exactly_once({id});
}

BOOST_AUTO_TEST_CASE(three_writers_drain_a_thousand_runs_exactly_once) {
  auto db = fresh_database();
  tcp_proxy proxy(db);  // only watches: it tells which connections committed
  ledger book;
  auto o = options_for(proxy.conninfo());
  o.concurrency = 64;
  o.store.writers = 3;
  o.on_event = book.observer();
  engine e(o);
  add_workflow(e, "three", three_steps(book, 0ms));
  BOOST_REQUIRE(e.start_blocking());
  const auto ids = enqueue_many(e, "three", 1000);
  BOOST_REQUIRE(wait_until(
      [&] { return count_of(db, "SELECT count(*) FROM keel.runs WHERE status = 'completed'") == 1000; },
      120s));
  e.stop_blocking();
  expect_drained_once(db, 1000);
  book.expect_exactly_once(ids);
  // The writes were really shared: more than one writer connection committed.
  BOOST_TEST(proxy.committing_connections() >= 2);
}

namespace {

/// One run of "lapse" under a 1.5 s lease, on an engine that reaches the database through a proxy. Step s2
/// of the first execution is held back in the way the test chooses, while the proxy holds heartbeats until
/// the lease lapses and the engine's own claim loop takes the run again.
struct lapse_fixture {
  enum class first_s2 {
    fails_into_backoff,    // fails once, then waits a minute before its retry
    waits_for_the_reclaim  // still running when the run is claimed again
  };

  std::string db = fresh_database();
  tcp_proxy proxy{db};
  ledger book;
  std::atomic<bool> reclaimed{false};
  std::atomic<bool> let_s3_finish;  // the second execution waits inside s3 until this is set
  std::unique_ptr<engine> e;
  release_at_exit release_heartbeats{proxy};  // also when the constructor throws
  std::string id;

  explicit lapse_fixture(first_s2 mode, bool hold_second_s3 = false) : let_s3_finish(!hold_second_s3) {
    auto o = options_for(proxy.conninfo(), 1500ms);  // heartbeats every 500 ms
    o.on_event = [this, observe = book.observer()](const run_event& ev) {
      observe(ev);
      if (ev.what == run_event::kind::claimed && ev.attempt == 2) reclaimed = true;
    };
    e = std::make_unique<engine>(o);
    step_options s2_options;
    s2_options.retry.max_attempts = 2;
    s2_options.retry.initial_delay = 60s;
    s2_options.retry.max_delay = 60s;
    s2_options.retry.jitter = 0;
    add_workflow(
        *e, "lapse", [this, mode, s2_options](context& ctx, json::value) -> asio::awaitable<json::value> {
          co_await ctx.step("s1", [&] {
            book.note(ctx.id(), "s1");
            return 1;
          });
          co_await ctx.step(
              "s2",
              [&]() -> asio::awaitable<int> {
                book.note(ctx.id(), "s2");
                if (ctx.execution() == 1 && mode == first_s2::fails_into_backoff)
                  throw std::runtime_error("first attempt fails");
                if (ctx.execution() == 1 && mode == first_s2::waits_for_the_reclaim) {
                  const auto give_up = std::chrono::steady_clock::now() + 30s;
                  while (!reclaimed && std::chrono::steady_clock::now() < give_up)
                    co_await async_sleep(5ms);
                }
                co_return 2;
              },
              s2_options);
          co_await ctx.step("s3", [&]() -> asio::awaitable<int> {
            book.note(ctx.id(), "s3");
            const auto give_up = std::chrono::steady_clock::now() + 30s;
            while (ctx.execution() == 2 && !let_s3_finish && std::chrono::steady_clock::now() < give_up)
              co_await async_sleep(5ms);
            co_return 3;
          });
          co_return json::value{{"done", true}};
        });
    BOOST_REQUIRE(e->start_blocking());
    id = e->enqueue_blocking("lapse", json::object{}).value();
    // s1 is checkpointed and the first execution is inside s2 (or its backoff).
    BOOST_REQUIRE(wait_until([&] { return book.count(id, "s2") == 1; }, 30s));
    // From now on no heartbeat reaches the server: the lease lapses 1.5 s after the last one that did.
    proxy.hold(k_heartbeat_statement);
    BOOST_REQUIRE(wait_until([&] { return reclaimed.load(); }, 30s));
  }

  ~lapse_fixture() {
    proxy.release();
    let_s3_finish = true;
    e->stop_blocking();
  }

  /// The run completed once, by this worker's second execution; the first one stopped; s1, checkpointed by
  /// the first execution, ran once; s2 ran in both (the first execution never checkpointed it).
  void expect_one_completion_after_one_reclaim() {
    auto run = e->wait_blocking(id, 30s);
    BOOST_REQUIRE(run);
    BOOST_TEST(to_string(run->status) == "completed");
    BOOST_TEST(run->claims == 2);
    BOOST_TEST(run->epoch == 2);
    BOOST_TEST(run->owner.value_or("") == e->worker_id());
    BOOST_REQUIRE_EQUAL(run->steps.size(), 3u);
    BOOST_TEST(run->steps[1].attempts == 1);  // recorded by the second execution
    BOOST_TEST(wait_until([&] { return book.count(id, "abandoned") >= 1; }, 20s));
    BOOST_TEST(book.count(id, "claimed") == 2);
    BOOST_TEST(book.count(id, "s1") == 1);
    BOOST_TEST(book.count(id, "s2") == 2);
    BOOST_TEST(book.count(id, "s3") == 1);
    // The event follows the commit that wait_blocking saw: it may come a moment later.
    BOOST_TEST(wait_until([&] { return book.count(id, "completed") == 1; }, 20s));
    BOOST_TEST(book.count(id, "abandoned") == 1);
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(a_worker_reclaiming_its_own_lapsed_run_cuts_the_old_executions_backoff_short) {
  // The first execution waits out a one-minute retry backoff in s2 when its own claim loop takes the run
  // again: the reclaim must stop it at once (it is fenced already), not after the minute.
  lapse_fixture f(lapse_fixture::first_s2::fails_into_backoff);
  // It waits at most 20 s for the first execution to be abandoned: a third of the backoff.
  f.expect_one_completion_after_one_reclaim();
}

BOOST_AUTO_TEST_CASE(a_worker_reclaiming_its_own_lapsed_run_fences_the_old_execution_mid_step) {
  // The first execution is still inside s2 when its own claim loop takes the run again. Once s2 returns, its
  // checkpoint carries the old epoch: it must be refused, and that execution must stop writing.
  lapse_fixture f(lapse_fixture::first_s2::waits_for_the_reclaim);
  f.expect_one_completion_after_one_reclaim();
}

// A regression test: before the engine matched heartbeat replies by epoch, the late reply marked the epoch-2
// execution lost; it was abandoned and the run claimed a third time, a lease later.
BOOST_AUTO_TEST_CASE(a_late_heartbeat_reply_for_a_replaced_execution_does_not_stop_the_new_one) {
  // The heartbeat that stalled while the lease lapsed was sent for the first execution (epoch 1); released
  // while the second execution (epoch 2) is still running, its reply lists the run as lost. That reply is
  // about epoch 1 only: the second execution must carry on and complete without a further reclaim.
  lapse_fixture f(lapse_fixture::first_s2::fails_into_backoff, /*hold_second_s3=*/true);
  BOOST_REQUIRE(wait_until([&] { return f.book.count(f.id, "s3") == 1; }, 30s));
  const int sent = f.proxy.binds(k_heartbeat_statement);
  f.proxy.release();
  // The heartbeat loop sends its next heartbeat only after it has handled the late reply.
  BOOST_REQUIRE(wait_until([&] { return f.proxy.binds(k_heartbeat_statement) >= sent + 2; }, 30s));
  f.let_s3_finish = true;
  f.expect_one_completion_after_one_reclaim();
}

BOOST_AUTO_TEST_SUITE_END()
