#include "ceiling.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <deque>
#include <stdexcept>
#include <thread>
#include <vector>

#include "keel/common/run_id.hpp"
#include "pg_util.hpp"

namespace keel::bench {
namespace {

/// A prepared statement of the timed loop. Prepared once, before timing, as the engine prepares its own.
struct ceiling_statement {
  const char* name;
  const char* sql;
};

const ceiling_statement k_begin{"ceiling_begin", "BEGIN"};
// The fence, as the engine's checkpoint does it: the lease (owner, epoch) must still match, checked under a
// share lock on the run row (which a reclaim's UPDATE would wait for).
const ceiling_statement k_fence{"ceiling_fence", R"sql(
SELECT 1 FROM bench_ceiling_runs
WHERE id = ANY($1::uuid[]) AND owner = 'ceiling' AND epoch = 1
FOR SHARE)sql"};
// The checkpoint rows: one per run of the chunk, each with its own small JSON output.
const ceiling_statement k_insert{"ceiling_insert", R"sql(
INSERT INTO bench_ceiling_steps (run_id, seq, name, status, output, attempts, started_at, finished_at, epoch)
SELECT t.id, $2::int, $3::text, 'completed', t.output, 1, now(), now(), 1
FROM unnest($1::uuid[], $4::jsonb[]) AS t(id, output))sql"};
const ceiling_statement k_commit{"ceiling_commit", "COMMIT"};
// The lifecycle ceiling's claim and finish: the fewest writes that take a run's lease and record its end.
// The claim names its runs (no search for due work, no SKIP LOCKED scan, no history to load) and the finish
// is fenced like the engine's: each is the least a claim or a finish on the run row can cost, so the
// lifecycle ceiling is an upper bound for an engine that keeps its queue and leases there.
const ceiling_statement k_claim{"ceiling_claim", R"sql(
UPDATE bench_ceiling_runs
SET status = 'running', owner = 'ceiling', epoch = epoch + 1, claims = claims + 1,
    due_at = now() + interval '30 seconds', started_at = now()
WHERE id = ANY($1::uuid[]) AND status = 'queued')sql"};
const ceiling_statement k_finish{"ceiling_finish", R"sql(
UPDATE bench_ceiling_runs
SET status = 'completed', output = '{"steps":3}', due_at = NULL, finished_at = now()
WHERE id = ANY($1::uuid[]) AND owner = 'ceiling' AND epoch = 1 AND status = 'running')sql"};

constexpr std::size_t k_setup_chunk = 5000;
/// Transactions in flight on one connection: as many as the engine's group writer keeps.
constexpr std::size_t k_pipeline_depth = 2;

/// "{id,id,...}" for ids[first, last).
std::string uuid_array(const std::vector<std::string>& ids, std::size_t first, std::size_t last) {
  std::string out;
  out.reserve((last - first) * 37 + 2);
  out.push_back('{');
  for (std::size_t i = first; i < last; ++i) {
    if (i != first) out.push_back(',');
    out += ids[i];
  }
  out.push_back('}');
  return out;
}

/// A jsonb[] literal of `n` outputs {"i":<value>}: what a step of the noop3 workload returns.
std::string output_array(std::size_t n, int value) {
  const std::string element = "\"{\\\"i\\\":" + std::to_string(value) + "}\"";
  std::string out;
  out.reserve(n * (element.size() + 1) + 2);
  out.push_back('{');
  for (std::size_t i = 0; i < n; ++i) {
    if (i != 0) out.push_back(',');
    out += element;
  }
  out.push_back('}');
  return out;
}

void prepare(PGconn* conn, const ceiling_statement& s) {
  pg_result r(PQprepare(conn, s.name, s.sql, 0, nullptr));
  if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) throw_pg_error(s.name, conn, r.get());
}

void send(PGconn* conn, const ceiling_statement& s, const std::vector<const char*>& params) {
  if (PQsendQueryPrepared(conn, s.name, static_cast<int>(params.size()), params.data(), nullptr, nullptr,
                          0) != 1) {
    throw_pg_error(s.name, conn, nullptr);
  }
}

/// One transaction of the loop, in flight: its rows and how many statements sit between BEGIN and COMMIT.
struct sent_transaction {
  std::size_t rows = 0;
  int writes = 0;
};

/// Reads one transaction's results up to its sync; checks that each of its writes touched `sent.rows` rows.
void read_transaction(PGconn* conn, sent_transaction sent) {
  const std::string expected = std::to_string(sent.rows);
  int index = 0;
  for (;;) {
    pg_result r(PQgetResult(conn));
    if (!r) {
      // NULL separates one query's results from the next.
      if (PQstatus(conn) != CONNECTION_OK) throw_pg_error("ceiling transaction", conn, nullptr);
      continue;
    }
    const auto st = PQresultStatus(r.get());
    if (st == PGRES_PIPELINE_SYNC) break;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) throw_pg_error("ceiling transaction", conn, r.get());
    // Between BEGIN and COMMIT: the fence and the INSERT, or a claim, or a finish.
    if (index >= 1 && index <= sent.writes && expected != PQcmdTuples(r.get())) {
      throw std::runtime_error("ceiling: a write touched " + std::string(PQcmdTuples(r.get())) +
                               " rows instead of " + expected);
    }
    ++index;
  }
  if (index != sent.writes + 2)
    throw std::runtime_error("ceiling: a transaction returned " + std::to_string(index) + " results");
}

}  // namespace

