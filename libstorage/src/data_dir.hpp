// The embedded cluster's data directory: making it private, and reading what the server records in it.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>

#include "keel/common/result.hpp"
#include "os_process.hpp"

namespace keel::storage::detail {

/// Why pg_ctl's shell command line or the server's socket directory list would misread path `p`, if they
/// would.
std::optional<std::string> unsafe_path_reason(const std::string& p);

/// Creates `dir` (and missing parents) when absent, gives it to `as` when given (we are root), and makes it
/// mode 0700: it holds the cluster and the unix socket through which any local connection is trusted as
/// superuser. Checks that the server's user owns it and, as root, that `as` can reach it. Errors are logged.
result<void> prepare_data_dir(const std::filesystem::path& dir, const identity* as);

/// The lines of postmaster.pid we use (src/include/miscadmin.h: LOCK_FILE_LINE_*).
struct pid_file {
  pid_t pid = 0;
  std::string data_dir;
  unsigned short port = 0;
  /// The first TCP address the server listens on; empty when it has no TCP listener (or is still starting).
  std::string listen_address;
  std::string status;
};

/// postmaster.pid of `dir`, if present and well-formed.
std::optional<pid_file> read_pid_file(const std::filesystem::path& dir);

/// The port of the last server started on `dir` (from postmaster.opts, which outlives the server), if any.
std::optional<unsigned short> recorded_port(const std::filesystem::path& dir);

/// True when `pid` is a live (not zombie) process that looks like a postgres server.
bool alive_postgres(pid_t pid);

/// True when path `a` (as the server wrote it) names directory `b`.
bool same_directory(const std::string& a, const std::filesystem::path& b);

}  // namespace keel::storage::detail
