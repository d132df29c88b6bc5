#include "pg_harness.hpp"

#include <fcntl.h>
#include <libpq-fe.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "keel/storage/conninfo.hpp"
#include "keel/storage/embedded_postgres.hpp"

extern char** environ;

namespace keel::test {
namespace {

struct cluster {
  temp_dir dir;
  std::unique_ptr<storage::embedded_postgres> pg;

  cluster() {
    storage::embedded_postgres_options o;
    o.data_dir = std::filesystem::path(dir.path()) / "data";
    o.durable = false;
    o.settings["max_connections"] = "300";
    pg = std::make_unique<storage::embedded_postgres>(o);
    if (auto r = pg->start_blocking(); !r)
      throw std::runtime_error("test cluster failed to start: " + r.error().message());
  }
};

std::mutex g_mutex;

cluster& the_cluster() {
  static cluster c;
  return c;
}

const char* external_url() {
  return std::getenv("KEEL_TEST_DATABASE_URL");
}

/// Runs a command (looked up on PATH) from `/` and returns its exit status.
int run_command(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // The postgres user may not be allowed into the test's working directory.
  posix_spawn_file_actions_addchdir_np(&actions, "/");
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);  // progress dots
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot run " + args[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/// pg_ctl's immediate shutdown: the postmaster sends SIGQUIT to every server process and exits without a
/// checkpoint, exactly what the next start has to recover from. embedded_postgres only knows the fast mode.
void crash_cluster(storage::embedded_postgres& pg) {
  std::vector<std::string> args;
  if (::geteuid() == 0) args = {"runuser", "-u", "postgres", "--"};
  for (const char* a : {"pg_ctl", "-D"})
    args.emplace_back(a);
  args.push_back(pg.data_dir().string());
  for (const char* a : {"-m", "immediate", "-w", "-t", "60", "stop"})
    args.emplace_back(a);
  if (run_command(args) != 0) throw std::runtime_error("pg_ctl stop -m immediate failed");
  // The server is gone; this only lets the object see it (and logs that it was already stopped).
  if (auto r = pg.stop_blocking(); !r || pg.running())
    throw std::runtime_error("the test cluster still runs after an immediate shutdown");
}

}  // namespace

temp_dir::temp_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "keel-test.XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  ::chmod(tmpl.c_str(), 0755);
  path_ = tmpl;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string admin_conninfo() {
  if (const char* url = external_url()) return url;
  std::lock_guard lock(g_mutex);
  return the_cluster().pg->connection_string("postgres");
}

std::string fresh_database() {
  static std::atomic<int> counter{0};
  const std::string name = "keel_t" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
  if (const char* url = external_url()) {
    query_value(url, "CREATE DATABASE " + name);
    return storage::conninfo_with_database(url, name);
  }
  std::lock_guard lock(g_mutex);
  auto& c = the_cluster();
  if (auto r = c.pg->create_database_blocking(name); !r) throw std::runtime_error("CREATE DATABASE failed");
  return c.pg->connection_string(name);
}

void stop_cluster(stop_mode mode) {
  std::lock_guard lock(g_mutex);
  auto& pg = *the_cluster().pg;
  if (mode == stop_mode::immediate) {
    crash_cluster(pg);
    return;
  }
  if (auto r = pg.stop_blocking(); !r) throw std::runtime_error("stopping the test cluster failed");
}

void start_cluster() {
  std::lock_guard lock(g_mutex);
  if (auto r = the_cluster().pg->start_blocking(); !r)
    throw std::runtime_error("restarting the test cluster failed");
}

void make_commits_crash_safe(const std::string& conninfo) {
  query_value(conninfo,
              "DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = on', "
              "current_database()); END$$");
}

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::string query_value(const std::string& conninfo, const std::string& sql) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(c);
    PQfinish(c);
    throw std::runtime_error("connect failed: " + msg);
  }
  PGresult* r = PQexec(c, sql.c_str());
  const auto st = PQresultStatus(r);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    std::string msg = PQresultErrorMessage(r);
    PQclear(r);
    PQfinish(c);
    throw std::runtime_error("query failed: " + msg + " in: " + sql);
  }
  std::string out = (st == PGRES_TUPLES_OK && PQntuples(r) > 0) ? PQgetvalue(r, 0, 0) : "";
  PQclear(r);
  PQfinish(c);
  return out;
}

}  // namespace keel::test
