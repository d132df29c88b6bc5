// keeld: the Keel server. Wires the engine to PostgreSQL (embedded by default), runs the example workflows
// (unless --no-examples), and serves the HTTP API (127.0.0.1:8080 unless --listen says otherwise) until
// SIGINT/SIGTERM. --once runs a demonstration batch, printing run transitions, and exits without serving.
#include <signal.h>

#include <boost/json/serialize.hpp>
#include <boost/program_options.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "api_workflows.hpp"
#include "example_workflows.hpp"
#include "keel/common/log.hpp"
#include "keel/engine.hpp"
#include "keel/http/server.hpp"
#include "keel/storage/embedded_postgres.hpp"

namespace po = boost::program_options;
namespace json = boost::json;

namespace {

std::mutex g_out;

void print_event(const keel::run_event& ev) {
  std::string line = ev.id + " " + ev.workflow + " " + std::string(keel::to_string(ev.what));
  if (!ev.step.empty()) line += " " + ev.step + " (attempt " + std::to_string(ev.attempt) + ")";
  if (ev.what == keel::run_event::kind::claimed && ev.attempt > 1)
    line += " (execution " + std::to_string(ev.attempt) + ")";
  if (!ev.detail.empty()) line += ": " + ev.detail;
  std::lock_guard lock(g_out);
  std::cout << line << std::endl;
}

/// "90s", "15m", "12h", "30d", "250ms": a positive duration; nullopt for anything else.
std::optional<std::chrono::milliseconds> parse_duration(const std::string& text) {
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9')
    ++digits;
  if (digits == 0 || digits > 9) return std::nullopt;
  const long long n = std::stoll(text.substr(0, digits));
  const std::string unit = text.substr(digits);
  long long ms_per = 0;
  if (unit == "ms")
    ms_per = 1;
  else if (unit == "s")
    ms_per = 1000;
  else if (unit == "m")
    ms_per = 60'000;
  else if (unit == "h")
    ms_per = 3'600'000;
  else if (unit == "d")
    ms_per = 86'400'000;
  if (ms_per == 0 || n == 0 || n * ms_per > 36'500LL * 86'400'000)
    return std::nullopt;  // 0 < it <= 100 years
  return std::chrono::milliseconds(n * ms_per);
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description desc("keeld — the Keel durable workflow server\nOptions");
  std::string database_url, data_dir;
  std::size_t concurrency = 64, demo_runs = 0;
  bool once = false;
  bool no_examples = false;
  std::string listen = "127.0.0.1:8080";
  std::vector<std::string> api_keys, cors_origins;
  desc.add_options()("help,h", "show this help")("listen", po::value(&listen)->default_value(listen),
                                                 "serve the HTTP API on ADDRESS:PORT ([::1]:8080 for IPv6)")(
      "database-url", po::value(&database_url),
      "PostgreSQL connection string (libpq form or postgresql:// URL); default: $KEEL_DATABASE_URL, else an "
      "embedded server in --data-dir")("data-dir", po::value(&data_dir)->default_value("keel-data"),
                                       "data directory of the embedded PostgreSQL")(
      "api-key", po::value(&api_keys)->composing(),
      "require 'Authorization: Bearer KEY' on the API (hooks and probes excepted); repeat it to accept "
      "several keys while rotating them; default: $KEEL_API_KEY if set, else no key needed")(
      "cors-origin", po::value(&cors_origins)->composing(),
      "let web pages from this origin (e.g. https://ops.example.com, or *) call the API; repeatable")(
      "concurrency", po::value(&concurrency)->default_value(64), "runs in flight at once on this worker")(
      "demo-runs", po::value(&demo_runs)->default_value(0),
      "demonstration runs (order_fulfillment, user_onboarding) to enqueue at start")(
      "once", po::bool_switch(&once),
      "run the demonstration batch, print its transitions and exit, serving no HTTP")(
      "no-examples", po::bool_switch(&no_examples),
      "register no example workflows (approval, countdown, order, noop3 and the demonstration ones)");
  std::string retain_finished, retention_interval = "1m";
  std::size_t retention_batch = 500;
  po::options_description retention("Retention");
  retention.add_options()(
      "retain-finished", po::value(&retain_finished),
      "delete finished runs (with their steps, events, hooks, output streams and run log) once they finished "
      "longer ago than this: 30d, 12h, 90m, 45s; default: keep them forever")(
      "retention-batch", po::value(&retention_batch)->default_value(retention_batch),
      "runs deleted per transaction (1 to 10000): each is short and waits on nothing")(
      "retention-interval", po::value(&retention_interval)->default_value(retention_interval),
      "how often retention runs");
  desc.add(retention);
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "keeld: " << e.what() << "\n" << desc << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (database_url.empty()) {
    if (const char* env = std::getenv("KEEL_DATABASE_URL")) database_url = env;
  }
  if (api_keys.empty()) {
    if (const char* env = std::getenv("KEEL_API_KEY"); env != nullptr && *env != '\0')
      api_keys.push_back(env);
  }
  for (const auto& key : api_keys) {
    if (key.size() < 16 || key.find_first_of(" \t\r\n") != std::string::npos) {
      std::cerr << "keeld: an API key needs at least 16 characters and no whitespace\n";
      return 2;
    }
  }
  if (no_examples && demo_runs > 0) {
    std::cerr << "keeld: --demo-runs needs the example workflows (drop --no-examples)\n";
    return 2;
  }
  if (once && (no_examples || !vm["listen"].defaulted())) {
    std::cerr << "keeld: --once runs the demonstration batch without serving: it takes neither --no-examples "
                 "nor --listen\n";
    return 2;
  }
  std::optional<std::chrono::milliseconds> keep_finished;
  if (!retain_finished.empty()) {
    keep_finished = parse_duration(retain_finished);
    if (!keep_finished) {
      std::cerr << "keeld: --retain-finished takes a duration such as 30d, 12h, 90m or 45s (got '"
                << retain_finished << "')\n";
      return 2;
    }
  }
  const auto retention_every = parse_duration(retention_interval);
  if (!retention_every) {
    std::cerr << "keeld: --retention-interval takes a duration such as 1m or 30s (got '" << retention_interval
              << "')\n";
    return 2;
  }
  if (retention_batch == 0 || retention_batch > 10'000) {
    std::cerr << "keeld: --retention-batch takes 1 to 10000\n";
    return 2;
  }
  if (once && demo_runs == 0) demo_runs = 10;
  const bool serve = !once;
  keel::http::server_options http_options;
  http_options.api_keys = api_keys;
  http_options.cors_origins = cors_origins;
  if (serve) {
    // ADDRESS:PORT, the address in brackets for IPv6 ([::1]:8080).
    const auto colon = listen.rfind(':');
    std::string address = colon == std::string::npos ? "" : listen.substr(0, colon);
    if (address.size() >= 2 && address.front() == '[' && address.back() == ']')
      address = address.substr(1, address.size() - 2);
    const std::string port = colon == std::string::npos ? "" : listen.substr(colon + 1);
    char* end = nullptr;
    const long p = port.empty() ? -1 : std::strtol(port.c_str(), &end, 10);
    if (address.empty() || p < 0 || p > 65535 || *end != '\0') {
      std::cerr << "keeld: --listen takes ADDRESS:PORT, e.g. 127.0.0.1:8080 (got '" << listen << "')\n";
      return 2;
    }
    http_options.address = address;
    http_options.port = static_cast<unsigned short>(p);
  }

  // Signals are taken by sigwait below, never by an engine thread: block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::optional<keel::storage::embedded_postgres> embedded;
  if (database_url.empty()) {
    keel::storage::embedded_postgres_options pg;
    pg.data_dir = data_dir;
    embedded.emplace(pg);
    if (auto r = embedded->start_blocking(); !r) {
      std::cerr
          << "keeld: the embedded PostgreSQL did not start (" << r.error().message()
          << "; the log above says why). Use --data-dir DIR for a directory the server's user can reach, "
             "or --database-url for an existing server.\n";
      return 1;
    }
    if (auto r = embedded->create_database_blocking("keel"); !r) {
      std::cerr << "keeld: cannot create database 'keel': " << r.error().message() << "\n";
      return 1;
    }
    database_url = embedded->connection_string("keel");
    keel::log::info("keeld", "using embedded PostgreSQL in " + embedded->data_dir().string());
  }

  std::mutex m;
  std::condition_variable cv;
  std::set<std::string> demo_ids, finished;  // a run may finish before enqueue_blocking returns its id
  bool demo_enqueued = false;
  auto demo_done = [&] {
    if (!demo_enqueued) return false;
    for (const auto& id : demo_ids) {
      if (!finished.contains(id)) return false;
    }
    return true;
  };
  keel::engine_options o;
  o.store.conninfo = database_url;
  o.concurrency = concurrency;
  if (keep_finished) o.retention.keep_finished = *keep_finished;
  o.retention.batch = retention_batch;
  o.retention.interval = *retention_every;
  o.on_event = [&](const keel::run_event& ev) {
    print_event(ev);
    if (ev.what == keel::run_event::kind::completed || ev.what == keel::run_event::kind::failed ||
        ev.what == keel::run_event::kind::cancelled) {
      std::lock_guard lock(m);
      finished.insert(ev.id);
      cv.notify_all();
    }
  };
  keel::engine engine(o);
  if (!no_examples) {
    keel::examples::register_example_workflows(engine);
    keel::examples::register_api_workflows(engine);
  }
  if (auto r = engine.start_blocking(); !r) {
    std::cerr << "keeld: cannot start the engine (database migration failed): " << r.error().message()
              << "\n";
    return 1;
  }
  keel::log::info("keeld", "worker " + engine.worker_id() + " running");
  std::optional<keel::http::server> http;
  if (serve) {
    http.emplace(engine, http_options);
    if (auto r = http->start(); !r) {
      std::cerr << "keeld: cannot listen on " << listen << ": " << r.error().message() << "\n";
      engine.stop_blocking();
      return 1;
    }
  }

  for (std::size_t i = 0; i < demo_runs; ++i) {
    const std::string wf = i % 2 == 0 ? "order_fulfillment" : "user_onboarding";
    auto id = engine.enqueue_blocking(wf, keel::examples::example_input(wf, static_cast<int>(i)));
    if (!id) {
      std::cerr << "keeld: enqueue failed: " << id.error().message() << "\n";
      continue;
    }
    std::lock_guard lock(m);
    demo_ids.insert(*id);
  }
  {
    std::lock_guard lock(m);
    demo_enqueued = true;
  }

  // Wait for the demonstration batch (or a signal), then for a signal if serving.
  std::atomic<bool> signalled{false};
  std::atomic<bool> stopped{false};
  // Polls, so that the waiter can be joined once the engine stopped without a signal ever arriving.
  auto next_signal = [&]() -> int {
    const timespec tick{0, 100'000'000};
    while (!stopped) {
      const int sig = sigtimedwait(&signals, nullptr, &tick);
      if (sig > 0) return sig;
    }
    return 0;
  };
  std::thread waiter([&] {
    if (next_signal() == 0) return;
    signalled = true;
    {
      std::lock_guard lock(m);
      cv.notify_all();
    }
    // A second signal while the graceful stop is under way means "now": leave at once. Runs still in
    // flight are abandoned; their leases lapse and another worker resumes them from their checkpoints.
    const int sig = next_signal();
    if (sig == 0) return;
    keel::log::warn("keeld", "second signal: exiting at once");
    std::_Exit(128 + sig);
  });
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return signalled || demo_done(); });
  }
  if (demo_runs > 0 && !signalled) {
    std::lock_guard lock(g_out);
    std::cout << "demonstration batch of " << demo_runs << " runs finished"
              << (serve ? "; serving until SIGINT/SIGTERM" : "") << std::endl;
  }
  if (serve) {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return signalled.load(); });
  }
  if (http) {
    keel::log::info("keeld", "stopping HTTP: finishing requests in progress");
    http->stop_blocking();
  }
  keel::log::info("keeld", "stopping: finishing in-flight steps and releasing leases");
  engine.stop_blocking();
  stopped = true;
  waiter.join();
  return 0;
}
