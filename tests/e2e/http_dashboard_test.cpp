// What the dashboard reads over HTTP, with a real client on loopback and the example workflows: the inbox of
// pending decisions (GET /v1/hooks), the counters (GET /v1/stats), a run's children and what listed runs
// wait for (GET /v1/runs).
#define BOOST_TEST_MODULE http_dashboard
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <boost/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "api_workflows.hpp"
#include "engine_fixture.hpp"
#include "http_client.hpp"
#include "keel/common/time_text.hpp"
#include "keel/http/server.hpp"
#include "served_engine.hpp"
#include "tcp_proxy.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace {

/// The example workflows (approval, countdown, order, noop3) and two of the test's own, served on a free
/// port: `forever` waits on a hook that never expires, `family` runs three `noop3` children one after the
/// other and then waits on such a hook too.
struct served : served_engine {
  explicit served(http::server_options o = {}) : served(options_for(fresh_database()), std::move(o)) {}
  served(engine_options eo, http::server_options o)
      : served_engine(register_workflows, std::move(o), std::move(eo)) {}
  static void register_workflows(engine& e) {
    examples::register_api_workflows(e);
    add_workflow(e, "forever", [](context& ctx, json::value in) -> asio::awaitable<json::value> {
      hook_options options;
      options.metadata = json::object{{"asked", in}};
      const std::string name = "answer";
      auto hook = co_await ctx.create_hook(name, options);
      auto answer = co_await hook.wait();
      co_return answer ? *answer : json::value("expired");
    });
    add_workflow(e, "family", [](context& ctx, json::value) -> asio::awaitable<json::value> {
      for (int i = 0; i < 3; ++i) {
        const json::value input = json::object{};
        co_await ctx.child<json::value>("noop3", input);
      }
      const std::string name = "done";
      const hook_options options;  // named: GCC 12 destroys a braced temporary in co_await twice
      auto hook = co_await ctx.create_hook(name, options);
      auto answer = co_await hook.wait();
      co_return answer ? *answer : json::value(nullptr);
    });
  }
};

std::string start(client& c, const std::string& workflow, const std::string& body) {
  auto r = c.send(bhttp::verb::post, "/v1/workflows/" + workflow + "/runs", body);
  BOOST_REQUIRE(r.status == 201);
  return std::string(r.body.at("id").as_string());
}

std::string status_of_run(client& c, const std::string& id) {
  auto r = c.send(bhttp::verb::get, "/v1/runs/" + id);
  return r.status == 200 ? std::string(r.body.at("status").as_string()) : "?";
}

void wait_for_status(client& c, const std::string& id, const std::string& status) {
  BOOST_TEST_INFO(id << " to become " << status);
  BOOST_REQUIRE(wait_until([&] { return status_of_run(c, id) == status; }, 20s));
}

/// Every hook of the inbox, reading `target` (with its query) a page at a time; the pages' count in `pages`.
std::vector<json::object> whole_inbox(client& c, const std::string& target, int* pages = nullptr) {
  std::vector<json::object> out;
  std::string cursor;
  const char sep = target.find('?') == std::string::npos ? '?' : '&';
  for (int page = 1; page <= 100; ++page) {
    const auto r = c.send(bhttp::verb::get, target + (cursor.empty() ? "" : sep + ("cursor=" + cursor)));
    BOOST_REQUIRE(r.status == 200);
    for (const auto& h : r.body.at("hooks").as_array())
      out.push_back(h.as_object());
    if (pages != nullptr) *pages = page;
    if (r.body.at("next_cursor").is_null()) return out;
    cursor = std::string(r.body.at("next_cursor").as_string());
  }
  BOOST_FAIL("the inbox never ended");
  return out;
}

std::vector<std::string> run_ids(const std::vector<json::object>& hooks) {
  std::vector<std::string> ids;
  for (const auto& h : hooks)
    ids.emplace_back(h.at("run_id").as_string());
  return ids;
}

