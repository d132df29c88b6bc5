// The benchmark's database: an embedded PostgreSQL in a temporary directory, or a fresh database on a given
// server; both removed at exit.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "bench_options.hpp"

namespace keel::storage {
class embedded_postgres;
}

namespace keel::bench {

/// A fresh directory under /tmp, traversable by the server's user when we run as root; removed on
/// destruction.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

/// Owns the benchmark's database for the life of the process. Blocking; throws on failure.
class bench_database {
 public:
  explicit bench_database(const bench_options& o);
  ~bench_database();
  bench_database(const bench_database&) = delete;
  bench_database& operator=(const bench_database&) = delete;

  /// Drops the database (given server) or stops the server and removes its directory (embedded). Idempotent;
  /// may run on another thread while the main one is stuck (the hung-engine watchdog).
  void cleanup_blocking();

  [[nodiscard]] const std::string& conninfo() const noexcept { return conninfo_; }

  /// Creates a second database on the same server (dropped with the first); returns its connection string.
  std::string add_database_blocking(const std::string& suffix);

 private:
  std::vector<std::string> extra_;
  std::string name_;
  std::string admin_;
  bool drop_ = false;
  std::optional<temp_dir> dir_;
  std::unique_ptr<storage::embedded_postgres> server_;
  std::string conninfo_;
  std::mutex cleanup_mutex_;
};

}  // namespace keel::bench
