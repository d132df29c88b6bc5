// Reading the durable run log (013_run_log.sql): pages in the order no later commit can break.
#include "keel/storage/json_limits.hpp"
#include "keel/storage/store.hpp"
#include "pg_array.hpp"
#include "pg_connection.hpp"
#include "statements.hpp"
#include "step_details_cache.hpp"
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

/// A step event whose details the follower could not take from the cache, and where it sits.
struct step_reference {
  std::size_t event;  ///< index in the page
  std::string run;
  std::string seq, epoch, log_pos;
  int index;  ///< the event's place in its log row, 1-based
};

std::optional<std::vector<std::optional<std::string>>> column_array(const PGresult* res, int row, int col,
                                                                    std::size_t n) {
  if (PQgetisnull(res, row, col)) return std::vector<std::optional<std::string>>(n);  // no steps in the row
  auto a = detail::parse_text_array(detail::get_text(res, row, col));
  if (a && a->size() != n) return std::nullopt;
  return a;
}

/// The details of `refs` read from keel.steps (or from their log rows, when the step rows are gone since).
result<void> read_step_details(detail::pg_connection& c, const std::vector<step_reference>& refs,
                               std::vector<log_event>& events) {
  auto joined = [&](auto member, bool quoted) {
    std::string out = "{";
    for (std::size_t i = 0; i < refs.size(); ++i) {
      if (i) out.push_back(',');
      if (quoted) out.push_back('"');
      out += member(refs[i]);
      if (quoted) out.push_back('"');
    }
    out.push_back('}');
    return out;
  };
  std::vector<std::optional<std::string>> params{
      joined([](const step_reference& r) { return r.run; }, true),
      joined([](const step_reference& r) { return r.seq; }, false),
      joined([](const step_reference& r) { return r.epoch; }, false),
      joined([](const step_reference& r) { return r.log_pos; }, false),
      joined([](const step_reference& r) { return std::to_string(r.index); }, false)};
  auto r = c.exec_blocking(detail::sql::step_details, params);
  if (!r) return r.error();
  const PGresult* res = r->get();
  auto number = [&](int row, int col) { return detail::to_int64(detail::get_text(res, row, col)); };
  for (int row = 0; row < PQntuples(res); ++row) {
    const auto ord = static_cast<std::size_t>(number(row, 0));
    if (ord == 0 || ord > refs.size()) continue;
    auto& e = events[refs[ord - 1].event];
    if (PQgetisnull(res, row, 1)) {
      e.data = detail::parse_json(res, row, 9);  // removed since: its details moved into the log row
      continue;
    }
    const auto branch = PQgetisnull(res, row, 7)
                            ? std::nullopt
                            : std::optional<std::string_view>(detail::get_text(res, row, 7));
    auto step = detail::step_document(detail::to_int64(refs[ord - 1].seq), detail::get_text(res, row, 1),
                                      detail::parse_json(res, row, 2), detail::parse_json(res, row, 3),
                                      number(row, 4), number(row, 5), number(row, 6), branch,
                                      branch ? number(row, 8) : 0);
    e.data = std::move(step);
  }
  return {};
}

/// A follow_log result: the log rows' events after `after`, at most `limit`. A checkpointed step's details
/// (the same document read_log returns) come from `steps` when this process wrote it, else from keel.steps.
result<log_follow_page> read_follow_page(detail::pg_connection& c, const PGresult* res, std::int64_t after,
                                         std::size_t limit, detail::step_details_cache& steps) {
  log_follow_page out;
  const auto removed = detail::to_int64(detail::get_text(res, 0, 0));
  if (removed > after) out.page.gap_until = removed;
  out.top = detail::to_int64(detail::get_text(res, 0, 1));
  out.held_back = detail::get_text(res, 0, 2) == "t";
  auto& events = out.page.events;
  std::vector<step_reference> missing;
  for (int row = 0; row < PQntuples(res) && events.size() < limit; ++row) {
    if (PQgetisnull(res, row, 3)) continue;
    const auto pos = detail::to_int64(detail::get_text(res, row, 3));
    const auto n = static_cast<std::size_t>(detail::to_int64(detail::get_text(res, row, 4)));
    const auto at = detail::from_micros(detail::get_text(res, row, 5));
    auto runs = column_array(res, row, 6, n);
    auto kinds = column_array(res, row, 7, n);
    auto data = column_array(res, row, 8, n);
    auto seqs = column_array(res, row, 9, n);
    auto epochs = column_array(res, row, 10, n);
    if (!runs || !kinds || !data || !seqs || !epochs) {
      // Not as array_agg writes them: this row's events are read one by one instead, as read_log does.
      // (Appended piece by piece: g++ 12 at -O3 reports a false -Wrestrict in `"literal" + std::string&&`.)
      std::string why = "log row ";
      why.append(std::to_string(pos)).append(": arrays not in the expected form");
      log::warn("storage", why);
      const auto from = std::max(after, pos - 1);
      const auto want = std::min<std::int64_t>(pos + static_cast<std::int64_t>(n) - 1 - from,
                                               static_cast<std::int64_t>(limit - events.size()));
      std::vector<std::optional<std::string>> params{std::to_string(from), std::to_string(want),
                                                     std::nullopt};
      auto r = c.exec_blocking(detail::sql::read_log, params);
      if (!r) return r.error();
      for (auto& e : read_page(r->get(), from).events)
        events.push_back(std::move(e));
      continue;
    }
    for (std::size_t i = 0; i < n && events.size() < limit; ++i) {
      const auto event_pos = pos + static_cast<std::int64_t>(i);
      if (event_pos <= after) continue;
      log_event e;
      e.pos = event_pos;
      e.run = (*runs)[i].value_or("");
      e.kind = (*kinds)[i].value_or("");
      e.at = at;
      if ((*data)[i]) {
        e.data = detail::parse_stored_json(*(*data)[i]);
      } else {
        // Logged by reference to its step row. A start takes its details from the end after it (below).
        boost::json::object step;
        const auto& seq = (*seqs)[i];
        if (seq) step["seq"] = detail::to_int64(*seq);
        step["discarded"] = true;  // unless found
        const auto& epoch = (*epochs)[i];
        if (e.kind != "step_started" && seq && epoch) {
          if (auto d = steps.take(e.run, detail::to_int64(*epoch), detail::to_int(*seq))) {
            e.data = std::move(*d);
          } else {
            missing.push_back(step_reference{events.size(), e.run, *seq, *epoch, std::to_string(pos),
                                             static_cast<int>(i + 1)});
            e.data = std::move(step);
          }
        } else {
          e.data = std::move(step);
        }
      }
      events.push_back(std::move(e));
    }
  }
  if (!missing.empty()) {
    if (auto r = read_step_details(c, missing, events); !r) return r.error();
  }
  // A step_started logged by reference takes its step's from the end that follows it.
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
  impl_->step_details_.followed();
  std::vector<std::optional<std::string>> params{std::to_string(after), std::to_string(limit)};
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<log_follow_page>(detail::pg_connection&)> read =
      [params = std::move(params), after, limit,
       &steps = impl_->step_details_](detail::pg_connection& c) -> result<log_follow_page> {
    auto r = c.exec_blocking(detail::sql::follow_log, params);
    if (!r) return r.error();
    return read_follow_page(c, r->get(), after, limit, steps);
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
