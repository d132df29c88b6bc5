// Cron schedules: the engine's calls that define them (put, pause, resume, delete, get, list), and the loop
// that fires the due ones. Storage's schedules.cpp holds the compare-and-set that makes a firing happen once.
#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <deque>

#include "engine_impl.hpp"
#include "keel/common/time_text.hpp"
#include "keel/engine/cron.hpp"
#include "keel/engine/engine.hpp"

namespace keel {

namespace {

using std::chrono::system_clock;

/// How many firings a schedule shows ahead (schedule_info::upcoming).
constexpr std::size_t k_upcoming = 5;
/// How many due schedules one pass of the loop fires (the rest wait for the next, at once).
constexpr std::size_t k_due_batch = 100;

/// A schedule's error, as the engine reports it: not_found becomes schedule_not_found.
error_code schedule_error(error_code ec) {
  if (ec == storage::errc::not_found) return errc::schedule_not_found;
  return ec;
}

/// The upcoming firings of `s` (none while paused), from its next occurrence, which may already be due.
void fill_upcoming(schedule_info& s) {
  s.upcoming.clear();
  if (s.paused || !s.next_fire_at) return;
  auto cron = cron_schedule::parse(s.cron, s.time_zone);
  if (!cron) return;  // a zone this machine's tzdata lacks: the next occurrence still shows
  s.upcoming.push_back(*s.next_fire_at);
  auto more = cron->next_n(*s.next_fire_at, k_upcoming - 1);
  s.upcoming.insert(s.upcoming.end(), more.begin(), more.end());
}

boost::asio::awaitable<result<schedule_put>> put(detail::engine_impl& impl, schedule_spec spec) {
  auto cron = cron_schedule::parse(spec.cron, spec.time_zone);
  if (!cron) co_return cron.error().code;
  if (!impl.registered_version(spec.workflow, spec.version)) co_return errc::unknown_workflow;
  storage::schedule_record s;
  s.name = std::move(spec.name);
  s.workflow = std::move(spec.workflow);
  s.version = spec.version;
  s.cron = std::string(cron->expression());
  s.time_zone = std::move(spec.time_zone);
  s.input = std::move(spec.input);
  s.priority = spec.priority;
  s.catch_up = spec.catch_up;
  s.next_fire_at = cron->next_after(system_clock::now());
  auto r = co_await impl.store_.put_schedule(s);
  if (!r) co_return schedule_error(r.error());
  if (r->changed) impl.wake_scheduler();
  fill_upcoming(r->schedule);
  co_return std::move(*r);
}

boost::asio::awaitable<result<schedule_info>> get_one(detail::engine_impl& impl, std::string name) {
  auto r = co_await impl.store_.get_schedule(std::move(name));
  if (!r) co_return schedule_error(r.error());
  fill_upcoming(*r);
  co_return std::move(*r);
}

boost::asio::awaitable<result<schedule_list>> list(detail::engine_impl& impl, schedule_query query) {
  auto r = co_await impl.store_.list_schedules(query);
  if (!r) co_return schedule_error(r.error());
  for (auto& s : r->schedules)
    fill_upcoming(s);
  co_return std::move(*r);
}

boost::asio::awaitable<result<schedule_info>> pause(detail::engine_impl& impl, std::string name) {
  auto r = co_await impl.store_.pause_schedule(std::move(name));
  if (!r) co_return schedule_error(r.error());
  fill_upcoming(*r);
  co_return std::move(*r);
}

boost::asio::awaitable<result<schedule_info>> resume(detail::engine_impl& impl, std::string name) {
  // Compare-and-set on the revision read: a put or another resume in between makes it read again.
  for (int attempt = 0;; ++attempt) {
    auto s = co_await impl.store_.get_schedule(name);
    if (!s) co_return schedule_error(s.error());
    if (!s->paused) {
      fill_upcoming(*s);
      co_return std::move(*s);
    }
    if (attempt == 10) co_return storage::errc::retryable;  // changed under it ten times running
    auto cron = cron_schedule::parse(s->cron, s->time_zone);
    if (!cron) co_return cron.error().code;
    auto done =
        co_await impl.store_.resume_schedule(name, s->revision, cron->next_after(system_clock::now()));
    if (!done) co_return schedule_error(done.error());
    if (*done > 0) impl.wake_scheduler();
  }
}

boost::asio::awaitable<result<void>> remove(detail::engine_impl& impl, std::string name) {
  auto r = co_await impl.store_.delete_schedule(std::move(name));
  if (!r) co_return schedule_error(r.error());
  if (*r == 0) co_return errc::schedule_not_found;
  co_return result<void>{};
}

/// Of a schedule's occurrences from `first` (due) to `now`, the newest `keep`, oldest first. Looks back
/// through windows that grow eightfold from an hour, so that a schedule that missed months of a
/// per-minute expression costs about `keep` steps, not one per missed minute.
std::deque<system_clock::time_point> newest_occurrences(const cron_schedule& cron,
                                                        system_clock::time_point first,
                                                        system_clock::time_point now, std::size_t keep) {
  std::deque<system_clock::time_point> out;
  for (auto window = std::chrono::duration_cast<system_clock::duration>(std::chrono::hours(1));;
       window *= 8) {
    out.clear();
    const bool from_first = now - first <= window;
    std::optional<system_clock::time_point> t =
        from_first ? std::optional(first) : cron.next_after(now - window - std::chrono::microseconds(1));
    for (; t && *t <= now; t = cron.next_after(*t)) {
      out.push_back(*t);
      if (out.size() > keep) out.pop_front();
    }
    if (from_first || out.size() >= keep) return out;
  }
}

}  // namespace

namespace detail {

void engine_impl::wake_scheduler() {
  boost::asio::post(ctl_, [this] { schedule_wait_.cancel(); });
}

boost::asio::awaitable<bool> engine_impl::fire_schedule(const storage::schedule_record& s,
                                                        system_clock::time_point now) {
  const auto once = std::make_pair(s.name, s.revision);
  auto cron = cron_schedule::parse(s.cron, s.time_zone);
  const auto version = registered_version(s.workflow, s.version);
  if (!cron || !version) {
    // Another worker (with that zone, or that version) may fire it; this one says why it does not, once.
    // Bounded: past that many, forget them all (each is logged again, once).
    if (unfireable_schedules_.size() >= 10'000) unfireable_schedules_.clear();
    if (unfireable_schedules_.insert(once).second)
      log::warn("engine", "schedule '" + s.name + "': this worker cannot fire it: " +
                              (cron ? "version " + std::to_string(s.version.value_or(0)) + " of '" +
                                          s.workflow + "' is not registered here"
                                    : cron.error().message));
    co_return false;
  }
  // The occurrences due: the newest on time one, and up to catch_up of those missed before it.
  const auto keep = static_cast<std::size_t>(s.catch_up) + 1;
  auto due = newest_occurrences(*cron, *s.next_fire_at, now, keep);
  std::optional<system_clock::time_point> on_time;
  if (!due.empty() && now - due.back() <= options_.schedule_tolerance) {
    on_time = due.back();
    due.pop_back();
  }
  while (due.size() > static_cast<std::size_t>(s.catch_up))
    due.pop_front();
  storage::schedule_firing f;
  f.name = s.name;
  f.revision = s.revision;
  f.expected_next = *s.next_fire_at;
  f.next = cron->next_after(now);
  f.version = *version;
  for (const auto at : due)
    f.occurrences.push_back({new_run_id(), at});
  if (on_time) f.occurrences.push_back({new_run_id(), *on_time});
  auto fired = co_await store_.fire_schedule(f);
  if (!fired) {
    log::warn("engine", "schedule '" + s.name + "': cannot fire it: " + fired.error().message());
    co_return false;
  }
  if (*fired == 0) co_return false;  // another worker did
  if (on_time && due.empty()) {
    log::debug("engine", "schedule '" + s.name + "' fired for " + rfc3339(*on_time));
  } else {
    log::info("engine", "schedule '" + s.name + "' fired " + std::to_string(f.occurrences.size()) +
                            " run(s), catching up " + std::to_string(due.size()) + " missed occurrence(s)" +
                            (on_time ? "" : "; the newest was missed too (skipped unless caught up)"));
  }
  if (!f.occurrences.empty()) wake_claimer();
  co_return true;
}

boost::asio::awaitable<void> engine_impl::schedule_loop() {
  std::vector<std::string> workflows;
  for (const auto& [name, versions] : workflows_)
    workflows.push_back(name);
  bool warned = false;
  while (!stopping()) {
    auto wait = options_.schedule_poll_interval;
    const std::vector<std::pair<std::string, std::int64_t>> skipped(unfireable_schedules_.begin(),
                                                                    unfireable_schedules_.end());
    auto due = co_await store_.due_schedules(workflows, k_due_batch, skipped);
    if (!due) {
      // The database is away: the claim loop reports it too; say it once per outage.
      if (!warned) log::warn("engine", "schedules: cannot read them: " + due.error().message());
      warned = true;
    } else {
      warned = false;
      bool fired = false;
      for (const auto& s : due->due) {
        if (stopping()) break;
        const bool this_one = co_await fire_schedule(s, due->now);
        fired = fired || this_one;
      }
      if (fired && due->due.size() == k_due_batch) {
        wait = std::chrono::milliseconds(0);  // more may be due: the next batch at once
      } else if (due->soonest) {
        // Aimed at the soonest occurrence (by the database's clock), a millisecond past it.
        const auto until = std::chrono::ceil<std::chrono::milliseconds>(*due->soonest - due->now) +
                           std::chrono::milliseconds(1);
        wait = std::clamp(until, std::chrono::milliseconds(0), wait);
      }
    }
    if (stopping()) break;
    schedule_wait_.expires_after(wait);
    co_await schedule_wait_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  }
  schedule_loop_active_ = false;
  notify_changed();
}

}  // namespace detail

boost::asio::awaitable<result<schedule_put>> engine::put_schedule(const schedule_spec& spec) {
  return put(*impl_, spec);
}
result<schedule_put> engine::put_schedule_blocking(const schedule_spec& spec) {
  return impl_->block_on(put(*impl_, spec));
}
boost::asio::awaitable<result<schedule_info>> engine::get_schedule(std::string_view name) {
  return get_one(*impl_, std::string(name));
}
result<schedule_info> engine::get_schedule_blocking(std::string_view name) {
  return impl_->block_on(get_one(*impl_, std::string(name)));
}
boost::asio::awaitable<result<schedule_list>> engine::list_schedules(const schedule_query& query) {
  return list(*impl_, query);
}
result<schedule_list> engine::list_schedules_blocking(const schedule_query& query) {
  return impl_->block_on(list(*impl_, query));
}
boost::asio::awaitable<result<schedule_info>> engine::pause_schedule(std::string_view name) {
  return pause(*impl_, std::string(name));
}
result<schedule_info> engine::pause_schedule_blocking(std::string_view name) {
  return impl_->block_on(pause(*impl_, std::string(name)));
}
boost::asio::awaitable<result<schedule_info>> engine::resume_schedule(std::string_view name) {
  return resume(*impl_, std::string(name));
}
result<schedule_info> engine::resume_schedule_blocking(std::string_view name) {
  return impl_->block_on(resume(*impl_, std::string(name)));
}
boost::asio::awaitable<result<void>> engine::delete_schedule(std::string_view name) {
  return remove(*impl_, std::string(name));
}
result<void> engine::delete_schedule_blocking(std::string_view name) {
  return impl_->block_on(remove(*impl_, std::string(name)));
}

}  // namespace keel
