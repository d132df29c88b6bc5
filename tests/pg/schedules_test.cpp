// Cron schedules on a real PostgreSQL: their definitions (put, pause, resume, delete, list), what firing does
// with occurrences on time, missed and caught up, and two engines firing the same schedule.
#define BOOST_TEST_MODULE schedules
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <thread>

#include "engine_fixture.hpp"
#include "keel/common/time_text.hpp"
#include "keel/storage/error.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

void add_noop(engine& e, const std::string& name = "report") {
  add_workflow(e, name, [](context&, json::value in) -> asio::awaitable<json::value> { co_return in; });
}

schedule_spec spec_of(std::string name, std::string cron, std::string zone = "UTC") {
  schedule_spec s;
  s.name = std::move(name);
  s.workflow = "report";
  s.cron = std::move(cron);
  s.time_zone = std::move(zone);
  s.input = json::object{{"kind", "nightly"}};
  return s;
}

long count_of(const std::string& db, const std::string& sql) {
  return std::stol(query_value(db, sql));
}

long runs_of(const std::string& db, const std::string& schedule) {
  return count_of(db,
                  "SELECT count(*) FROM keel.runs WHERE idempotency_key LIKE 'schedule:" + schedule + "@%'");
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_put_is_checked_before_anything_is_written) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_noop(e);
  BOOST_REQUIRE(e.tick_blocking());
  auto bad_cron = e.put_schedule_blocking(spec_of("a", "61 * * * *"));
  BOOST_TEST((bad_cron.error() == errc::invalid_cron_expression));
  auto bad_zone = e.put_schedule_blocking(spec_of("a", "0 9 * * *", "Mars/Olympus_Mons"));
  BOOST_TEST((bad_zone.error() == errc::unknown_time_zone));
  auto other = spec_of("a", "0 9 * * *");
  other.workflow = "nobody_runs_this";
  BOOST_TEST((e.put_schedule_blocking(other).error() == errc::unknown_workflow));
  for (const std::string& name :
       std::vector<std::string>{"", "has space", "slash/in/it", std::string(201, 'x')}) {
    BOOST_TEST(
        (e.put_schedule_blocking(spec_of(name, "0 9 * * *")).error() == storage::errc::invalid_argument),
        name);
  }
  auto too_many = spec_of("a", "0 9 * * *");
  too_many.catch_up = 1001;
  BOOST_TEST((e.put_schedule_blocking(too_many).error() == storage::errc::invalid_argument));
  BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.schedules") == 0);
  BOOST_TEST((e.get_schedule_blocking("a").error() == errc::schedule_not_found));
  BOOST_TEST((e.delete_schedule_blocking("a").error() == errc::schedule_not_found));
  BOOST_TEST((e.pause_schedule_blocking("a").error() == errc::schedule_not_found));
}

BOOST_AUTO_TEST_CASE(a_put_again_changes_nothing_and_a_new_expression_moves_the_next_firing) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_noop(e);
  BOOST_REQUIRE(e.tick_blocking());
  const auto before = std::chrono::system_clock::now();
  auto first = e.put_schedule_blocking(spec_of("nightly", "  0 9 * * *  ", "America/New_York"));
  BOOST_REQUIRE(first);
  BOOST_TEST(first->created);
  BOOST_TEST(first->changed);
  const auto& s = first->schedule;
  BOOST_TEST(s.cron == "0 9 * * *");  // stored without its blanks
  BOOST_TEST(!s.paused);
  BOOST_REQUIRE(s.next_fire_at.has_value());
  BOOST_TEST((*s.next_fire_at > before && *s.next_fire_at <= before + 25h));
  BOOST_REQUIRE_EQUAL(s.upcoming.size(), 5u);
  BOOST_TEST((s.upcoming.front() == *s.next_fire_at));
  for (const auto& t : s.upcoming) {
    // 09:00 in New York is 13:00 or 14:00 UTC, whichever the date's offset.
    const auto text = rfc3339(t);
    BOOST_TEST((text.substr(11, 8) == "13:00:00" || text.substr(11, 8) == "14:00:00"), text);
  }

  // The same definition, as every worker puts it when it starts: nothing written.
  auto again = e.put_schedule_blocking(spec_of("nightly", "0 9 * * *", "America/New_York"));
  BOOST_REQUIRE(again);
  BOOST_TEST(!again->created);
  BOOST_TEST(!again->changed);
  BOOST_TEST(again->schedule.revision == s.revision);

  // Another input keeps the next occurrence; another expression moves it.
  auto input = spec_of("nightly", "0 9 * * *", "America/New_York");
  input.input = json::object{{"kind", "weekly"}};
  auto changed = e.put_schedule_blocking(input);
  BOOST_REQUIRE(changed);
  BOOST_TEST(changed->changed);
  BOOST_TEST(changed->schedule.revision == s.revision + 1);
  BOOST_TEST((changed->schedule.next_fire_at == s.next_fire_at));
  BOOST_TEST(json::serialize(changed->schedule.input) == R"({"kind":"weekly"})");
  auto hourly = e.put_schedule_blocking(spec_of("nightly", "@hourly", "America/New_York"));
  BOOST_REQUIRE(hourly);
  BOOST_TEST((*hourly->schedule.next_fire_at <= before + 1h + 1min));
  BOOST_TEST(rfc3339(*hourly->schedule.next_fire_at).substr(14) == "00:00.000000Z");
}

