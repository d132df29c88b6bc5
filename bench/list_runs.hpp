// keel-bench's list-runs workload: how fast a page of runs comes back (engine::list_runs, behind
// GET /v1/runs) with a million runs in the table, newest first, deep in the list, and filtered.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "latency_workloads.hpp"

namespace keel::bench {

constexpr std::string_view k_list_runs = "list-runs";
/// What --runs (the runs in the table) means for list-runs when it is not given.
constexpr std::size_t k_list_default_runs = 1'000'000;

/// Fills the table with `s.runs` finished and waiting runs (in SQL: no engine work), then times pages of
/// 50 for each kind of query. Blocking; throws std::runtime_error when a query fails.
[[nodiscard]] std::string list_runs_blocking(const latency_setup& s);

}  // namespace keel::bench