std::int64_t stat(const json::value& stats, const std::string& key) {
  BOOST_TEST_INFO(key);
  return stats.at(key).as_int64();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(the_inbox_lists_hooks_that_take_a_resume_now_soonest_expiry_first_a_page_at_a_time,
                     *utf::timeout(120)) {
  served srv;
  client c(srv.s->port());
  // Approvals expiring in 3000, 1000, 5000, 2000 and 4000 s, and two hooks that never expire.
  std::vector<std::string> by_expiry(5);
  for (const int ttl : {3000, 1000, 5000, 2000, 4000})
    by_expiry[ttl / 1000 - 1] =
        start(c, "approval",
              R"({"input":{"amount":)" + std::to_string(ttl) + R"(,"ttl_s":)" + std::to_string(ttl) + "}}");
  std::vector<std::string> never{start(c, "forever", R"({"input":"a"})"),
                                 start(c, "forever", R"({"input":"b"})")};
  std::sort(never.begin(), never.end());  // ties (no expiry) go by run id
  for (const auto& id : by_expiry)
    wait_for_status(c, id, "waiting");
  for (const auto& id : never)
    wait_for_status(c, id, "waiting");
  auto expected = by_expiry;
  expected.insert(expected.end(), never.begin(), never.end());

  const auto all = c.send(bhttp::verb::get, "/v1/hooks");
  BOOST_REQUIRE(all.status == 200);
  BOOST_TEST(all.body.at("next_cursor").is_null());
  std::vector<json::object> hooks;
  for (const auto& h : all.body.at("hooks").as_array())
    hooks.push_back(h.as_object());
  BOOST_TEST(run_ids(hooks) == expected, boost::test_tools::per_element());
  // Each as the run shows it: the same link (the token is derived, never stored), times in RFC 3339.
  for (const auto& h : hooks) {
    const std::string id(h.at("run_id").as_string());
    BOOST_TEST_INFO(id);
    const auto run = c.send(bhttp::verb::get, "/v1/runs/" + id).body;
    BOOST_REQUIRE(run.at("hooks").as_array().size() == 1u);
    const auto& own = run.at("hooks").at(0);
    BOOST_TEST(h.at("workflow") == run.at("workflow"));
    BOOST_TEST(h.at("name") == own.at("name"));
    BOOST_TEST(h.at("path") == own.at("path"));
    BOOST_TEST(h.at("created_at") == own.at("created_at"));
    BOOST_TEST(h.at("expires_at") == own.at("expires_at"));
    BOOST_TEST(h.at("metadata") == own.at("metadata"));
    BOOST_TEST(h.at("run_created_at") == run.at("created_at"));
    BOOST_TEST(parse_rfc3339(h.at("created_at").as_string()).has_value());
  }
  BOOST_TEST(hooks[0].at("metadata").at("amount") == 1000);
  BOOST_TEST(hooks[0].at("name") == "decision");
  BOOST_TEST(hooks[6].at("expires_at").is_null());
  BOOST_TEST(hooks[6].at("name") == "answer");
  const auto soonest = parse_rfc3339(hooks[0].at("expires_at").as_string());
  BOOST_REQUIRE(soonest.has_value());
  BOOST_TEST((*soonest > std::chrono::system_clock::now() + 990s));

  // Pages of every size read the same list: no duplicate, no gap, across the expiring and the others.
  for (const int limit : {1, 2, 3, 6, 7, 1000}) {
    BOOST_TEST_INFO("limit " << limit);
    int pages = 0;
    const auto paged = whole_inbox(c, "/v1/hooks?limit=" + std::to_string(limit), &pages);
    BOOST_TEST(run_ids(paged) == expected, boost::test_tools::per_element());
    BOOST_TEST(pages == (7 + limit - 1) / limit);  // a full last page says so: no empty page follows
  }
  // One workflow's, through its own index, paged as well.
  auto approvals = whole_inbox(c, "/v1/hooks?workflow=approval&limit=2");
  BOOST_TEST(run_ids(approvals) == by_expiry, boost::test_tools::per_element());
  BOOST_TEST(run_ids(whole_inbox(c, "/v1/hooks?limit=1&workflow=forever")) == never,
             boost::test_tools::per_element());
  BOOST_TEST(whole_inbox(c, "/v1/hooks?workflow=countdown").empty());

  // A resumed hook leaves the inbox at once; so does the hook of a cancelled run.
  const auto resumed = c.send(bhttp::verb::post, std::string(hooks[1].at("path").as_string()),
                              R"({"approved":true,"by":"ann"})");
  BOOST_TEST(resumed.status == 202);
  BOOST_TEST(c.send(bhttp::verb::post, "/v1/runs/" + by_expiry[2] + "/cancel").status == 200);
  wait_for_status(c, by_expiry[2], "cancelled");
  const std::vector<std::string> left{by_expiry[0], by_expiry[3], by_expiry[4], never[0], never[1]};
  BOOST_TEST(run_ids(whole_inbox(c, "/v1/hooks?limit=2")) == left, boost::test_tools::per_element());
  wait_for_status(c, by_expiry[1], "completed");

  // An expired hook leaves it when its time runs out (its run then wakes and fails).
  const auto brief = start(c, "approval", R"({"input":{"amount":1,"ttl_s":2}})");
  std::string expires_at;
  BOOST_REQUIRE(wait_until(
      [&] {
        const auto run = c.send(bhttp::verb::get, "/v1/runs/" + brief).body;
        if (run.at("hooks").as_array().empty()) return false;
        expires_at = std::string(run.at("hooks").at(0).at("expires_at").as_string());
        return true;
      },
      10s));
  const auto in_inbox = [&] {
    const auto ids = run_ids(whole_inbox(c, "/v1/hooks"));
    return std::find(ids.begin(), ids.end(), brief) != ids.end();
  };
  const auto read = run_ids(whole_inbox(c, "/v1/hooks"));
  if (std::chrono::system_clock::now() < *parse_rfc3339(expires_at)) {
    // Still open while it was read: listed first, the soonest to expire.
    BOOST_REQUIRE(!read.empty());
    BOOST_TEST(read.front() == brief);
  }
  BOOST_REQUIRE(wait_until([&] { return !in_inbox(); }, 10s));
  BOOST_TEST((std::chrono::system_clock::now() >= *parse_rfc3339(expires_at)));
  wait_for_status(c, brief, "failed");
  BOOST_TEST(run_ids(whole_inbox(c, "/v1/hooks")) == left, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(bad_inbox_and_listing_parameters_get_400_invalid_request, *utf::timeout(60)) {
  served srv;
  client c(srv.s->port());
  for (const std::string bad : {
           "/v1/hooks?limit=0",
           "/v1/hooks?limit=1001",
           "/v1/hooks?limit=x",
           "/v1/hooks?limit=-1",
           "/v1/hooks?cursor=abc",
           "/v1/hooks?cursor=1.2.3",
           "/v1/hooks?cursor=never.0190b3c2-0000-7000-8000-000000000000.-1",
           "/v1/hooks?cursor=-5.0190b3c2-0000-7000-8000-000000000000.1",
           "/v1/hooks?cursor=12.not-a-uuid.1",
           "/v1/hooks?cursor=12.0190b3c2-0000-7000-8000-000000000000.",
           "/v1/hooks?cursor=12.0190b3c2-0000-7000-8000-000000000000.99999999999",
           "/v1/hooks?workflow=",
           "/v1/hooks?status=open",
           "/v1/hooks?limit=1&limit=2",
           "/v1/runs?parent=abc",
           "/v1/runs?parent=",
           "/v1/runs?parent=0190b3c2-0000-7000-8000-000000000000&parent=0190b3c2-0000-7000-8000-000000000000",
           "/v1/runs?parent=0190b3c2-0000-7000-8000-000000000000&limit=0",
           "/v1/runs?parent=0190b3c2-0000-7000-8000-000000000000&cursor=x",
           "/v1/stats?x=1",
       }) {
    BOOST_TEST_CONTEXT(bad) {
      const auto r = c.send(bhttp::verb::get, bad);
      BOOST_TEST(r.status == 400);
      BOOST_TEST(r.code() == "invalid_request");
      BOOST_TEST(!r.body.at("error").at("message").as_string().empty());
    }
  }
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/runs?parent=abc").body.at("error").at("message") ==
             "parent must be a run id (a UUID)");
  // Other methods: 405 naming GET; a hook's POST path (three segments) is unchanged.
  for (const std::string path : {"/v1/hooks", "/v1/stats"}) {
    const auto r = c.send(bhttp::verb::post, path, "{}");
    BOOST_TEST(r.status == 405, path);
    BOOST_TEST(r.raw[bhttp::field::allow] == "GET", path);
  }
  BOOST_TEST(c.send(bhttp::verb::post, "/v1/hooks/no-such-token", "{}").code() == "hook_not_found");
  // A well-formed cursor past every hook: an empty last page.
  const auto past = c.send(bhttp::verb::get, "/v1/hooks?cursor=never.ffffffff-ffff-7fff-bfff-ffffffffffff.0");
  BOOST_TEST(past.status == 200);
  BOOST_TEST(past.body.at("hooks").as_array().empty());
  BOOST_TEST(past.body.at("next_cursor").is_null());
}

BOOST_AUTO_TEST_CASE(stats_count_runs_by_status_waiting_hooks_and_the_last_minutes_steps,
                     *utf::timeout(120)) {
  auto db = fresh_database();
  tcp_proxy proxy(db);  // between the engine and PostgreSQL: holds the count on demand
  served srv(options_for(proxy.conninfo()), {});
  client c(srv.s->port());
  auto stats = [&] {
    const auto r = c.send(bhttp::verb::get, "/v1/stats");
    BOOST_REQUIRE(r.status == 200);
    return r.body;
  };
  const auto empty = stats();
  BOOST_TEST(json::serialize(empty.at("runs")) == R"({"queued":0,"running":0,"sleeping":0,"waiting":0})");
  for (const auto* key : {"failed", "cancelled", "waiting_on_hooks", "queue_depth", "steps_last_minute"})
    BOOST_TEST(stat(empty, key) == 0);
  BOOST_TEST(empty.at("failed_capped") == false);
  BOOST_TEST(empty.at("cancelled_capped") == false);
  BOOST_TEST(empty.at("waiting_on_hooks_capped") == false);
  BOOST_TEST(stat(empty, "count_cap") == 10000);
  BOOST_TEST(empty.at("steps_per_s").as_double() == 0.0);
  const auto at = parse_rfc3339(empty.at("at").as_string());
  BOOST_REQUIRE(at.has_value());
  BOOST_TEST((std::chrono::abs(*at - std::chrono::system_clock::now()) < 60s));

  // Steps completed in the last minute, by any worker: from the durable run log.
  std::vector<std::string> noops;
  for (int i = 0; i < 5; ++i)
    noops.push_back(start(c, "noop3", R"({"input":{}})"));
  for (const auto& id : noops)
    wait_for_status(c, id, "completed");
  const auto after_noops = stats();
  BOOST_TEST(stat(after_noops, "steps_last_minute") >= 15);
  BOOST_TEST(after_noops.at("steps_per_s").as_double() ==
             static_cast<double>(stat(after_noops, "steps_last_minute")) / 60.0);

  // A waiting approval, a sleeping countdown, a failed order, a run queued for later.
  const auto approval = start(c, "approval", R"({"input":{"amount":5}})");
  const auto countdown = start(c, "countdown", R"({"input":{"n":3,"delay_ms":600000}})");
  const auto order = start(c, "order", R"({"input":{"card":"declined"}})");
  const auto later = start(c, "noop3", R"({"input":{},"run_at":"2100-01-01T00:00:00Z"})");
  wait_for_status(c, approval, "waiting");
  wait_for_status(c, countdown, "sleeping");
  wait_for_status(c, order, "failed");
  const auto busy = stats();
  BOOST_TEST(json::serialize(busy.at("runs")) == R"({"queued":1,"running":0,"sleeping":1,"waiting":1})");
  BOOST_TEST(stat(busy, "queue_depth") == 0);  // the queued run is not due
  BOOST_TEST(stat(busy, "waiting_on_hooks") == 1);
  BOOST_TEST(stat(busy, "failed") == 1);
  BOOST_TEST(stat(busy, "cancelled") == 0);
  BOOST_TEST(stat(busy, "steps_last_minute") > stat(after_noops, "steps_last_minute"));

  // Cancelled: the sleeping run and the one queued; resumed: the hook no longer waits.
  BOOST_TEST(c.send(bhttp::verb::post, "/v1/runs/" + countdown + "/cancel").status == 200);
  BOOST_TEST(c.send(bhttp::verb::post, "/v1/runs/" + later + "/cancel").status == 200);
  const auto path = std::string(
      c.send(bhttp::verb::get, "/v1/runs/" + approval).body.at("hooks").at(0).at("path").as_string());
  BOOST_TEST(c.send(bhttp::verb::post, path, R"({"approved":false,"by":"bo"})").status == 202);
  wait_for_status(c, countdown, "cancelled");
  wait_for_status(c, later, "cancelled");
  wait_for_status(c, approval, "completed");
  const auto settled = stats();
  BOOST_TEST(json::serialize(settled.at("runs")) == R"({"queued":0,"running":0,"sleeping":0,"waiting":0})");
  BOOST_TEST(stat(settled, "cancelled") == 2);
  BOOST_TEST(stat(settled, "failed") == 1);
  BOOST_TEST(stat(settled, "waiting_on_hooks") == 0);
  // A database that does not answer: 503 within the 2 s, and the server goes on.
  proxy.hold("keel_count_unfinished_runs");
  const auto t0 = std::chrono::steady_clock::now();
  const auto hung = c.send(bhttp::verb::get, "/v1/stats");
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < 5s));
  BOOST_TEST(hung.status == 503);
  BOOST_TEST(hung.code() == "unavailable");
  BOOST_TEST(c.send(bhttp::verb::get, "/healthz").status == 200);
  proxy.release();
  BOOST_TEST(wait_until([&] { return c.send(bhttp::verb::get, "/v1/stats").status == 200; }, 10s));
}

