// The raw-SQL ceilings: the fewest writes a checkpointed step needs (and, beside them, a run's claim and
// finish), issued by a minimal pipelined libpq loop.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace keel::bench {

/// What the ceiling loop did.
struct ceiling_result {
  double seconds = 0;            ///< wall time of the timed loop
  std::size_t steps = 0;         ///< step rows written (runs * steps per run)
  std::size_t transactions = 0;  ///< transactions committed
  /// Of the runs table's row updates (the lifecycle's claims and finishes), the share that was HOT (no index
  /// entry written); -1 when nothing was updated or the statistics did not arrive in time.
  double hot_update_share = -1;
};

/// What the ceiling loop writes for each run.
enum class ceiling_writes {
  steps,      ///< its step rows, each under the fence (the runs are held before the clock starts)
  lifecycle,  ///< a claim of the queued run, then its step rows, then its fenced finish
};

/// Which of keel.runs' indexes the ceilings' runs table keeps (a diagnostic of what the claim and the finish
/// cost: an update that changes no indexed column can be HOT).
enum class ceiling_indexes {
  all,    ///< every one (the default: the engine's table)
  claim,  ///< the primary key and the claim index only
  key,    ///< the primary key only: nothing else to find due runs or expired leases by
};

/// The option's name of `which` (--ceiling-indexes): "all", "claim" or "key".
[[nodiscard]] std::string_view name_of(ceiling_indexes which) noexcept;
/// The ceiling_indexes called `name`; nullopt for an unknown name.
[[nodiscard]] std::optional<ceiling_indexes> ceiling_indexes_named(std::string_view name) noexcept;

/// What to measure.
struct ceiling_plan {
  std::size_t runs = 0;
  std::size_t batch = 0;  ///< runs per transaction
  int steps_per_run = 0;
  std::size_t connections = 1;  ///< one per engine writer, each on its own slice of the runs
  ceiling_writes writes = ceiling_writes::steps;
  ceiling_indexes indexes = ceiling_indexes::all;
};

/// On `conninfo` (a database the engine has migrated: it copies keel.runs and keel.steps), creates
/// bench_ceiling_runs and bench_ceiling_steps with the same columns, defaults, checks and indexes, inserts
/// `runs` running runs (not timed), then times `steps_per_run` rounds: for each chunk of `batch` runs, one
/// transaction that checks the runs' lease under a share lock and inserts their step rows, sent as one
/// pipeline on one connection, two transactions in flight (as the engine's writer). With `connections` > 1
/// each connection runs that loop on its own slice of the runs, in its own thread.
/// `lifecycle`: the runs start queued; a first round of transactions claims them (one UPDATE per chunk, by
/// id) and a last one finishes them (one fenced UPDATE per chunk), the least a claim and a finish cost.
/// Verifies the row counts afterwards. Blocking. Throws std::runtime_error on any database error or a wrong
/// row count.
ceiling_result measure_ceiling_blocking(const std::string& conninfo, const ceiling_plan& plan);

}  // namespace keel::bench
