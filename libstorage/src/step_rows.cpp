#include "step_rows.hpp"

#include "pg_connection.hpp"
#include "row_text.hpp"

namespace keel::storage::detail {

clock::time_point from_micros(std::string_view text) {
  return clock::time_point{std::chrono::microseconds{std::stoll(std::string(text))}};
}

boost::json::value parse_json(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return nullptr;
  return parse_stored_json(get_text(r, row, col));
}

void read_steps(const PGresult* r, const std::function<std::vector<step_record>*(std::string_view)>& target) {
  for (int row = 0; row < PQntuples(r); ++row) {
    auto* steps = target(get_text(r, row, 0));
    if (steps == nullptr) continue;
    step_record s;
    s.seq = to_int(get_text(r, row, 1));
    s.name = std::string(get_text(r, row, 2));
    s.failed = get_text(r, row, 3) == "failed";
    s.output = parse_json(r, row, 4);
    s.error = parse_json(r, row, 5);
    s.attempts = to_int(get_text(r, row, 6));
    s.started_at = from_micros(get_text(r, row, 7));
    s.finished_at = from_micros(get_text(r, row, 8));
    if (!PQgetisnull(r, row, 9)) {
      s.branch = std::string(get_text(r, row, 9));
      s.branch_seq = to_int(get_text(r, row, 10));
    }
    steps->push_back(std::move(s));
  }
}

}  // namespace keel::storage::detail