std::string_view name_of(ceiling_indexes which) noexcept {
  switch (which) {
    case ceiling_indexes::claim:
      return "claim";
    case ceiling_indexes::key:
      return "key";
    case ceiling_indexes::all:
      break;
  }
  return "all";
}

std::optional<ceiling_indexes> ceiling_indexes_named(std::string_view name) noexcept {
  for (const auto which : {ceiling_indexes::all, ceiling_indexes::claim, ceiling_indexes::key}) {
    if (name == name_of(which)) return which;
  }
  return std::nullopt;
}

ceiling_result measure_ceiling_blocking(const std::string& conninfo, const ceiling_plan& plan) {
  const std::size_t runs = plan.runs, batch = plan.batch;
  const int steps_per_run = plan.steps_per_run;
  std::size_t connections = plan.connections;
  if (runs == 0 || batch == 0 || steps_per_run <= 0)
    throw std::invalid_argument("ceiling: nothing to measure");
  const bool lifecycle = plan.writes == ceiling_writes::lifecycle;
  auto conn = connect_blocking(conninfo);
  PGconn* c = conn.get();

  // Setup, not timed. LIKE ... INCLUDING ALL copies defaults, checks and indexes (the primary keys, the
  // partial unique idempotency key and the partial claim index); the storage parameters (fillfactor) are
  // copied too, so the ceiling's updates stay HOT exactly when the engine's do. keel.steps has no foreign
  // key.
  exec_blocking(
      c,
      "DROP TABLE IF EXISTS bench_ceiling_steps, bench_ceiling_runs;\n"
      "CREATE TABLE bench_ceiling_runs (LIKE keel.runs INCLUDING ALL);\n"
      "CREATE TABLE bench_ceiling_steps (LIKE keel.steps INCLUDING ALL);\n"
      "DO $$ DECLARE o text; BEGIN\n"
      "  SELECT array_to_string(reloptions, ', ') INTO o FROM pg_class WHERE oid = 'keel.runs'::regclass;\n"
      "  IF o IS NOT NULL THEN EXECUTE 'ALTER TABLE bench_ceiling_runs SET (' || o || ')'; END IF;\n"
      "END $$;");
  if (plan.indexes != ceiling_indexes::all) {
    // The claim index is found by its definition (LIKE names the copies itself); what is left is checked.
    const bool keep_claim = plan.indexes == ceiling_indexes::claim;
    exec_blocking(
        c, std::string("DO $$ DECLARE i text; BEGIN\n"
                       "  FOR i IN SELECT indexname FROM pg_indexes\n"
                       "           WHERE tablename = 'bench_ceiling_runs'\n"
                       "             AND indexname <> 'bench_ceiling_runs_pkey'\n") +
               (keep_claim ? "             AND indexdef NOT LIKE '%(priority DESC, due_at) WHERE%'\n" : "") +
               "  LOOP EXECUTE 'DROP INDEX ' || quote_ident(i); END LOOP;\n"
               "END $$;");
    auto left = exec_blocking(c, "SELECT count(*) FROM pg_indexes WHERE tablename = 'bench_ceiling_runs'");
    if (field(left.get(), 0, 0) != (keep_claim ? "2" : "1"))
      throw std::runtime_error("ceiling: the runs table kept " + field(left.get(), 0, 0) + " indexes");
  }
  // Time-ordered ids (UUIDv7) from the engine's generator: the same index locality as keel.steps gets.
  std::vector<std::string> ids;
  ids.reserve(runs);
  for (std::size_t i = 0; i < runs; ++i)
    ids.push_back(new_run_id());
  // Steps only: the runs are held already. Lifecycle: they are queued, due now, as enqueued runs are.
  const char* const insert_runs =
      lifecycle ? "INSERT INTO bench_ceiling_runs (id, workflow, version, status, input, due_at)\n"
                  "SELECT id, 'noop3', 1, 'queued', '{}', now() FROM unnest($1::uuid[]) AS id"
                : "INSERT INTO bench_ceiling_runs (id, workflow, version, status, input, owner, epoch,\n"
                  "  due_at, claims, started_at)\n"
                  "SELECT id, 'noop3', 1, 'running', '{}', 'ceiling', 1, now() + interval '30 seconds',\n"
                  "  1, now()\n"
                  "FROM unnest($1::uuid[]) AS id";
  for (std::size_t first = 0; first < runs; first += k_setup_chunk) {
    const std::size_t last = std::min(runs, first + k_setup_chunk);
    exec_params_blocking(c, insert_runs, {uuid_array(ids, first, last)});
  }
  // Statistics, so that the planner sees the table as it is: the ceiling is the best case.
  exec_blocking(c, "ANALYZE bench_ceiling_runs");
  // One connection per engine writer: each takes a disjoint slice of the runs, prepared and connected before
  // the clock starts, and runs the same minimal loop on it.
  connections = std::max<std::size_t>(1, std::min(connections, runs));
  struct lane {
    pg_conn conn;
    std::size_t first = 0, last = 0, transactions = 0;
    std::exception_ptr error;
  };
  std::vector<lane> lanes(connections);
  for (std::size_t i = 0; i < connections; ++i) {
    lanes[i].conn = connect_blocking(conninfo);
    lanes[i].first = runs * i / connections;
    lanes[i].last = runs * (i + 1) / connections;
    for (const auto* s : {&k_begin, &k_fence, &k_insert, &k_commit, &k_claim, &k_finish})
      prepare(lanes[i].conn.get(), *s);
    if (PQenterPipelineMode(lanes[i].conn.get()) != 1)
      throw_pg_error("enter pipeline mode", lanes[i].conn.get(), nullptr);
  }
  auto drive = [&](lane& l) {
    try {
      PGconn* lc = l.conn.get();
      std::deque<sent_transaction> in_flight;  // sent and not yet read
      // Rounds: -1 claims, 0 .. steps_per_run - 1 checkpoint that step, steps_per_run finishes.
      const int first_round = lifecycle ? -1 : 0;
      const int last_round = lifecycle ? steps_per_run : steps_per_run - 1;
      for (int round = first_round; round <= last_round; ++round) {
        const std::string seq_text = std::to_string(round);
        const std::string name = "step" + std::to_string(round + 1);
        for (std::size_t first = l.first; first < l.last; first += batch) {
          const std::size_t last = std::min(l.last, first + batch);
          const std::string id_list = uuid_array(ids, first, last);
          sent_transaction sent{last - first, 1};
          send(lc, k_begin, {});
          if (round < 0) {
            send(lc, k_claim, {id_list.c_str()});
          } else if (round == steps_per_run) {
            send(lc, k_finish, {id_list.c_str()});
          } else {
            const std::string outputs = output_array(last - first, round + 1);
            send(lc, k_fence, {id_list.c_str()});
            send(lc, k_insert, {id_list.c_str(), seq_text.c_str(), name.c_str(), outputs.c_str()});
            sent.writes = 2;
          }
          send(lc, k_commit, {});
          if (PQpipelineSync(lc) != 1) throw_pg_error("pipeline sync", lc, nullptr);
          in_flight.push_back(sent);
          // Like the engine's writer: at most k_pipeline_depth transactions in flight.
          if (in_flight.size() == k_pipeline_depth) {
            read_transaction(lc, in_flight.front());
            in_flight.pop_front();
            ++l.transactions;
          }
        }
      }
      for (; !in_flight.empty(); in_flight.pop_front()) {
        read_transaction(lc, in_flight.front());
        ++l.transactions;
      }
      if (PQexitPipelineMode(lc) != 1) throw_pg_error("exit pipeline mode", lc, nullptr);
    } catch (...) {
      l.error = std::current_exception();
    }
  };

  ceiling_result out;
  const auto t0 = std::chrono::steady_clock::now();
  {
    std::vector<std::thread> threads;
    for (std::size_t i = 1; i < connections; ++i)
      threads.emplace_back([&, i] { drive(lanes[i]); });
    drive(lanes[0]);
    for (auto& t : threads)
      t.join();
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (auto& l : lanes) {
    if (l.error) std::rethrow_exception(l.error);
    out.transactions += l.transactions;
  }

  out.steps = runs * static_cast<std::size_t>(steps_per_run);
  auto count = exec_blocking(c, "SELECT count(*) FROM bench_ceiling_steps");
  if (field(count.get(), 0, 0) != std::to_string(out.steps)) {
    throw std::runtime_error("ceiling: bench_ceiling_steps holds " + field(count.get(), 0, 0) +
                             " rows, expected " + std::to_string(out.steps));
  }
  if (lifecycle) {
    auto done = exec_blocking(c, "SELECT count(*) FROM bench_ceiling_runs WHERE status = 'completed'");
    if (field(done.get(), 0, 0) != std::to_string(runs)) {
      throw std::runtime_error("ceiling: " + field(done.get(), 0, 0) + " runs completed, expected " +
                               std::to_string(runs));
    }
    // The lanes' sessions report their counts when they end (closed here) or go idle: wait up to 2 s.
    lanes.clear();
    for (int tries = 0; tries < 40 && out.hot_update_share < 0; ++tries) {
      auto st = exec_blocking(c,
                              "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                              "WHERE relname = 'bench_ceiling_runs'");
      const double updated = std::stod(field(st.get(), 0, 0)), hot = std::stod(field(st.get(), 0, 1));
      if (updated >= 2.0 * static_cast<double>(runs)) {
        out.hot_update_share = hot / updated;
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }
  return out;
}

}  // namespace keel::bench
