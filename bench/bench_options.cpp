#include "bench_options.hpp"

#include <boost/program_options.hpp>
#include <cstdint>
#include <iostream>

#include "event_latency.hpp"
#include "fairness.hpp"
#include "http_load.hpp"
#include "keel/engine.hpp"
#include "latency_workloads.hpp"
#include "list_runs.hpp"

namespace keel::bench {

namespace po = boost::program_options;

parsed_options parse_options(int argc, char** argv) {
  bench_options o;
  // Parsed as signed so that "-5" is an error rather than a huge unsigned value.
  std::int64_t runs = static_cast<std::int64_t>(o.runs), parked = static_cast<std::int64_t>(o.parked),
               concurrency = static_cast<std::int64_t>(o.concurrency),
               threads = static_cast<std::int64_t>(o.threads), writers = static_cast<std::int64_t>(o.writers),
               max_batch = static_cast<std::int64_t>(o.max_batch), pool = static_cast<std::int64_t>(o.pool),
               enqueuers = static_cast<std::int64_t>(o.enqueuers),
               clients = static_cast<std::int64_t>(o.clients),
               connections = static_cast<std::int64_t>(o.connections), timeout = o.timeout.count();
  std::string url;
  std::string indexes{name_of(o.ceiling_indexes_kept)};
  po::options_description desc(
      "keel-bench: Keel's throughput and latency on a standard workload against a raw-SQL ceiling,\n"
      "or its start latency and sleep lateness. Prints one JSON line on stdout; progress goes to stderr.\n\n"
      "Options");
  // clang-format off
  desc.add_options()
      ("help,h", "show this help")
      ("workload", po::value(&o.workload)->default_value(o.workload),
       "workload to run: noop3, parked, log-overhead (noop3 without, then with the run log), "
       "stream-overhead (noop3 without, then with a stream attached), keyed-overhead (noop3 without, then with "
       "a concurrency key on every run), fairness (1,000 runs of 100 tenants, idle and beside one tenant's "
       "burst of --runs runs, default 50000), event-latency (ctx.emit to a "
       "stream consumer on the same worker and in another process), stream-write (one run appending "
       "runs x 100 chunks to a durable output stream, read in another process), "
       "start-latency (enqueue to first step, one run at a time), "
       "hook-latency (resume_hook to next step, one run at a time), sleep-lateness (wake time to resume "
       "of 0.5-2 s sleeps), replay (resume of one run with a long history), list-runs (pages of "
       "engine::list_runs with --runs runs in the table, default 1000000), hook-resumes (POST "
       "/v1/hooks/{token} per second from --connections keep-alive connections, default 5000 runs) or "
       "sse-fanout (one run's events to --clients SSE clients; --runs frames, default 100)")
      ("runs", po::value(&runs)->default_value(runs),
       "runs to enqueue, then drain (start-latency, hook-latency, sleep-lateness: runs to measure, default "
       "1000; replay: recorded steps, default 10000; hook-resumes: runs resumed over HTTP, default 5000; "
       "sse-fanout: the run's frames and steps, default 100)")
      ("parked", po::value(&parked)->default_value(parked),
       "parked workload: runs queued for a day later beside the drain")
      ("concurrency", po::value(&concurrency)->default_value(concurrency), "engine concurrency (runs in flight)")
      ("threads", po::value(&threads)->default_value(threads), "engine io threads (0 = one per core)")
      ("writers", po::value(&writers)->default_value(writers),
       "group-commit writer connections (store_options.writers)")
      ("max-batch", po::value(&max_batch)->default_value(max_batch),
       "most writes per transaction (store_options.max_batch); also the ceiling's batch cap")
      ("pool", po::value(&pool)->default_value(pool),
       "connections for claims and heartbeats (store_options.pool_size)")
      ("enqueuers", po::value(&enqueuers)->default_value(enqueuers), "enqueue calls in flight while enqueueing")
      ("clients", po::value(&clients)->default_value(clients), "sse-fanout: SSE clients connected to the run")
      ("connections", po::value(&connections)->default_value(connections),
       "hook-resumes: keep-alive HTTP connections (and direct resume_hook calls) in flight")
      ("skip-ceiling", po::bool_switch(&o.skip_ceiling),
       "do not measure the raw-SQL ceilings (hook-resumes: the direct resume_hook comparison)")
      ("ceiling-indexes", po::value(&indexes)->default_value(indexes),
       "diagnostic, noop3: which of keel.runs' indexes the ceilings' runs table keeps: all, claim (the primary "
       "key and the claim index) or key (the primary key only)")
      ("analyze", po::bool_switch(&o.analyze),
       "diagnostic: ANALYZE keel.runs after enqueueing, before the drain (not timed)")
      ("database-url", po::value(&url),
       "use this PostgreSQL server (a fresh database keel_bench_<pid> on it) instead of an embedded one")
      ("keep-database", po::bool_switch(&o.keep_database),
       "with --database-url: keep the database afterwards (default: drop it)")
      ("pg-setting", po::value(&o.pg_settings)->composing(),
       "NAME=VALUE setting for the embedded server (repeatable), e.g. shared_buffers=256MB")
      ("timeout", po::value(&timeout)->default_value(timeout), "fail when the drain takes longer (seconds)");
  // clang-format on
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "keel-bench: " << e.what() << " (see --help)\n";
    return {std::nullopt, k_exit_usage};
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return {std::nullopt, 0};
  }
  auto check = [](const char* name, std::int64_t v, std::int64_t min) {
    if (v >= min) return true;
    std::cerr << "keel-bench: --" << name << " must be at least " << min << ", not " << v << "\n";
    return false;
  };
  if (!check("runs", runs, 1) || !check("parked", parked, 0) || !check("concurrency", concurrency, 1) ||
      !check("threads", threads, 0) || !check("writers", writers, 1) || !check("max-batch", max_batch, 1) ||
      !check("pool", pool, 1) || !check("enqueuers", enqueuers, 1) || !check("clients", clients, 1) ||
      !check("connections", connections, 1) || !check("timeout", timeout, 1)) {
    return {std::nullopt, k_exit_usage};
  }
  if (o.workload != k_noop3 && o.workload != k_parked && o.workload != k_log_overhead &&
      o.workload != k_stream_overhead && o.workload != k_keyed_overhead && !is_latency_workload(o.workload)) {
    std::cerr << "keel-bench: unknown workload '" << o.workload
              << "' (known: noop3, parked, log-overhead, stream-overhead, keyed-overhead, start-latency, "
                 "hook-latency, "
                 "sleep-lateness, replay, event-latency, stream-write, list-runs, fairness, hook-resumes, "
                 "sse-fanout)\n";
    return {std::nullopt, k_exit_usage};
  }
  const auto kept = ceiling_indexes_named(indexes);
  if (!kept) {
    std::cerr << "keel-bench: --ceiling-indexes wants all, claim or key, not '" << indexes << "'\n";
    return {std::nullopt, k_exit_usage};
  }
  o.ceiling_indexes_kept = *kept;
  if (*kept != ceiling_indexes::all && (o.workload != k_noop3 || o.skip_ceiling)) {
    std::cerr << "keel-bench: --ceiling-indexes applies to noop3's ceilings only\n";
    return {std::nullopt, k_exit_usage};
  }
  if (is_latency_workload(o.workload) && vm["runs"].defaulted()) {
    runs = static_cast<std::int64_t>(o.workload == k_replay         ? k_replay_default_steps
                                     : o.workload == k_list_runs    ? k_list_default_runs
                                     : o.workload == k_fairness     ? k_fairness_default_runs
                                     : o.workload == k_hook_resumes ? k_hook_resumes_default_runs
                                     : o.workload == k_sse_fanout   ? k_sse_fanout_default_frames
                                                                    : k_latency_default_runs);
  }
  // A worker's capacity bounds how soon a newcomer can start behind a busy one (bench/README.md): the
  // fairness workload measures the engine's own default unless told otherwise.
  if (o.workload == k_fairness && vm["concurrency"].defaulted())
    concurrency = static_cast<std::int64_t>(engine_options{}.concurrency);
  for (const auto& s : o.pg_settings) {
    if (s.find('=') == std::string::npos || s.front() == '=') {
      std::cerr << "keel-bench: --pg-setting wants NAME=VALUE, not '" << s << "'\n";
      return {std::nullopt, k_exit_usage};
    }
  }
  if (vm.count("database-url")) {
    if (!o.pg_settings.empty()) {
      std::cerr << "keel-bench: --pg-setting applies to the embedded server only, not with --database-url\n";
      return {std::nullopt, k_exit_usage};
    }
    o.database_url = url;
  }
  o.runs = static_cast<std::size_t>(runs);
  o.parked = static_cast<std::size_t>(parked);
  o.concurrency = static_cast<std::size_t>(concurrency);
  o.threads = static_cast<std::size_t>(threads);
  o.writers = static_cast<std::size_t>(writers);
  o.max_batch = static_cast<std::size_t>(max_batch);
  o.pool = static_cast<std::size_t>(pool);
  o.enqueuers = static_cast<std::size_t>(enqueuers);
  o.clients = static_cast<std::size_t>(clients);
  o.connections = static_cast<std::size_t>(connections);
  o.timeout = std::chrono::seconds(timeout);
  return {o, 0};
}

}  // namespace keel::bench