BOOST_AUTO_TEST_CASE(runs_list_a_parents_children_and_what_each_waiting_run_waits_for, *utf::timeout(120)) {
  served srv;
  client c(srv.s->port());
  const auto family = start(c, "family", R"({"input":{}})");
  const auto other = start(c, "family", R"({"input":{}})");
  const auto countdown = start(c, "countdown", R"({"input":{"n":2,"delay_ms":600000}})");
  // Both families past their children, waiting on their hooks (a wait for a child is `waiting` too).
  for (const auto& id : {family, other}) {
    BOOST_TEST_INFO(id);
    BOOST_REQUIRE(wait_until(
        [&] {
          const auto run = c.send(bhttp::verb::get, "/v1/runs/" + id).body;
          return run.at("status") == "waiting" && run.at("waiting_for").at("kind") == "hook";
        },
        20s));
  }
  wait_for_status(c, countdown, "sleeping");

  auto listed = [&](const std::string& target) {
    const auto r = c.send(bhttp::verb::get, target);
    BOOST_REQUIRE(r.status == 200);
    std::vector<std::string> ids;
    for (const auto& run : r.body.at("runs").as_array())
      ids.emplace_back(run.at("id").as_string());
    return std::make_pair(ids, r.body.at("next_cursor"));
  };
  const auto children = listed("/v1/runs?parent=" + family).first;
  BOOST_REQUIRE(children.size() == 3u);
  BOOST_TEST(listed("/v1/runs?parent=" + family).second.is_null());
  BOOST_TEST(std::is_sorted(children.begin(), children.end(), std::greater<>()));  // newest first
  for (const auto& id : children) {
    const auto run = c.send(bhttp::verb::get, "/v1/runs/" + id).body;
    BOOST_TEST(run.at("workflow") == "noop3");
    BOOST_TEST(run.at("status") == "completed");
  }
  const auto others = listed("/v1/runs?parent=" + other).first;
  BOOST_TEST(others.size() == 3u);
  for (const auto& id : others)
    BOOST_TEST((std::find(children.begin(), children.end(), id) == children.end()));
  // Paged, and with the other filters.
  std::vector<std::string> paged;
  std::string cursor;
  for (int page = 0; page < 5; ++page) {
    const auto page_of =
        listed("/v1/runs?limit=2&parent=" + family + (cursor.empty() ? "" : "&cursor=" + cursor));
    paged.insert(paged.end(), page_of.first.begin(), page_of.first.end());
    if (page_of.second.is_null()) break;
    cursor = std::string(page_of.second.as_string());
  }
  BOOST_TEST(paged == children, boost::test_tools::per_element());
  BOOST_TEST(listed("/v1/runs?workflow=noop3&status=completed&parent=" + family).first == children,
             boost::test_tools::per_element());
  BOOST_TEST(listed("/v1/runs?status=failed&parent=" + family).first.empty());
  BOOST_TEST(listed("/v1/runs?workflow=family&parent=" + family).first.empty());
  BOOST_TEST(listed("/v1/runs?parent=" + children[0]).first.empty());
  BOOST_TEST(listed("/v1/runs?parent=0190b3c2-0000-7000-8000-000000000000").first.empty());

  // Each run of a listing says what it waits for, as the run does, times in RFC 3339.
  const auto all = c.send(bhttp::verb::get, "/v1/runs?limit=1000").body.at("runs").as_array();
  BOOST_TEST(all.size() == 9u);
  for (const auto& summary : all) {
    const std::string id(summary.at("id").as_string());
    BOOST_TEST_INFO(id);
    const auto run = c.send(bhttp::verb::get, "/v1/runs/" + id).body;
    BOOST_TEST(summary.at("waiting_for") == run.at("waiting_for"));
    if (summary.at("status") == "completed") BOOST_TEST(summary.at("waiting_for").is_null());
  }
  const auto waiting = c.send(bhttp::verb::get, "/v1/runs?status=waiting&workflow=family").body;
  BOOST_REQUIRE(waiting.at("runs").as_array().size() == 2u);
  const auto& on_hook = waiting.at("runs").at(0).at("waiting_for");
  BOOST_TEST(on_hook.at("kind") == "hook");
  BOOST_TEST(parse_rfc3339(on_hook.at("started").as_string()).has_value());
  const auto sleeping = c.send(bhttp::verb::get, "/v1/runs?status=sleeping").body.at("runs").as_array();
  BOOST_REQUIRE(sleeping.size() == 1u);
  const auto& sleep = sleeping[0].at("waiting_for");
  BOOST_TEST(sleep.at("kind") == "sleep");
  const auto until = parse_rfc3339(sleep.at("until").as_string());
  BOOST_REQUIRE(until.has_value());
  BOOST_TEST((*until > std::chrono::system_clock::now() + 500s));
}

