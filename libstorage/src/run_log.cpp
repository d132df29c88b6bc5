// Reading the durable run log (013_run_log.sql): pages in the order no later commit can break.
#include "keel/storage/json_limits.hpp"
#include "keel/storage/store.hpp"
#include "pg_connection.hpp"
#include "statements.hpp"
#include "step_rows.hpp"
#include "store_impl.hpp"

namespace keel::storage {

/// The most events one read returns.
constexpr std::size_t k_max_log_page = 10'000;

namespace {

/// The events of a read_log / follow_log result (columns 1-7; column 0 is the retention horizon): the
/// page, with gap_until when retention removed events after `after`.
log_page read_page(const PGresult* res, std::int64_t after) {
  log_page page;
  for (int row = 0; row < PQntuples(res); ++row) {
    if (row == 0) {
      const auto removed = std::stoll(std::string(detail::get_text(res, 0, 0)));
      if (removed > after) page.gap_until = removed;
    }
    if (PQgetisnull(res, row, 1)) continue;
    log_event e;
    e.pos = std::stoll(std::string(detail::get_text(res, row, 1)));
    e.run = std::string(detail::get_text(res, row, 2));
    e.kind = std::string(detail::get_text(res, row, 3));
    e.at = detail::from_micros(detail::get_text(res, row, 4));
    e.data = detail::parse_json(res, row, 5);
    e.workflow = std::string(detail::get_text(res, row, 6));
    if (!PQgetisnull(res, row, 7)) e.parent = std::string(detail::get_text(res, row, 7));
    page.events.push_back(std::move(e));
  }
  return page;
}

/// A follow_log result: events without their run's columns, a checkpointed step's details built here from
/// its stored columns (the same document read_log returns).
log_follow_page read_follow_page(const PGresult* res, std::int64_t after, std::size_t limit) {
  log_follow_page out;
  const auto removed = std::stoll(std::string(detail::get_text(res, 0, 0)));
  if (removed > after) out.page.gap_until = removed;
  out.top = std::stoll(std::string(detail::get_text(res, 0, 15)));
  out.held_back = detail::get_text(res, 0, 16) == "t";
  auto number = [&](int row, int col) { return std::stoll(std::string(detail::get_text(res, row, col))); };
  for (int row = 0; row < PQntuples(res); ++row) {
    if (PQgetisnull(res, row, 1)) continue;
    log_event e;
    e.pos = number(row, 1);
    e.run = std::string(detail::get_text(res, row, 2));
    e.kind = std::string(detail::get_text(res, row, 3));
    e.at = detail::from_micros(detail::get_text(res, row, 4));
    if (!PQgetisnull(res, row, 5)) {
      e.data = detail::parse_json(res, row, 5);
    } else {
      boost::json::object step;
      if (!PQgetisnull(res, row, 14)) step["seq"] = number(row, 14);
      if (PQgetisnull(res, row, 6)) {
        step["discarded"] = true;  // removed since (a retry or rewind running at this moment)
      } else {
        step["name"] = detail::get_text(res, row, 6);
        step["output"] = PQgetisnull(res, row, 7) ? boost::json::value() : detail::parse_json(res, row, 7);
        step["error"] = PQgetisnull(res, row, 8) ? boost::json::value() : detail::parse_json(res, row, 8);
        step["attempts"] = number(row, 9);
        step["started_at"] = number(row, 10);
        step["duration_us"] = number(row, 11) - number(row, 10);
        if (!PQgetisnull(res, row, 12)) {
          step["branch"] = detail::get_text(res, row, 12);
          step["branch_seq"] = number(row, 13);
        }
      }
      e.data = std::move(step);
    }
    out.page.events.push_back(std::move(e));
  }
  // A step_started logged by reference (no columns read) takes its step's from the end that follows it.
  auto& events = out.page.events;
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    auto& start = events[i];
    if (start.kind != "step_started" || !start.data.is_object() || start.data.as_object().contains("name"))
      continue;
    const auto& end = events[i + 1];
    if (end.run != start.run || !end.data.is_object()) continue;
    const auto& d = end.data.as_object();
    if (d.if_contains("seq") == nullptr || start.data.as_object().if_contains("seq") == nullptr ||
        d.at("seq") != start.data.as_object().at("seq"))
      continue;
    auto& s = start.data.as_object();
    for (const char* key : {"name", "started_at", "branch", "branch_seq"}) {
      if (const auto* v = d.if_contains(key)) s[key] = *v;
    }
    s.erase("discarded");
  }
  // The page's limit fell between a step's start and its end: the start comes again with the next page.
  if (events.size() == limit && events.size() > 1 && events.back().kind == "step_started" &&
      events.back().data.is_object() && !events.back().data.as_object().contains("name")) {
    events.pop_back();
  }
  return out;
}

}  // namespace