BOOST_AUTO_TEST_CASE(schedules_list_by_name_a_page_at_a_time_and_by_workflow) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_noop(e);
  add_noop(e, "cleanup");
  BOOST_REQUIRE(e.tick_blocking());
  for (const char* name : {"c", "a", "b"})
    BOOST_REQUIRE(e.put_schedule_blocking(spec_of(name, "0 * * * *")));
  auto other = spec_of("d", "0 * * * *");
  other.workflow = "cleanup";
  BOOST_REQUIRE(e.put_schedule_blocking(other));
  schedule_query q;
  q.limit = 2;
  auto page = e.list_schedules_blocking(q);
  BOOST_REQUIRE(page);
  BOOST_REQUIRE_EQUAL(page->schedules.size(), 2u);
  BOOST_TEST(page->schedules[0].name == "a");
  BOOST_TEST(page->schedules[1].name == "b");
  BOOST_TEST(page->schedules[0].upcoming.size() == 5u);
  BOOST_REQUIRE(page->next.has_value());
  q.after = page->next;
  auto rest = e.list_schedules_blocking(q);
  BOOST_REQUIRE(rest);
  BOOST_REQUIRE_EQUAL(rest->schedules.size(), 2u);
  BOOST_TEST(rest->schedules[0].name == "c");
  BOOST_TEST(rest->schedules[1].name == "d");
  BOOST_TEST(!rest->next.has_value());
  schedule_query of_cleanup;
  of_cleanup.workflow = "cleanup";
  auto cleanup = e.list_schedules_blocking(of_cleanup);
  BOOST_REQUIRE(cleanup);
  BOOST_REQUIRE_EQUAL(cleanup->schedules.size(), 1u);
  BOOST_TEST(cleanup->schedules[0].name == "d");
  schedule_query bad;
  bad.limit = 0;
  BOOST_TEST((e.list_schedules_blocking(bad).error() == storage::errc::invalid_argument));
}

