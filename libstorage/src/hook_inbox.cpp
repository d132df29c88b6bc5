// The inbox of pending decisions: every hook that takes a resume now, across runs, soonest expiry first, a
// page at a time (keyset pagination on the index of open hooks, 020_dashboard_reads.sql).
#include <charconv>
#include <cstdint>
#include <string>
#include <string_view>

#include "keel/storage/json_limits.hpp"
#include "keel/storage/store.hpp"
#include "pg_connection.hpp"
#include "row_text.hpp"
#include "statement_parts.hpp"
#include "statements.hpp"
#include "step_rows.hpp"
#include "store_impl.hpp"

namespace keel::storage {

namespace detail::sql {
namespace {

// $1: the page size, then the cursor: $2 the last hook's expiry (µs since the epoch, turned back into the
// same timestamptz exactly: whole seconds and the rest, as a double holds both; NULL: it never expires), $3
// its run, $4 its position; the first page starts before every hook (0, the nil UUID, -1).
// The scan starts at the later of the cursor and now(), so that expired hooks (still open) are never
// walked. ORDER BY spells the index's key out, as the WHERE clause does its predicate (status = 'open').
std::string inbox_sql(bool of_workflow) {
  const auto key = hook_expiry_key("h");
  std::string sql = R"sql(
SELECT h.run_id::text, r.workflow, h.seq, h.name, h.metadata::text,
       (extract(epoch FROM h.created_at) * 1e6)::bigint, (extract(epoch FROM h.expires_at) * 1e6)::bigint,
       (extract(epoch FROM r.created_at) * 1e6)::bigint, r.generation
FROM keel.hooks h )sql";
  sql += live_run_of("h", "r.workflow, r.created_at, r.generation");
  sql += "\nWHERE ";
  if (of_workflow) sql += "h.workflow = $5 AND ";
  sql += "h.webhook IS NULL AND ";  // a webhook is a machine's endpoint, not a decision for a person
  sql += hook_is_open("h");
  sql += "\n  AND (" + key + R"sql(, h.run_id, h.seq) >
      (greatest(coalesce(timestamptz 'epoch' + ($2::bigint / 1000000) * interval '1 second'
                                             + ($2::bigint % 1000000) * interval '1 microsecond',
                         'infinity'::timestamptz),
                now()),
       $3::uuid, $4::int)
ORDER BY )sql";
  if (of_workflow) sql += "h.workflow, ";
  sql += key + ", h.run_id, h.seq\nLIMIT $1::int";
  return sql;
}

const std::string list_hooks_sql = inbox_sql(false);
const std::string list_hooks_of_workflow_sql = inbox_sql(true);

}  // namespace

const statement list_hooks{"keel_list_hooks", list_hooks_sql.c_str()};
const statement list_hooks_of_workflow{"keel_list_hooks_of_workflow", list_hooks_of_workflow_sql.c_str()};

}  // namespace detail::sql

namespace {

/// Where a page ends: the last hook's sort key. Written "<expiry µs or never>.<run>.<position>".
struct hook_cursor {
  std::optional<std::int64_t> expires_us;  ///< none: never expires
  run_id run;
  int seq = 0;
};

template <class Int>
bool parse_number(std::string_view text, Int& out) {
  const auto* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, out);
  return !text.empty() && text[0] != '-' && ec == std::errc() && p == end;
}

std::optional<hook_cursor> parse_cursor(std::string_view text) {
  const auto first = text.find('.');
  const auto last = text.rfind('.');
  if (first == std::string_view::npos || first == last) return std::nullopt;
  hook_cursor c;
  const auto key = text.substr(0, first);
  if (key != "never") {
    std::int64_t us = 0;
    if (!parse_number(key, us)) return std::nullopt;
    c.expires_us = us;
  }
  c.run = std::string(text.substr(first + 1, last - first - 1));
  if (!is_valid_run_id(c.run)) return std::nullopt;
  if (!parse_number(text.substr(last + 1), c.seq)) return std::nullopt;
  return c;
}

std::string cursor_text(const inbox_hook& h) {
  const auto key = h.hook.expires_at ? std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(
                                                          h.hook.expires_at->time_since_epoch())
                                                          .count())
                                     : std::string("never");
  return key + "." + h.run + "." + std::to_string(h.hook.seq);
}

inbox_hook inbox_hook_of(const PGresult* res, int row) {
  inbox_hook h;
  h.run = std::string(detail::get_text(res, row, 0));
  h.workflow = std::string(detail::get_text(res, row, 1));
  h.hook.seq = detail::to_int(detail::get_text(res, row, 2));
  h.hook.name = std::string(detail::get_text(res, row, 3));
  h.hook.metadata = detail::parse_json(res, row, 4);
  h.hook.created_at = detail::from_micros(detail::get_text(res, row, 5));
  h.hook.expires_at = detail::opt_time(res, row, 6);
  h.run_created_at = detail::from_micros(detail::get_text(res, row, 7));
  h.generation = detail::to_int(detail::get_text(res, row, 8));
  return h;
}

}  // namespace

bool is_valid_hook_cursor(std::string_view cursor) noexcept {
  return parse_cursor(cursor).has_value();
}

boost::asio::awaitable<result<hook_list>> store::list_hooks(const hook_query& q) {
  constexpr std::size_t k_max_page = 1000;
  if (q.limit == 0 || q.limit > k_max_page) co_return errc::invalid_argument;
  if (q.workflow && (q.workflow->size() > k_max_key_bytes || !is_valid_utf8(*q.workflow) ||
                     q.workflow->find('\0') != std::string::npos))
    co_return errc::invalid_argument;
  hook_cursor from{std::int64_t{0}, "00000000-0000-0000-0000-000000000000", -1};
  if (q.after) {
    auto c = parse_cursor(*q.after);
    if (!c) co_return errc::invalid_argument;
    from = std::move(*c);
  }
  // One more than asked: whether another page follows.
  std::vector<std::optional<std::string>> params{
      std::to_string(q.limit + 1),
      from.expires_us ? std::optional<std::string>(std::to_string(*from.expires_us)) : std::nullopt, from.run,
      std::to_string(from.seq)};
  if (q.workflow) params.emplace_back(*q.workflow);
  const auto* stmt = q.workflow ? &detail::sql::list_hooks_of_workflow : &detail::sql::list_hooks;
  const auto limit = q.limit;
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<hook_list>(detail::pg_connection&)> read =
      [params = std::move(params), stmt, limit](detail::pg_connection& c) -> result<hook_list> {
    auto r = c.exec_blocking(*stmt, params);
    if (!r) return r.error();
    hook_list out;
    const int rows = PQntuples(r->get());
    for (int row = 0; row < rows && out.hooks.size() < limit; ++row)
      out.hooks.push_back(inbox_hook_of(r->get(), row));
    if (static_cast<std::size_t>(rows) > limit) out.next = cursor_text(out.hooks.back());
    return out;
  };
  co_return co_await impl_->on_pool<hook_list>(std::move(read), impl_->request_deadline());
}

}  // namespace keel::storage
