// keel-bench's fairness workload: how long one tenant's runs wait to start while another tenant has a burst
// of 50,000 queued, against the same runs on an idle engine (weighted fair claims, 028_fair_claims.sql).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "latency_workloads.hpp"

namespace keel::bench {

constexpr std::string_view k_fairness = "fairness";
/// What --runs (the burst of the one big tenant) means for fairness when it is not given.
constexpr std::size_t k_fairness_default_runs = 50'000;

/// Measures the 1,000 small runs (100 tenants x 10) on an idle engine, then again while a burst of
/// `s.runs` runs of one tenant is being worked through, and returns the JSON line. Blocking; throws
/// std::runtime_error when a run fails or a phase times out.
[[nodiscard]] std::string fairness_blocking(const latency_setup& s);

}  // namespace keel::bench