BOOST_AUTO_TEST_CASE(an_occurrence_fires_one_run_with_the_schedules_input_and_key) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_noop(e);
  BOOST_REQUIRE(e.tick_blocking());  // migrates
  BOOST_REQUIRE(e.put_schedule_blocking(spec_of("every-minute", "* * * * *")));
  // Due now: its occurrence is this minute's start.
  query_value(db, "UPDATE keel.schedules SET next_fire_at = date_trunc('minute', now())");
  const auto due = query_value(db, "SELECT keel.micros(next_fire_at) FROM keel.schedules");
  const auto key = "schedule:every-minute@" +
                   rfc3339(std::chrono::system_clock::time_point(std::chrono::microseconds(std::stoll(due))));
  BOOST_REQUIRE(e.start_blocking());
  BOOST_REQUIRE(wait_until(
      [&] {
        return count_of(db, "SELECT count(*) FROM keel.runs WHERE idempotency_key = '" + key +
                                "' AND status = 'completed'") == 1;
      },
      10s));
  auto s = e.get_schedule_blocking("every-minute");
  BOOST_REQUIRE(s);
  BOOST_TEST((*s->next_fire_at > std::chrono::system_clock::now() - 1s));
  BOOST_TEST(s->last_fired_at.has_value());
  BOOST_REQUIRE(s->last_run.has_value());
  auto run = e.get_blocking(*s->last_run);
  BOOST_REQUIRE(run);
  BOOST_TEST(json::serialize(run->output) == R"({"kind":"nightly"})");
  // Its enqueue is in the run log, naming the schedule.
  BOOST_TEST(count_of(db,
                      "SELECT count(*) FROM keel.run_log, unnest(data) d WHERE d->>'schedule' = "
                      "'every-minute'") >= 1);
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(missed_occurrences_are_skipped_unless_caught_up_and_then_only_the_newest) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_noop(e);
  auto skip = spec_of("yearly-skip", "@yearly");
  auto catch_up = spec_of("yearly-three", "@yearly");
  catch_up.catch_up = 3;
  BOOST_REQUIRE(e.tick_blocking());
  BOOST_REQUIRE(e.put_schedule_blocking(skip));
  BOOST_REQUIRE(e.put_schedule_blocking(catch_up));
  // Everything was down since before 2020: seven New Years were missed (2020 to 2026).
  query_value(db, "UPDATE keel.schedules SET next_fire_at = '2020-01-01T00:00:00Z'");
  BOOST_REQUIRE(e.start_blocking());
  BOOST_REQUIRE(wait_until([&] { return runs_of(db, "yearly-three") == 3; }, 10s));
  BOOST_REQUIRE(wait_until(
      [&] { return count_of(db, "SELECT count(*) FROM keel.schedules WHERE next_fire_at > now()") == 2; },
      10s));
  std::this_thread::sleep_for(300ms);
  BOOST_TEST(runs_of(db, "yearly-skip") == 0);
  BOOST_TEST(runs_of(db, "yearly-three") == 3);
  const auto year = std::stoi(query_value(db, "SELECT extract(year FROM now())::int"));
  for (int y = year - 2; y <= year; ++y) {
    BOOST_TEST(count_of(db, "SELECT count(*) FROM keel.runs WHERE idempotency_key = 'schedule:yearly-three@" +
                                std::to_string(y) + "-01-01T00:00:00.000000Z'") == 1,
               y);
  }
  auto s = e.get_schedule_blocking("yearly-skip");
  BOOST_REQUIRE(s);
  BOOST_TEST(rfc3339(*s->next_fire_at) == std::to_string(year + 1) + "-01-01T00:00:00.000000Z");
  BOOST_TEST(!s->last_fired_at.has_value());
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(a_paused_schedule_fires_nothing_and_resumes_from_now) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_noop(e);
  auto spec = spec_of("paused", "* * * * *");
  spec.catch_up = 100;
  BOOST_REQUIRE(e.tick_blocking());
  BOOST_REQUIRE(e.put_schedule_blocking(spec));
  auto paused = e.pause_schedule_blocking("paused");
  BOOST_REQUIRE(paused);
  BOOST_TEST(paused->paused);
  BOOST_TEST(paused->upcoming.empty());
  query_value(db,
              "UPDATE keel.schedules SET next_fire_at = date_trunc('minute', now()) - interval '30 minutes'");
  BOOST_REQUIRE(e.start_blocking());
  std::this_thread::sleep_for(1500ms);  // a schedule pass or more
  BOOST_TEST(runs_of(db, "paused") == 0);
  // Resumed: the occurrences it was paused for are not replayed, whatever its catch_up.
  auto resumed = e.resume_schedule_blocking("paused");
  BOOST_REQUIRE(resumed);
  BOOST_TEST(!resumed->paused);
  BOOST_TEST((*resumed->next_fire_at > std::chrono::system_clock::now() - 1s));
  BOOST_TEST(resumed->upcoming.size() == 5u);
  std::this_thread::sleep_for(1500ms);
  BOOST_TEST(runs_of(db, "paused") <= 1);  // at most the minute that may have begun meanwhile
  // Deleted: gone, its runs stay.
  BOOST_REQUIRE(e.delete_schedule_blocking("paused"));
  BOOST_TEST((e.get_schedule_blocking("paused").error() == errc::schedule_not_found));
  e.stop_blocking();
}

BOOST_AUTO_TEST_CASE(two_engines_fire_each_occurrence_of_a_burst_exactly_once) {
  auto db = fresh_database();
  engine first(options_for(db)), second(options_for(db));
  add_noop(first);
  add_noop(second);
  auto spec = spec_of("burst", "* * * * *");
  spec.catch_up = 1000;
  BOOST_REQUIRE(first.tick_blocking());
  BOOST_REQUIRE(first.put_schedule_blocking(spec));
  // Ten hours missed, all caught up: 600 occurrences and this minute's, fired by whichever engine wins.
  query_value(db,
              "UPDATE keel.schedules SET next_fire_at = date_trunc('minute', now()) - interval '10 hours'");
  const auto revision = count_of(db, "SELECT revision FROM keel.schedules");
  BOOST_REQUIRE(first.start_blocking());
  BOOST_REQUIRE(second.start_blocking());
  BOOST_REQUIRE(wait_until([&] { return runs_of(db, "burst") >= 601; }, 20s));
  BOOST_REQUIRE(wait_until(
      [&] { return count_of(db, "SELECT count(*) FROM keel.runs WHERE status <> 'completed'") == 0; }, 60s));
  // One run per minute: consecutive keys, none twice, none missing.
  const auto runs = runs_of(db, "burst");
  BOOST_TEST((runs == 601 || runs == 602));  // a minute may have begun since
  BOOST_TEST(count_of(db, "SELECT count(*) FROM (SELECT DISTINCT r.input FROM keel.runs r) x") == 1);
  BOOST_TEST(
      count_of(db, "SELECT count(*) FROM keel.run_log, unnest(data) d WHERE d->>'schedule' = 'burst'") ==
      runs);
  // Each firing moved the schedule once: the burst's and at most one more minute's.
  const auto fired = count_of(db, "SELECT revision FROM keel.schedules") - revision;
  BOOST_TEST((fired == 1 || fired == 2));
  first.stop_blocking();
  second.stop_blocking();
}
