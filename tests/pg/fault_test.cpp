// Faults between one engine and PostgreSQL, injected by a protocol-aware proxy: COMMITs whose acknowledgement
// is lost; and several writer connections.
#define BOOST_TEST_MODULE faults
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>
#include <map>
#include <mutex>

#include "engine_fixture.hpp"
#include "tcp_proxy.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

// Prepared statements of the store (libstorage/src/statements.cpp) that the proxy holds back.
/// Ends each write batch: held, the writer waits while further writes queue up.
constexpr const char* k_commit_statement = "keel_commit";

/// Ends the proxy's holds when it goes out of scope. Declared after the engine, it runs before the engine's
/// destructor, also when a failed check throws: a held statement would keep the engine's stop() waiting.
struct release_at_exit {
  tcp_proxy& proxy;
  ~release_at_exit() { proxy.release(); }
};

/// What really happened to each run, from the step functions and the engine's events: "<id> <step>" for
/// every call of a step function, "<id> completed", "<id> abandoned", "<id> claimed". Thread-safe.
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
  /// Fails the test for every run in `ids` whose steps or completion did not happen exactly once.
  void expect_exactly_once(const std::vector<std::string>& ids) const {
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
  o.concurrency = 16;     // with 5 ms steps, the drain lasts long enough to lose several commits in it
  o.store.max_batch = 4;  // so that most batches carry several writes, and none carries all of them
  o.on_event = book.observer();
  engine e(o);
  release_at_exit release_holds{proxy};
  add_workflow(e, "three", three_steps(book, 5ms));
  BOOST_REQUIRE(e.start_blocking());

  // Nothing has committed since the migration, so the first COMMIT carries enqueues: a retried insert must
  // not create a run twice, and each caller still gets its run's id.
  proxy.drop_after_commits(1);
  const auto ids = enqueue_many(e, "three", 200);
  BOOST_TEST(proxy.commits_dropped() == 1);

  // Then checkpoints and finishes, lost one at a time while the drain goes on...
  int dropped = 1;
  for (int completed : {20, 50, 80}) {
    BOOST_REQUIRE(wait_until([&] { return book.total("completed") >= completed; }, 60s));
    proxy.drop_after_commits(1);
    ++dropped;
    BOOST_REQUIRE(wait_until([&] { return proxy.commits_dropped() == dropped; }, 30s));
  }

  // ...and a batch of several writes lost three times in a row, which makes the writer commit its writes one
  // at a time, the first of which is lost too. To get such a batch, the one before it is held at its COMMIT
  // while other runs queue their checkpoints behind it; the proxy lets that COMMIT through.
  BOOST_REQUIRE(wait_until([&] { return book.total("completed") >= 110; }, 60s));
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

BOOST_AUTO_TEST_SUITE_END()
