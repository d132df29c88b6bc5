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
  /// Data directory; created with initdb when it holds no cluster yet, and kept mode 0700 and owned by the
  /// server's user. The server listens only on a unix socket inside it (no TCP): local connections are
  /// trusted, so this directory's permissions decide who may connect (that user, and root).
  std::filesystem::path data_dir = "keel-data";
  /// Names the unix socket, <data_dir>/.s.PGSQL.<port>; no TCP port is opened. 0 keeps the port of the last
  /// server on this data directory (this object's, else the one recorded in postmaster.opts) or picks one
  /// whose socket is not in use, so that connection strings survive restarts.
  unsigned short port = 0;
  /// fsync and synchronous_commit; turn off only for throwaway test clusters.
  bool durable = true;
  /// Extra `-c name=value` server settings. listen_addresses, port and unix_socket_directories are the
  /// embedded server's own: start_blocking refuses them.
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
  /// A server left running on this data directory by a killed process is adopted (restarted first when it
  /// listens on TCP, as servers started by older versions did).
  /// Errors: the tool's exit status and the tail of its log in the message (logged), returned as an error
  /// code.
  result<void> start_blocking();

  /// Stops the server (fast shutdown: clients disconnected, data safe). No-op when not running.
  result<void> stop_blocking();

  /// True between a successful start and stop.
  [[nodiscard]] bool running() const noexcept { return running_; }

  /// The port in the name of the server's unix socket (valid once started); the server has no TCP listener.
  [[nodiscard]] unsigned short port() const noexcept { return port_; }

  /// libpq connection string for `database` ("host=<data_dir> port=<port> user=postgres dbname=<database>"):
  /// the unix socket, which only the server's user and root can reach.
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
