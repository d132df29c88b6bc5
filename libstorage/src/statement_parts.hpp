// Pieces several statement files compose their SQL from.
#pragma once

#include <string>
#include <string_view>

namespace keel::storage::detail::sql {

/// `logged`: a CTE that appends the events `source` yields — columns (run uuid, kind text, data jsonb, o
/// bigint) — to keel.run_log as one row, in the order of `o` (see 013_run_log.sql): nothing when it yields
/// none, or when the session turned the log off (keel.log = off). At most one per statement (its position
/// comes from the rows earlier statements of the transaction appended).
std::string log_cte(std::string_view source);

}  // namespace keel::storage::detail::sql
