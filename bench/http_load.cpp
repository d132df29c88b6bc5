// keel-bench's HTTP workloads: hook-resumes (hook_resumes.cpp) and sse-fanout (sse_fanout.cpp). The clients
// are asynchronous Beast clients on one io_context thread of their own, in this process, over loopback: they
// share the machine's cores with the server (the engine's io_context threads) and PostgreSQL.
#include "http_load.hpp"

#include <stdexcept>

#include "http_load_support.hpp"

namespace keel::bench {

bool is_http_workload(std::string_view workload) noexcept {
  return workload == k_hook_resumes || workload == k_sse_fanout;
}

std::string http_workload_blocking(const latency_setup& s) {
  if (s.workload == k_hook_resumes) return http_load::hook_resumes_blocking(s);
  if (s.workload == k_sse_fanout) return http_load::sse_fanout_blocking(s);
  throw std::invalid_argument("not an HTTP workload: " + s.workload);
}

}  // namespace keel::bench
