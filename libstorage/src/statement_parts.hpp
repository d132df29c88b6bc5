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
/// not expired (hook_is_open), its run not finished (run_is_live). A run's `hooks`, the hook inbox and its
/// count all use it.
std::string hook_takes_resume(std::string_view h, std::string_view r);

/// Hook `h` is open and not expired, its expiry spelled as the index of open hooks has it
/// (020_dashboard_reads.sql), so that a range scan from now() serves it.
std::string hook_is_open(std::string_view h);

/// Run `r` has not finished: the predicate of runs_claimable (005_waits.sql), spelled out.
std::string run_is_live(std::string_view r);

/// `r`: the columns `columns` of hook `h`'s run, when it has not finished (else the hook's row drops out).
/// A lateral subquery the planner may not flatten (OFFSET 0): joined as usual, the planner would reckon
/// that few hooks belong to live runs (they are few among all runs) and scan the runs instead of walking
/// the hooks' index in order; here each hook's run is a lookup of its primary key.
std::string live_run_of(std::string_view h, std::string_view columns);

/// What an enqueue gives of its run's flow control, as SQL expressions ("NULL": nothing).
struct flow_overrides {
  std::string_view concurrency_key = "NULL";
  std::string_view concurrency_limit = "NULL";
  std::string_view throttle_key = "NULL";
  std::string_view throttle_limit = "NULL";
  std::string_view throttle_window_ms = "NULL";
  std::string_view fair_key = "NULL";
  std::string_view fair_weight = "NULL";
};

/// The values of the flow-control columns of keel.runs (concurrency_key, concurrency_limit, throttle_key,
/// throttle_limit, throttle_window_ms, fair_key, fair_weight, in this order) for a run inserted with input
/// `input`, as its enqueue gave them (`o`) or else as its workflow version declares (`v`: its
/// keel.workflow_versions row, LEFT JOINed; 026_concurrency_keys.sql, 027_throttle.sql,
/// 028_fair_claims.sql). Without a limit (and, for throttle, a window) from either, the run has no key of
/// that kind, nor a fairness key without a key or a declared path; a key the input lacks is '' (those runs
/// share one key). The weight of a fairness key is 1 unless the enqueue gives one.
std::string flow_control_values(std::string_view input, std::string_view v, const flow_overrides& o = {});

/// `slots_made`: a CTE that makes the slots (1..limit) of the concurrency and throttle keys of the runs
/// `inserted` yields (columns workflow and the flow-control columns), for each key the first time; one
/// statement for a batch, where a row trigger would cost a call per run. Ends with a comma.
std::string slots_made_cte(std::string_view inserted);

/// `slots_freed` and `slots_woken`: CTEs that free the slots held by the runs `stopped` yields (columns id,
/// workflow, concurrency_key: runs this statement took out of `running`) and make that many of each key's
/// parked runs due, waking idle workers. For the statements that finish runs (the hot path); other changes
/// out of `running` free their slot by trigger (026_concurrency_keys.sql). Ends with a comma.
std::string slots_freed_ctes(std::string_view stopped);

/// `LEFT JOIN keel.workflow_versions v` for flow_control_values, on the run's `workflow` and `version`.
std::string declared_rule_join(std::string_view v, std::string_view workflow, std::string_view version);

/// The sort key of hook `h` in the inbox: its expiry, `infinity` when it never expires (as indexed).
std::string hook_expiry_key(std::string_view h);

/// `kept`: before a statement removes step rows (`gone`: the removed rows, all columns), their details go
/// into the log events that refer to them (see keel.run_log), so the log stays as it was written.
std::string keep_step_details_cte(std::string_view gone);

}  // namespace keel::storage::detail::sql
