#include "bench_database.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>
#include <system_error>

#include "keel/common/log.hpp"
#include "keel/storage/conninfo.hpp"
#include "keel/storage/embedded_postgres.hpp"
#include "pg_util.hpp"

namespace keel::bench {
namespace {
constexpr std::string_view k_component = "bench";
}  // namespace

temp_dir::temp_dir() {
  std::string tmpl = "/tmp/keel-bench.XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp under /tmp failed");
  ::chmod(tmpl.c_str(), 0755);
  path_ = tmpl;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  if (ec) log::warn(k_component, "cannot remove " + path_.string() + ": " + ec.message());
}

bench_database::bench_database(const bench_options& o) : name_("keel_bench_" + std::to_string(::getpid())) {
  if (o.database_url) {
    admin_ = *o.database_url;
    auto conn = connect_blocking(admin_);
    exec_blocking(conn.get(), "CREATE DATABASE " + name_);
    drop_ = !o.keep_database;
    conninfo_ = storage::conninfo_with_database(admin_, name_);
    log::info(k_component, "created database " + name_ + " on the given server");
    return;
  }
  dir_.emplace();
  storage::embedded_postgres_options pgo;
  pgo.data_dir = dir_->path() / "data";
  pgo.durable = true;  // fsync and synchronous_commit on: commits cost what they cost
  for (const auto& s : o.pg_settings) {
    const auto eq = s.find('=');
    pgo.settings[s.substr(0, eq)] = s.substr(eq + 1);
  }
  server_ = std::make_unique<storage::embedded_postgres>(pgo);
  if (auto r = server_->start_blocking(); !r)
    throw std::runtime_error("embedded PostgreSQL failed to start: " + r.error().message());
  if (auto r = server_->create_database_blocking(name_); !r)
    throw std::runtime_error("CREATE DATABASE " + name_ + " failed: " + r.error().message());
  conninfo_ = server_->connection_string(name_);
}

bench_database::~bench_database() {
  cleanup_blocking();
}

void bench_database::cleanup_blocking() {
  std::lock_guard lock(cleanup_mutex_);
  if (drop_) {
    drop_ = false;
    try {
      auto conn = connect_blocking(admin_);
      for (const auto& extra : extra_)
        exec_blocking(conn.get(), "DROP DATABASE IF EXISTS " + extra + " WITH (FORCE)");
      exec_blocking(conn.get(), "DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
    } catch (const std::exception& e) {
      log::warn(k_component, std::string("cannot drop the benchmark database: ") + e.what());
    }
  }
  // The server stops before its directory goes.
  if (server_) {
    if (auto r = server_->stop_blocking(); !r)
      log::warn(k_component, "stopping the embedded server failed: " + r.error().message());
    server_.reset();
  }
  dir_.reset();
}

std::string bench_database::add_database_blocking(const std::string& suffix) {
  const std::string name = name_ + "_" + suffix;
  if (server_) {
    if (auto r = server_->create_database_blocking(name); !r)
      throw std::runtime_error("CREATE DATABASE " + name + " failed: " + r.error().message());
    return server_->connection_string(name);
  }
  auto conn = connect_blocking(admin_);
  exec_blocking(conn.get(), "CREATE DATABASE " + name);
  extra_.push_back(name);
  return storage::conninfo_with_database(admin_, name);
}

}  // namespace keel::bench
