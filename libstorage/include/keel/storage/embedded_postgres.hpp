// A private PostgreSQL cluster that Keel creates (initdb), starts and stops itself: the zero-setup default.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <string>

#include "keel/common/result.hpp"

namespace keel::storage {

/// Settings for an embedded cluster.
struct embedded_postgres_options {
  /// Data directory; created with initdb when it holds no cluster yet. The unix socket lives inside it.
  std::filesystem::path data_dir = "keel-data";
  /// TCP port on 127.0.0.1; 0 picks a free one (a restart of the same object keeps the one it picked).
  unsigned short port = 0;
  /// fsync and synchronous_commit; turn off only for throwaway test clusters.
  bool durable = true;
  /// Extra `-c name=value` server settings.
  std::map<std::string, std::string> settings;
  /// When running as root the server runs as this unprivileged user (PostgreSQL refuses root).
  std::string os_user = "postgres";
  /// How long start and stop may take.
  std::chrono::seconds timeout{60};
};

/// Owns one PostgreSQL server process. Blocking: call from a setup thread, never from an io_context thread.
/// Not thread-safe; the destructor stops a server this object started.
class embedded_postgres {
 public:
  explicit embedded_postgres(embedded_postgres_options options);
  ~embedded_postgres();
  embedded_postgres(const embedded_postgres&) = delete;
  embedded_postgres& operator=(const embedded_postgres&) = delete;

  /// Runs initdb if needed, then starts the server and waits until it accepts connections.
  /// A server left running on this data directory by a killed process is adopted.
  /// Errors: the tool's exit status and the tail of its log in the message (logged), returned as an error
  /// code.
  result<void> start_blocking();

  /// Stops the server (fast shutdown: clients disconnected, data safe). No-op when not running.
  result<void> stop_blocking();

  /// True between a successful start and stop.
  [[nodiscard]] bool running() const noexcept { return running_; }

  /// The port the server listens on (valid once started).
  [[nodiscard]] unsigned short port() const noexcept { return port_; }

  /// libpq connection string for `database` ("host=<socket dir> port=<port> user=postgres
  /// dbname=<database>").
  [[nodiscard]] std::string connection_string(const std::string& database = "postgres") const;

  /// Creates a database (no-op if it exists). Blocking.
  result<void> create_database_blocking(const std::string& name);

  [[nodiscard]] const std::filesystem::path& data_dir() const noexcept { return options_.data_dir; }

 private:
  embedded_postgres_options options_;
  unsigned short port_ = 0;
  bool running_ = false;
};

}  // namespace keel::storage
