// Test harness: one embedded PostgreSQL per test process, a fresh database per test, condition waits.
#pragma once

#include <chrono>
#include <functional>
#include <string>

namespace keel::test {

/// Connection string of a new, empty database on the process-wide test cluster (started on first use in a
/// temporary directory, fsync off, removed at exit). KEEL_TEST_DATABASE_URL, if set, names an existing
/// server to use instead (a database is created on it per call).
std::string fresh_database();

/// Connection string of the cluster's maintenance database (for CREATE DATABASE and the like).
std::string admin_conninfo();

/// How stop_cluster stops the server (pg_ctl's shutdown modes).
enum class stop_mode {
  fast,       ///< clients disconnected, a checkpoint written: a clean restart
  immediate,  ///< every server process quits at once, as in a crash: the restart runs crash recovery
};

/// Stops and restarts the test cluster on the same port (to test outages). Not with KEEL_TEST_DATABASE_URL.
void stop_cluster(stop_mode mode = stop_mode::fast);
void start_cluster();

/// Makes every later session on the database of `conninfo` wait for its commits to reach the WAL on disk. The
/// test cluster runs with synchronous_commit off (fast, and safe across a fast shutdown); a test that crashes
/// the server needs it on, or acknowledged commits may be lost by the crash.
void make_commits_crash_safe(const std::string& conninfo);

/// Polls `pred` every few milliseconds until it is true or `timeout` passes; returns its last value.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout);

/// Runs one SQL statement on `conninfo` and returns the first column of the first row ("" if none).
std::string query_value(const std::string& conninfo, const std::string& sql);

/// A fresh temporary directory (removed by the destructor), traversable by the postgres user.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

}  // namespace keel::test
