// The dashboard's reads are served by indexes: with a table of a few hundred thousand runs, hooks and log
// rows (most of them finished, resumed or old, as in a database that has run for a while), PostgreSQL's plan
// for each statement — the generic one of a prepared statement and a custom one — scans no table whole, and
// walks the index meant for it.
#define BOOST_TEST_MODULE dashboard_plans
#define BOOST_TEST_DYN_LINK
#include <libpq-fe.h>

#include <boost/json.hpp>
#include <boost/test/unit_test.hpp>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine_fixture.hpp"
#include "statements.hpp"

using namespace keel;
using namespace keel::test;
namespace utf = boost::unit_test;
namespace sql = keel::storage::detail::sql;

namespace {

/// A libpq connection for the test's own SQL.
class session {
 public:
  explicit session(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str()), &PQfinish) {
    BOOST_REQUIRE(PQstatus(conn_.get()) == CONNECTION_OK);
  }
  /// The first column of the first row ("" if none); fails the test on an error.
  std::string exec(const std::string& text) {
    std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(conn_.get(), text.c_str()), &PQclear);
    const auto st = PQresultStatus(r.get());
    BOOST_TEST_INFO(text.substr(0, 200));
    BOOST_REQUIRE_MESSAGE(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, PQerrorMessage(conn_.get()));
    return PQntuples(r.get()) > 0 && PQnfields(r.get()) > 0 ? std::string(PQgetvalue(r.get(), 0, 0)) : "";
  }
  /// How many rows `text` returns; fails the test on an error.
  int rows(const std::string& text) {
    std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(conn_.get(), text.c_str()), &PQclear);
    BOOST_REQUIRE_MESSAGE(PQresultStatus(r.get()) == PGRES_TUPLES_OK, PQerrorMessage(conn_.get()));
    return PQntuples(r.get());
  }

 private:
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn_;
};

struct plan_node {
  std::string type, relation, index, condition;
};

void collect(const json::value& plan, std::vector<plan_node>& out) {
  const auto& o = plan.as_object();
  auto text = [&](const char* key) {
    const auto* v = o.if_contains(key);
    return v != nullptr && v->is_string() ? std::string(v->as_string()) : std::string();
  };
  out.push_back({text("Node Type"), text("Relation Name"), text("Index Name"), text("Index Cond")});
  if (const auto* children = o.if_contains("Plans")) {
    for (const auto& child : children->as_array())
      collect(child, out);
  }
}

/// `args` is the EXECUTE argument list, e.g. "('51', NULL)" (empty: none).
std::vector<plan_node> plan_of(session& s, const storage::detail::statement& stmt, const std::string& args,
                               bool generic) {
  s.exec(std::string("SET plan_cache_mode = ") + (generic ? "force_generic_plan" : "force_custom_plan"));
  const auto text = s.exec("EXPLAIN (FORMAT JSON) EXECUTE " + std::string(stmt.name) + args);
  std::vector<plan_node> nodes;
  collect(json::parse(text).at(0).at("Plan"), nodes);
  return nodes;
}