boost::asio::awaitable<result<std::vector<run_meta>>> store::runs_meta(const std::vector<run_id>& ids) {
  for (const auto& id : ids) {
    if (!is_valid_run_id(id)) co_return errc::invalid_argument;
  }
  std::vector<std::optional<std::string>> params{detail::text_array(ids)};
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<std::vector<run_meta>>(detail::pg_connection&)> read =
      [params = std::move(params)](detail::pg_connection& c) -> result<std::vector<run_meta>> {
    auto r = c.exec_blocking(detail::sql::runs_meta, params);
    if (!r) return r.error();
    std::vector<run_meta> out;
    for (int row = 0; row < PQntuples(r->get()); ++row) {
      run_meta m;
      m.id = std::string(detail::get_text(r->get(), row, 0));
      m.workflow = std::string(detail::get_text(r->get(), row, 1));
      if (!PQgetisnull(r->get(), row, 2)) m.parent = std::string(detail::get_text(r->get(), row, 2));
      out.push_back(std::move(m));
    }
    return out;
  };
  co_return co_await impl_->on_pool<std::vector<run_meta>>(std::move(read), impl_->request_deadline());
}

boost::asio::awaitable<result<log_page>> store::read_log(std::int64_t after, std::size_t limit,
                                                         const log_filter& filter) {
  constexpr std::size_t k_max_filter_runs = 100'000;
  if (limit == 0 || limit > k_max_log_page || after < 0 || filter.runs.size() > k_max_filter_runs)
    co_return errc::invalid_argument;
  for (const auto& id : filter.runs)
    if (!is_valid_run_id(id)) co_return errc::invalid_argument;
  if (filter.tree && !is_valid_run_id(*filter.tree)) co_return errc::invalid_argument;
  if (filter.workflow && (filter.workflow->size() > 255 || !is_valid_utf8(*filter.workflow) ||
                          filter.workflow->find('\0') != std::string::npos))
    co_return errc::invalid_argument;
  std::vector<std::optional<std::string>> params{std::to_string(after), std::to_string(limit)};
  const bool some_runs = !filter.runs.empty() || filter.tree;
  if (some_runs) params.emplace_back(detail::text_array(filter.runs));
  params.emplace_back(filter.workflow);
  if (some_runs) params.emplace_back(filter.tree);
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<log_page>(detail::pg_connection&)> read =
      [params = std::move(params), after, some_runs](detail::pg_connection& c) -> result<log_page> {
    auto r = c.exec_blocking(some_runs ? detail::sql::read_runs_log : detail::sql::read_log, params);
    if (!r) return r.error();
    return read_page(r->get(), after);
  };
  co_return co_await impl_->on_pool<log_page>(std::move(read), impl_->request_deadline());
}

boost::asio::awaitable<result<log_follow_page>> store::follow_log(std::int64_t after, std::size_t limit) {
  if (limit > k_max_log_page || after < 0) co_return errc::invalid_argument;
  std::vector<std::optional<std::string>> params{std::to_string(after), std::to_string(limit)};
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<log_follow_page>(detail::pg_connection&)> read =
      [params = std::move(params), after, limit](detail::pg_connection& c) -> result<log_follow_page> {
    auto r = c.exec_blocking(detail::sql::follow_log, params);
    if (!r) return r.error();
    return read_follow_page(r->get(), after, limit);
  };
  co_return co_await impl_->on_pool<log_follow_page>(std::move(read), impl_->request_deadline());
}

boost::asio::awaitable<result<std::vector<run_id>>> store::run_tree(const run_id& root) {
  if (!is_valid_run_id(root)) co_return errc::invalid_argument;
  std::vector<std::optional<std::string>> params{root};
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<std::vector<run_id>>(detail::pg_connection&)> read =
      [params = std::move(params)](detail::pg_connection& c) -> result<std::vector<run_id>> {
    auto r = c.exec_blocking(detail::sql::run_tree, params);
    if (!r) return r.error();
    std::vector<run_id> ids;
    for (int row = 0; row < PQntuples(r->get()); ++row)
      ids.emplace_back(detail::get_text(r->get(), row, 0));
    return ids;
  };
  co_return co_await impl_->on_pool<std::vector<run_id>>(std::move(read), impl_->request_deadline());
}

boost::asio::awaitable<result<std::int64_t>> store::trim_log(std::chrono::milliseconds older_than,
                                                             std::size_t rows) {
  if (older_than.count() < 0 || rows == 0 || rows > k_max_log_page) co_return errc::invalid_argument;
  std::vector<std::optional<std::string>> params{std::to_string(older_than.count()), std::to_string(rows)};
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<std::int64_t>(detail::pg_connection&)> trim =
      [params = std::move(params)](detail::pg_connection& c) -> result<std::int64_t> {
    auto r = c.exec_blocking(detail::sql::trim_log, params);
    if (!r) return r.error();
    return std::stoll(std::string(detail::get_text(r->get(), 0, 0)));
  };
  co_return co_await impl_->on_pool<std::int64_t>(std::move(trim), impl_->request_deadline());
}

}  // namespace keel::storage
