// Reading what PostgreSQL hands back about runs and steps: times, stored JSON, and keel_load_steps rows.
#pragma once

#include <libpq-fe.h>

#include <boost/json/value.hpp>
#include <functional>
#include <string_view>
#include <vector>

#include "keel/storage/records.hpp"

namespace keel::storage::detail {

/// Microseconds since the Unix epoch, as the statements return times.
clock::time_point from_micros(std::string_view text);

/// A jsonb column's value (null when the column is NULL).
boost::json::value parse_json(const PGresult* r, int row, int col);

/// Rows of keel_load_steps (first column run_id) onto the step lists `target` names by run id (nullptr:
/// skipped), in the rows' order (seq).
void read_steps(const PGresult* r, const std::function<std::vector<step_record>*(std::string_view)>& target);

}  // namespace keel::storage::detail
