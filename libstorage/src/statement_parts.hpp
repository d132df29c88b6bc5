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

/// The condition on hook `h` (keel.hooks) of run `r` (keel.runs) under which it takes a resume now: open,
/// not expired, its run not finished. A run's `hooks`, the hook inbox and its count all use it. The expiry
/// is spelled as the index of open hooks has it (020_dashboard_reads.sql), so that a range scan serves it.
std::string hook_takes_resume(std::string_view h, std::string_view r);

/// The sort key of hook `h` in the inbox: its expiry, `infinity` when it never expires (as indexed).
std::string hook_expiry_key(std::string_view h);

}  // namespace keel::storage::detail::sql
