// Reading the durable run log (013_run_log.sql): pages in the order no later commit can break.
#include "keel/storage/store.hpp"
#include "pg_connection.hpp"
#include "statements.hpp"
#include "step_rows.hpp"
#include "store_impl.hpp"

namespace keel::storage {

/// The most events one read returns.
constexpr std::size_t k_max_log_page = 10'000;

boost::asio::awaitable<result<log_page>> store::read_log(std::int64_t after, std::size_t limit,
                                                         const std::optional<run_id>& run) {
  if (limit == 0 || limit > k_max_log_page || after < 0) co_return errc::invalid_argument;
  if (run && !is_valid_run_id(*run)) co_return errc::invalid_argument;
  std::vector<std::optional<std::string>> params{std::to_string(after), std::to_string(limit)};
  if (run) params.emplace_back(*run);
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<log_page>(detail::pg_connection&)> read =
      [params = std::move(params)](detail::pg_connection& c) -> result<log_page> {
    auto r = c.exec_blocking(params.size() == 3 ? detail::sql::read_run_log : detail::sql::read_log, params);
    if (!r) return r.error();
    const PGresult* res = r->get();
    log_page page;
    for (int row = 0; row < PQntuples(res); ++row) {
      if (row == 0) {
        const auto removed = std::stoll(std::string(detail::get_text(res, 0, 0)));
        if (removed > std::stoll(params[0].value())) page.gap_until = removed;
      }
      if (PQgetisnull(res, row, 1)) continue;
      log_event e;
      e.pos = std::stoll(std::string(detail::get_text(res, row, 1)));
      e.run = std::string(detail::get_text(res, row, 2));
      e.kind = std::string(detail::get_text(res, row, 3));
      e.at = detail::from_micros(detail::get_text(res, row, 4));
      e.data = detail::parse_json(res, row, 5);
      page.events.push_back(std::move(e));
    }
    return page;
  };
  co_return co_await impl_->on_pool<log_page>(std::move(read), impl_->request_deadline());
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
