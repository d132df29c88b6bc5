// The list-runs workload: a table of runs made in SQL (ids UUIDv7-like, oldest first, 1 in 100 of a rare
// workflow, 3 in 100 failed and 1 in 10 of the rare ones, 1 in 100 waiting), then pages timed one at a
// time through the engine.
#include "list_runs.hpp"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <vector>

#include "json_line.hpp"
#include "keel/engine.hpp"
#include "pg_util.hpp"

namespace keel::bench {
namespace {

using steady = std::chrono::steady_clock;

/// Pages timed per query.
constexpr int k_pages = 200;
constexpr std::size_t k_page_size = 50;

/// Ids from a millisecond count (the runs' creation order, as new_run_id's are), the rest from md5.
const char* k_seed_sql = R"sql(
INSERT INTO keel.runs (id, workflow, version, status, input, output, error, created_at, started_at, finished_at,
                       waiting_for)
SELECT (lpad(to_hex(1700000000000 + g), 12, '0') || '7' || substr(md5(g::text), 1, 3) || '8' ||
        substr(md5(g::text), 4, 15))::uuid,
       CASE WHEN g % 100 = 7 THEN 'rare' ELSE 'bulk' END, 1,
       CASE WHEN g % 100 IN (3, 33, 66) OR g % 1000 = 7 THEN 'failed' WHEN g % 100 = 50 THEN 'waiting'
            ELSE 'completed' END,
       '{"n":1}', CASE WHEN g % 100 IN (3, 33, 66, 50) OR g % 1000 = 7 THEN NULL ELSE '{"ok":true}'::jsonb END,
       CASE WHEN g % 100 IN (3, 33, 66) OR g % 1000 = 7 THEN '{"code":"step_failed","message":"no"}'::jsonb END,
       to_timestamp((1700000000000 + g) / 1000.0), to_timestamp((1700000000000 + g) / 1000.0),
       CASE WHEN g % 100 = 50 THEN NULL ELSE to_timestamp((1700000000000 + g) / 1000.0) END,
       CASE WHEN g % 100 = 50 THEN '{"kind":"event","event":"go"}'::jsonb END
FROM generate_series(1, $1::bigint) g)sql";

struct timed_query {
  std::string name;
  run_query query;
  std::vector<double> ms;
};

}  // namespace

std::string list_runs_blocking(const latency_setup& s) {
  // 1 run in 1,000 is a failed `rare` one: a page of 50 of them needs 50,000 runs.
  if (s.runs < 50'000) throw std::runtime_error("list-runs needs --runs of at least 50000");
  engine_options eo;
  eo.store.conninfo = s.conninfo;
  eo.store.pool_size = s.pool;
  eo.threads = s.threads;
  eo.migrate = true;
  engine e(eo);
  if (auto started = e.start_blocking(); !started)
    throw std::runtime_error("engine start failed: " + started.error().message());
  struct stopper {
    engine& e;
    const latency_setup& s;
    ~stopper() { s.stop_engine_blocking(e); }
  } stop{e, s};

  auto conn = connect_blocking(s.conninfo);
  const auto t0 = steady::now();
  exec_params_blocking(conn.get(), k_seed_sql, {std::to_string(s.runs)});
  exec_blocking(conn.get(), "VACUUM ANALYZE keel.runs");
  const double seed_seconds = std::chrono::duration<double>(steady::now() - t0).count();
  s.check_interrupted();

  // A cursor halfway down the table: keyset pagination reads no more rows there than at the top.
  auto middle =
      exec_params_blocking(conn.get(), "SELECT id::text FROM keel.runs ORDER BY id DESC OFFSET $1 LIMIT 1",
                           {std::to_string(s.runs / 2)});
  const std::string deep = field(middle.get(), 0, 0);

  std::vector<timed_query> queries(6);
  queries[0].name = "newest";
  queries[1].name = "deep";
  queries[1].query.after = deep;
  queries[2].name = "workflow";
  queries[2].query.workflow = "rare";
  queries[3].name = "failed";
  queries[3].query.status = run_status::failed;
  queries[4].name = "workflow_failed";
  queries[4].query.workflow = "rare";
  queries[4].query.status = run_status::failed;
  queries[5].name = "completed_deep";
  queries[5].query.status = run_status::completed;
  queries[5].query.after = deep;
  for (auto& q : queries) {
    q.query.limit = k_page_size;
    for (int i = 0; i < k_pages; ++i) {
      const auto called = steady::now();
      auto page = e.list_runs_blocking(q.query);
      const auto returned = steady::now();
      if (!page) throw std::runtime_error("list_runs (" + q.name + ") failed: " + page.error().message());
      // Each query fills its page (the table is large enough: --runs at least 50,000, checked above).
      if (page->runs.size() != k_page_size)
        throw std::runtime_error("list_runs (" + q.name + ") returned a short page");
      q.ms.push_back(std::chrono::duration<double, std::milli>(returned - called).count());
    }
    s.check_interrupted();
  }
  std::string out = "{\"workload\":" + json_string(s.workload) + ",\"runs\":" + std::to_string(s.runs) +
                    ",\"page\":" + std::to_string(k_page_size) +
                    ",\"seed_seconds\":" + fixed(seed_seconds, 1);
  for (const auto& q : queries) {
    out += ",\"" + q.name + "_p50_ms\":" + fixed(percentile(q.ms, 0.5), 2);
    out += ",\"" + q.name + "_p99_ms\":" + fixed(percentile(q.ms, 0.99), 2);
  }
  return out + "}";
}

}  // namespace keel::bench
