// The raw-SQL ceiling: the fewest writes a checkpointed step needs, issued by a minimal pipelined libpq loop.
#pragma once

#include <cstddef>
#include <string>

namespace keel::bench {

/// What the ceiling loop did.
struct ceiling_result {
  double seconds = 0;            ///< wall time of the timed loop
  std::size_t steps = 0;         ///< step rows written (runs * steps per run)
  std::size_t transactions = 0;  ///< transactions committed
};

/// On `conninfo` (a database the engine has migrated: it copies keel.runs and keel.steps), creates
/// bench_ceiling_runs and bench_ceiling_steps with the same columns, defaults, checks and indexes, inserts
/// `runs` running runs (not timed), then times `steps_per_run` rounds: for each chunk of `batch` runs, one
/// transaction that checks the runs' lease under a share lock and inserts their step rows, sent as one
/// pipeline on one connection, two transactions in flight (as the engine's writer). With `connections` > 1
/// (one per engine writer) each connection runs that loop on its own slice of the runs, in its own thread.
/// Verifies the row count afterwards. Blocking. Throws std::runtime_error on any database error or a wrong
/// row count.
ceiling_result measure_ceiling_blocking(const std::string& conninfo, std::size_t runs, std::size_t batch,
                                        int steps_per_run, std::size_t connections = 1);

}  // namespace keel::bench