/// Both plans of `stmt` with `args`: no sequential scan of a table, and `index` (a prefix of its name) among
/// those walked (or one of "a|b"), with `bound` in its index condition (where the scan starts, not a filter
/// of what it reads).
void check_plans(session& s, const storage::detail::statement& stmt, const std::string& args,
                 const std::string& index, const std::string& bound = "") {
  for (const bool generic : {false, true}) {
    BOOST_TEST_CONTEXT(stmt.name << args << (generic ? " (generic plan)" : " (custom plan)")) {
      const auto nodes = plan_of(s, stmt, args, generic);
      bool walked = false;
      for (const auto& n : nodes) {
        BOOST_TEST_INFO(n.type << " " << n.relation << " " << n.index);
        // keel.workers holds a row per live worker process (not history): read whole, as get() does.
        BOOST_TEST((n.type != "Seq Scan" || n.relation == "workers"));
        // `index` may name alternatives: "a|b".
        bool named = false;
        for (std::size_t from = 0; from <= index.size();) {
          const auto bar = std::min(index.find('|', from), index.size());
          named |= n.index.starts_with(index.substr(from, bar - from));
          from = bar + 1;
        }
        walked |= named && n.condition.find(bound) != std::string::npos;
      }
      BOOST_TEST(walked, "uses " << index);
      if (!walked) {
        s.exec("SET plan_cache_mode = " + std::string(generic ? "force_generic_plan" : "force_custom_plan"));
        std::cerr << s.exec("EXPLAIN (FORMAT YAML) EXECUTE " + std::string(stmt.name) + args) << "\n";
      }
    }
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(the_inbox_stats_and_children_reads_walk_their_indexes_not_the_tables,
                     *utf::timeout(300)) {
  const auto db = fresh_database();
  {
    engine e(options_for(db));  // migrates
    BOOST_REQUIRE(e.start_blocking());
    e.stop_blocking();
  }
  session s(db);
  // 200,000 runs: 1% failed, 1% cancelled, 0.1% waiting, the rest completed; half of them children of 5,000
  // parents, of 20 workflows.
  s.exec(R"sql(
INSERT INTO keel.runs (id, workflow, version, status, input, created_at, finished_at, parent_id, waiting_for)
SELECT gen_random_uuid(), 'w' || (i % 20), 1,
       CASE WHEN i % 100 = 0 THEN 'failed' WHEN i % 100 = 1 THEN 'cancelled'
            WHEN i % 1000 = 2 THEN 'waiting' ELSE 'completed' END,
       '{}'::jsonb, now(), CASE WHEN i % 1000 = 2 THEN NULL ELSE now() END,
       CASE WHEN i % 2 = 0 THEN ('00000000-0000-7000-8000-' || lpad((i % 5000)::text, 12, '0'))::uuid END,
       CASE WHEN i % 1000 = 2 THEN '{"kind": "hook"}'::jsonb END
FROM generate_series(1, 200000) i)sql");
  // About 1% of the failed runs dead-lettered (some 20); 2,000 queued runs of w0..w19 version 1 (claimable: a
  // worker registers those), and 20 of w7 version 2, which no worker has.
  s.exec(R"sql(
UPDATE keel.runs SET error = jsonb_build_object('code', CASE WHEN get_byte(uuid_send(id), 15) < 3
                                                        THEN 'dead_lettered' ELSE 'step_failed' END)
WHERE status = 'failed')sql");
  s.exec(R"sql(
INSERT INTO keel.runs (id, workflow, version, status, input, created_at, due_at)
SELECT gen_random_uuid(), CASE WHEN i <= 20 THEN 'w7' ELSE 'w' || (i % 20) END, CASE WHEN i <= 20 THEN 2 ELSE 1 END,
       'queued', '{}'::jsonb, now(), now() + interval '1 day'
FROM generate_series(1, 2020) i)sql");
  s.exec(R"sql(
INSERT INTO keel.workers (id, workflows, expires_at)
SELECT 'worker' || k, (SELECT jsonb_agg(jsonb_build_object('workflow', 'w' || j, 'version', 1))
                       FROM generate_series(0, 19) j), now() + interval '1 hour'
FROM generate_series(1, 3) k)sql");
  // A hook per run: open and expiring in an hour for the waiting runs, open but expired for a third of the
  // others (nothing closes them), resumed for the rest.
  s.exec(R"sql(
INSERT INTO keel.hooks (token_hash, run_id, seq, name, created_at, expires_at, status, workflow)
SELECT sha256(convert_to(id::text, 'UTF8')), id, 0, 'decision', now() - interval '2 hours',
       CASE WHEN status = 'waiting' THEN now() + interval '1 hour' ELSE now() - interval '1 hour' END,
       CASE WHEN status = 'waiting' OR get_byte(uuid_send(id), 15) % 3 = 0 THEN 'open' ELSE 'resumed' END,
       workflow
FROM keel.runs)sql");
  // 100,000 log rows written over the last two hours up to half an hour ago, and 50 in the last minute.
  s.exec(R"sql(
INSERT INTO keel.run_log (pos, n, at, runs, kinds, data)
SELECT i::bigint * 1048576 + 1, 3,
       CASE WHEN i <= 100000 THEN now() - interval '2 hours' + i * interval '50 ms' ELSE now() - interval '10 s' END,
       ARRAY[gen_random_uuid(), gen_random_uuid(), gen_random_uuid()],
       ARRAY['step_completed', 'step_completed', 'run_completed'], ARRAY[NULL::jsonb, NULL, NULL]
FROM generate_series(1, 100050) i)sql");
  s.exec("ANALYZE");
  for (const auto* stmt : {&sql::list_hooks, &sql::list_hooks_of_workflow, &sql::count_at_rest,
                           &sql::steps_log_boundary, &sql::count_steps_since, &sql::list_children,
                           &sql::list_dead_lettered_runs, &sql::list_dead_lettered_runs_of_workflow,
                           &sql::list_unclaimable_runs, &sql::list_unclaimable_runs_of_workflow})
    s.exec("PREPARE " + std::string(stmt->name) + " AS " + stmt->sql);

  // The inbox: a first page, a page after a cursor, one among the hooks that never expire; of a workflow.
  const std::string nil = "'00000000-0000-0000-0000-000000000000'";
  const auto cursor_us = s.exec("SELECT (extract(epoch FROM now() + interval '30 minutes') * 1e6)::bigint");
  for (const auto& args : {"('51', '0', " + nil + ", '-1')", "('51', '" + cursor_us + "', " + nil + ", '3')",
                           "('51', NULL, " + nil + ", '0')"}) {
    // The scan starts at the cursor, or now() (the expired hooks before it never read).
    check_plans(s, sql::list_hooks, args, "hooks_open_by_expiry", "ROW(");
    check_plans(s, sql::list_hooks, args, "hooks_open_by_expiry", "> now()");
    // One workflow's: through its own index, or the other one where the planner sees few hooks to walk.
    check_plans(s, sql::list_hooks_of_workflow, args.substr(0, args.size() - 1) + ", 'w2')", "hooks_open_by_",
                "ROW(");
  }
  // The counts: resting runs and open hooks, up to the cap.
  check_plans(s, sql::count_at_rest, "('10001')", "runs_resting_by_status");
  check_plans(s, sql::count_at_rest, "('10001')", "hooks_open_by_expiry", "> now()");
  // The last minute's steps: where it starts, found from the end of the log, then the rows after it.
  check_plans(s, sql::steps_log_boundary, "", "run_log_pkey");
  const auto boundary = s.exec("EXECUTE keel_steps_log_boundary");
  BOOST_TEST(boundary == std::to_string(100000LL * 1048576 + 1));
  check_plans(s, sql::count_steps_since, "('" + boundary + "')", "run_log_pkey");
  s.exec("SET plan_cache_mode = auto");
  BOOST_TEST(s.exec("EXECUTE keel_count_steps_since('" + boundary + "')") == "100");
  // A run's children, alone or with the other filters.
  const std::string parent = "'00000000-0000-7000-8000-000000000042'";
  for (const auto& args :
       {"(NULL, '51', " + parent + ", NULL, NULL, NULL)",
        "(NULL, '51', " + parent + ", 'w2', 'completed', NULL)",
        "('ffffffff-ffff-ffff-ffff-ffffffffffff', '51', " + parent + ", NULL, 'failed', NULL)",
        "(NULL, '51', " + parent + ", NULL, NULL, 'unclaimable')"})
    check_plans(s, sql::list_children, args, "runs_children");
  // Its dead-lettered children: runs_children, or (a custom plan) the few dead-lettered runs' own index.
  check_plans(s, sql::list_children, "(NULL, '51', " + parent + ", NULL, 'failed', 'dead_lettered')",
              "runs_children|runs_dead_lettered");
  // Dead-lettered runs: their own index, from the cursor, not the failed runs filtered.
  const std::string mid = "'80000000-0000-0000-0000-000000000000'";
  for (const std::string& args : {std::string("(NULL, '51')"), "(" + mid + ", '51')"}) {
    check_plans(s, sql::list_dead_lettered_runs, args, "runs_dead_lettered", "id <");
    check_plans(s, sql::list_dead_lettered_runs_of_workflow, args.substr(0, args.size() - 1) + ", 'w0')",
                "runs_dead_lettered_by_workflow", "id <");
  }
  s.exec("SET plan_cache_mode = auto");
  const auto dead = s.exec("SELECT count(*) FROM keel.runs WHERE error->>'code' = 'dead_lettered'");
  BOOST_TEST(std::stoi(dead) > 0);
  BOOST_TEST(std::stoi(dead) < 51);  // a page that does not fill: all of them, found without the others
  // Unclaimable runs: a skip over the queued (workflow, version) pairs, then a page of each unregistered
  // one's from the cursor; the 2,000 claimable queued runs are never walked.
  for (const std::string& args : {std::string("(NULL, '51')"), "(" + mid + ", '51')"}) {
    check_plans(s, sql::list_unclaimable_runs, args, "runs_queued_by_version", "ROW(workflow, version) >");
    check_plans(s, sql::list_unclaimable_runs, args, "runs_queued_by_version", "id <");
    check_plans(s, sql::list_unclaimable_runs_of_workflow, args.substr(0, args.size() - 1) + ", 'w7')",
                "runs_queued_by_version", "id <");
  }
  s.exec("SET plan_cache_mode = auto");
  BOOST_TEST(s.rows("EXECUTE keel_list_unclaimable_runs(NULL, '51')") == 20);
}

BOOST_AUTO_TEST_SUITE_END()