BOOST_AUTO_TEST_CASE(the_inbox_and_stats_need_an_api_key_as_the_rest_of_v1_does, *utf::timeout(60)) {
  http::server_options o;
  o.api_keys = {"dashboard-key-0123"};
  served srv(o);
  client c(srv.s->port());
  const std::vector<std::pair<std::string, std::string>> key{{"Authorization", "Bearer dashboard-key-0123"}};
  for (const std::string target : {"/v1/hooks", "/v1/hooks?limit=1", "/v1/stats", "/v1/runs?parent=x"}) {
    BOOST_TEST_CONTEXT(target) {
      const auto refused = c.send(bhttp::verb::get, target);
      BOOST_TEST(refused.status == 401);
      BOOST_TEST(refused.code() == "unauthorized");
    }
  }
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/hooks", "", key).status == 200);
  BOOST_TEST(c.send(bhttp::verb::get, "/v1/stats", "", key).status == 200);
  // The hook's own link still needs none: its token is the authorisation.
  const auto started = c.send(bhttp::verb::post, "/v1/workflows/forever/runs", R"({"input":1})", key);
  BOOST_REQUIRE(started.status == 201);
  std::string path;
  BOOST_REQUIRE(wait_until(
      [&] {
        const auto inbox = c.send(bhttp::verb::get, "/v1/hooks", "", key).body.at("hooks").as_array();
        if (inbox.empty()) return false;
        path = std::string(inbox[0].at("path").as_string());
        return true;
      },
      10s));
  BOOST_TEST(c.send(bhttp::verb::post, path, R"("yes")").status == 202);
}

BOOST_AUTO_TEST_SUITE_END()
