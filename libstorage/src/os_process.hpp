// Running a command-line tool, optionally as another OS user: fork + execv (no shell), output captured.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keel/common/result.hpp"

namespace keel::storage::detail {

using tool_clock = std::chrono::steady_clock;

/// An unprivileged account to run tools as (the server's user, when we are root: PostgreSQL refuses root).
struct identity {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  /// Supplementary groups, resolved in the parent (see lookup_identity).
  std::vector<gid_t> groups;
};

/// The account `name` with its groups. Errors (logged): no such account, or it is root.
result<identity> lookup_identity(const std::string& name);

/// `os_user`'s account when this process is root (tools must not run as root), nothing otherwise.
result<std::optional<identity>> tool_identity(const std::string& os_user);

/// How one tool run ended.
struct tool_run {
  bool timed_out = false;
  int status = 0;  // from waitpid
  /// stdout and stderr interleaved; only the last MiB is kept.
  std::string output;

  [[nodiscard]] bool ok() const;
};

/// Runs args[0] (an absolute path) with args, as `as` when given, with stdin from /dev/null, no inherited
/// descriptors and the working directory /; kills it at `deadline`. Blocking. Errors (logged): pipe, fork or
/// waitpid failed; a tool that ran and failed is a tool_run that is not ok().
result<tool_run> run_tool(const std::vector<std::string>& args, const identity* as,
                          tool_clock::time_point deadline);

/// The arguments joined by spaces, for logs (not for a shell).
std::string join_command(const std::vector<std::string>& args);

/// The last `lines` lines of `text`, trailing blank space dropped.
std::string tail_lines(std::string_view text, std::size_t lines);

/// "exited with status 0", "did not finish within Ns and was killed", "was killed by signal 9 (SIGKILL)", ...
std::string outcome_text(const tool_run& run, tool_clock::duration allowed);

/// Appends the command, its output and its outcome to `file` (mode 0600, owned by `as` when given). Failures
/// are logged, never returned: the log is for people, the caller's result does not depend on it.
void append_log(const std::filesystem::path& file, const std::vector<std::string>& args, const tool_run& run,
                tool_clock::duration allowed, const identity* as);

/// Checks access(2) as `id`, in a forked child so that the account's groups and ACLs count: X_OK on every
/// path but the last, `last_mode` on the last. Returns the index of the first path that fails, nothing if
/// none does. Errors (logged): fork or the switch to `id` failed.
result<std::optional<std::size_t>> first_denied_as(const identity& id, const std::vector<std::string>& paths,
                                                   int last_mode);

}  // namespace keel::storage::detail
