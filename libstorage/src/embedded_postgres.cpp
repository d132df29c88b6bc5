#include "keel/storage/embedded_postgres.hpp"

#include <libpq-fe.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "data_dir.hpp"
#include "embedded_common.hpp"
#include "keel/common/log.hpp"
#include "keel/storage/conninfo.hpp"
#include "keel/storage/error.hpp"
#include "os_process.hpp"
#include "server_port.hpp"

namespace keel::storage {
namespace {

namespace fs = std::filesystem;
using clock = detail::tool_clock;
using detail::identity;
using detail::server_failed;

constexpr std::string_view k_component = detail::k_embedded_component;
/// How many trailing lines of a tool's output or of server.log go into an error message.
constexpr std::size_t k_tail_lines = 20;
/// server.log read back after a failed start; the file itself keeps it all.
constexpr std::size_t k_max_log = 1 << 20;
/// pg_ctl enforces options.timeout itself; this margin only catches a hung tool.
constexpr std::chrono::seconds k_tool_grace{10};
/// The first start attempt plus three retries when a picked port's socket was taken in the meantime.
constexpr int k_port_attempts = 4;
constexpr auto k_poll_interval = std::chrono::milliseconds(20);

// ---------------------------------------------------------------------------------------------------------------
// Locating the PostgreSQL binaries.

struct binaries {
  fs::path initdb;
  fs::path pg_ctl;
};

bool is_executable_file(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
}

std::optional<binaries> binaries_in(const fs::path& dir) {
  if (!is_executable_file(dir / "initdb") || !is_executable_file(dir / "pg_ctl")) return std::nullopt;
  // Resolve symlinks (e.g. /usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin/pg_ctl): the tools find
  // `postgres` next to their own real location.
  std::error_code ec;
  binaries b{fs::canonical(dir / "initdb", ec), {}};
  if (ec) b.initdb = dir / "initdb";
  b.pg_ctl = fs::canonical(dir / "pg_ctl", ec);
  if (ec) b.pg_ctl = dir / "pg_ctl";
  return b;
}

/// `initdb` and `pg_ctl` from the first PATH directory holding both, else from the newest
/// /usr/lib/postgresql/N/bin.
result<binaries> find_binaries() {
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::string_view rest = path;
    while (!rest.empty()) {
      auto colon = rest.find(':');
      std::string_view dir = rest.substr(0, colon);
      rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
      if (dir.empty() || dir.front() != '/') continue;  // a relative PATH entry would depend on the cwd
      if (auto b = binaries_in(fs::path(dir))) return *b;
    }
  }
  std::optional<binaries> best;
  long best_version = -1;
  std::error_code ec;
  for (fs::directory_iterator it("/usr/lib/postgresql", ec), end; !ec && it != end; it.increment(ec)) {
    auto name = it->path().filename().string();
    long version = 0;
    auto [ptr, err] = std::from_chars(name.data(), name.data() + name.size(), version);
    if (err != std::errc{} || ptr != name.data() + name.size() || version <= best_version) continue;
    if (auto b = binaries_in(it->path() / "bin")) {
      best = b;
      best_version = version;
    }
  }
  if (best) return *best;
  return server_failed(
      "cannot find initdb and pg_ctl on PATH or in /usr/lib/postgresql/*/bin; install the PostgreSQL server");
}

// ---------------------------------------------------------------------------------------------------------------
// Starting.

/// The settings start_blocking decides itself: where the server listens, and so what connection_string says.
std::optional<std::string> reserved_setting(const std::map<std::string, std::string>& settings) {
  for (const auto& [name, value] : settings) {
    // The server folds case and reads '-' as '_' in option names.
    std::string key = name;
    for (char& c : key)
      c = c == '-' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (key == "listen_addresses" || key == "port" || key == "unix_socket_directories") return name;
  }
  return std::nullopt;
}

enum class wait_outcome { ready, died, timed_out };

/// Waits until the server answers connections, its process dies, or the deadline passes.
wait_outcome wait_until_ready(pid_t pid, const std::string& conninfo, clock::time_point deadline) {
  const std::string ping = conninfo + " connect_timeout=2";
  for (;;) {
    if (PQping(ping.c_str()) == PQPING_OK) return wait_outcome::ready;
    if (!detail::alive_postgres(pid)) return wait_outcome::died;
    if (clock::now() >= deadline) return wait_outcome::timed_out;
    std::this_thread::sleep_for(k_poll_interval);
  }
}

/// Single-quotes one word for the /bin/sh command line pg_ctl builds from its -o options.
std::string shell_quote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  out.push_back('\'');
  return out;
}

std::uintmax_t file_size_or_zero(const fs::path& p) {
  std::error_code ec;
  auto n = fs::file_size(p, ec);
  return ec ? 0 : n;
}

std::string read_from(const fs::path& p, std::uintmax_t offset) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return {};
  in.seekg(static_cast<std::streamoff>(offset));
  std::string out;
  char buf[4096];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    out.append(buf, static_cast<std::size_t>(in.gcount()));
    if (out.size() > k_max_log) out.erase(0, out.size() - k_max_log);
  }
  return out;
}

}  // namespace

embedded_postgres::embedded_postgres(embedded_postgres_options options) : options_(std::move(options)) {
  // Absolute once, here: the socket directory, pg_ctl and connection strings must not depend on a later
  // chdir.
  if (options_.data_dir.empty()) return;
  std::error_code ec;
  fs::path abs = fs::absolute(options_.data_dir, ec);
  if (ec) return;  // start_blocking reports the relative path it cannot use
  abs = abs.lexically_normal();
  if (!abs.has_filename() && abs != abs.root_path()) abs = abs.parent_path();  // "dir/" -> "dir"
  options_.data_dir = std::move(abs);
}

embedded_postgres::~embedded_postgres() {
  if (!running_) return;
  try {
    if (auto r = stop_blocking(); !r) {
      log::warn(k_component, "stopping the server in the destructor failed: " + r.error().message());
    }
  } catch (const std::exception& e) {
    log::warn(k_component, std::string("stopping the server in the destructor threw: ") + e.what());
  } catch (...) {
    log::warn(k_component, "stopping the server in the destructor threw");
  }
}

result<void> embedded_postgres::start_blocking() {
  if (running_) return {};
  const fs::path& dir = options_.data_dir;
  const auto started = clock::now();
  const auto deadline = started + options_.timeout;
  const auto tool_allowance = options_.timeout + k_tool_grace;

  if (dir.empty() || !dir.is_absolute()) {
    return server_failed("data_dir '" + dir.string() +
                         "' cannot be made absolute against the working directory");
  }
  if (auto why = detail::unsafe_path_reason(dir.string())) {
    return server_failed("data_dir " + dir.string() + " " + *why);
  }
  if (auto name = reserved_setting(options_.settings)) {
    return server_failed("setting '" + *name +
                         "' is not allowed: the embedded server listens only on its unix socket in the data "
                         "directory (choose the socket's name with embedded_postgres_options::port)");
  }

  auto as = detail::tool_identity(options_.os_user);
  if (!as) return as.error();
  const identity* as_ptr = *as ? &**as : nullptr;
  auto bins = find_binaries();
  if (!bins) return bins.error();
  if (auto r = detail::prepare_data_dir(dir, as_ptr); !r) return r;

  // A server still running on this directory (its owner was killed) is adopted rather than started twice.
  if (auto pf = detail::read_pid_file(dir); pf && detail::alive_postgres(pf->pid)) {
    if (!detail::same_directory(pf->data_dir, dir)) {
      log::warn(k_component, "postmaster.pid in " + dir.string() + " names process " +
                                 std::to_string(pf->pid) + " serving " + pf->data_dir +
                                 "; leaving it to pg_ctl");
    } else if (pf->status == "stopping") {
      log::info(k_component,
                "server pid " + std::to_string(pf->pid) + " is shutting down; waiting to restart it");
      while (detail::alive_postgres(pf->pid) && clock::now() < deadline)
        std::this_thread::sleep_for(k_poll_interval);
    } else if (pf->port == 0) {
      log::warn(k_component,
                "postmaster.pid of running server " + std::to_string(pf->pid) + " holds no port yet");
    } else {
      port_ = pf->port;
      if (options_.port != 0 && options_.port != port_) {
        log::warn(k_component, "adopted server uses port " + std::to_string(port_) + ", not the configured " +
                                   std::to_string(options_.port));
      }
      switch (wait_until_ready(pf->pid, connection_string("postgres"), deadline)) {
        case wait_outcome::ready: {
          running_ = true;
          // Re-read: the listen address is recorded once the server has opened its sockets.
          auto now = detail::read_pid_file(dir);
          if (!now || now->pid != pf->pid || now->listen_address.empty()) {
            log::info(k_component, "adopted running server pid " + std::to_string(pf->pid) + " on port " +
                                       std::to_string(port_) + " for " + dir.string());
            return {};
          }
          // Started by an older Keel or by hand: with trust authentication a TCP listener admits any local
          // user as superuser. Its owner is gone, so restart it the private way, on the same port.
          log::warn(k_component, "adopted server pid " + std::to_string(pf->pid) + " listens on TCP (" +
                                     now->listen_address + "); restarting it on its unix socket only");
          if (auto r = stop_blocking(); !r) return r;
          break;
        }
        case wait_outcome::died:
          log::warn(k_component,
                    "server pid " + std::to_string(pf->pid) + " exited while being adopted; starting anew");
          break;
        case wait_outcome::timed_out:
          return server_failed("server pid " + std::to_string(pf->pid) + " running on " + dir.string() +
                               " did not accept connections within " +
                               std::to_string(options_.timeout.count()) + "s");
      }
    }
  }

  // A restart keeps the port it had, so connection strings handed out before stay valid: this object's last
  // one, else the last server's on this data directory (from another process, say before a crash). Reusing it
  // is safe because the socket is private to the directory; a live holder makes the loop below pick anew.
  unsigned short port = options_.port != 0 ? options_.port : port_;
  if (port == 0) port = detail::recorded_port(dir).value_or(0);
  if (port == 0) {
    auto picked = detail::pick_port(dir);
    if (!picked) return picked.error();
    port = *picked;
  }
  if (auto why = detail::socket_path_problem(dir, port)) return server_failed(*why);

  std::error_code ec;
  bool has_cluster = fs::exists(dir / "PG_VERSION", ec);
  if (ec) return server_failed("cannot inspect data directory " + dir.string() + ": " + ec.message());
  if (!has_cluster) {
    // Local connections are trusted (the socket's 0700 directory is the access control); TCP ones are
    // rejected, should a listener ever be opened.
    const std::vector<std::string> args{bins->initdb.string(),
                                        "-D",
                                        dir.string(),
                                        "-U",
                                        "postgres",
                                        "--auth-local=trust",
                                        "--auth-host=reject",
                                        "-E",
                                        "UTF8",
                                        "--locale=C.UTF-8",
                                        "--no-sync"};
    log::info(k_component, "initializing a new cluster in " + dir.string());
    auto run = detail::run_tool(args, as_ptr, clock::now() + tool_allowance);
    if (!run) return run.error();
    if (!run->ok()) {
      // initdb insists on an empty directory, so on failure its output stays out of it (the tail is logged).
      return server_failed(detail::join_command(args) + " " + detail::outcome_text(*run, tool_allowance) +
                           "; last output:\n" + detail::tail_lines(run->output, k_tail_lines));
    }
    detail::append_log(dir / "initdb.log", args, *run, tool_allowance, as_ptr);
  }

  const fs::path server_log = dir / "server.log";
  const auto timeout_secs = std::to_string(std::max<long long>(1, options_.timeout.count()));
  for (int attempt = 1;; ++attempt) {
    // No TCP listener; the socket file itself is the owner's alone too, in case the directory's mode is ever
    // loosened.
    std::string opts = "-k " + shell_quote(dir.string()) + " -p " + std::to_string(port) + " -c " +
                       shell_quote("listen_addresses=") + " -c unix_socket_permissions=0700";
    if (!options_.durable) opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off";
    for (const auto& [name, value] : options_.settings)
      opts += " -c " + shell_quote(name + "=" + value);
    const std::vector<std::string> args{
        bins->pg_ctl.string(), "-D", dir.string(), "-l",   server_log.string(), "-w", "-t",
        timeout_secs,          "-o", opts,         "start"};
    const auto log_offset = file_size_or_zero(server_log);
    auto run = detail::run_tool(args, as_ptr, clock::now() + tool_allowance);
    if (!run) return run.error();
    detail::append_log(dir / "pg_ctl.log", args, *run, tool_allowance, as_ptr);
    if (run->ok()) {
      port_ = port;
      running_ = true;
      log::info(
          k_component,
          "server started on " + detail::socket_file(dir, port_).string() + " in " +
              std::to_string(
                  std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started).count()) +
              " ms");
      return {};
    }
    const std::string new_log = read_from(server_log, log_offset);
    if (options_.port == 0 && attempt < k_port_attempts && detail::socket_was_taken(new_log)) {
      auto picked = detail::pick_port(dir);
      if (!picked) return picked.error();
      log::warn(k_component, "the socket for port " + std::to_string(port) +
                                 " is held by another process; retrying on " + std::to_string(*picked));
      port = *picked;
      if (auto why = detail::socket_path_problem(dir, port)) return server_failed(*why);
      continue;
    }
    return server_failed("pg_ctl start for " + dir.string() + " " +
                         detail::outcome_text(*run, tool_allowance) + "; pg_ctl output:\n" +
                         detail::tail_lines(run->output, k_tail_lines) + "\nserver.log:\n" +
                         detail::tail_lines(new_log, k_tail_lines));
  }
}

result<void> embedded_postgres::stop_blocking() {
  if (!running_) return {};
  const fs::path& dir = options_.data_dir;
  // Somebody else (another owner of an adopted server, an operator) may have stopped it already.
  auto server_gone = [&] {
    auto pf = detail::read_pid_file(dir);
    return !pf || !detail::alive_postgres(pf->pid);
  };
  if (server_gone()) {
    running_ = false;
    log::info(k_component, "server for " + dir.string() + " was already stopped");
    return {};
  }

  auto as = detail::tool_identity(options_.os_user);
  if (!as) return as.error();
  const identity* as_ptr = *as ? &**as : nullptr;
  auto bins = find_binaries();
  if (!bins) return bins.error();

  const auto tool_allowance = options_.timeout + k_tool_grace;
  const std::vector<std::string> args{bins->pg_ctl.string(),
                                      "-D",
                                      dir.string(),
                                      "-m",
                                      "fast",
                                      "-w",
                                      "-t",
                                      std::to_string(std::max<long long>(1, options_.timeout.count())),
                                      "stop"};
  auto run = detail::run_tool(args, as_ptr, clock::now() + tool_allowance);
  if (!run) return run.error();
  detail::append_log(dir / "pg_ctl.log", args, *run, tool_allowance, as_ptr);
  if (run->ok() || server_gone()) {
    running_ = false;
    log::info(k_component, "server for " + dir.string() + " stopped");
    return {};
  }
  return server_failed("pg_ctl stop for " + dir.string() + " " + detail::outcome_text(*run, tool_allowance) +
                       "; pg_ctl output:\n" + detail::tail_lines(run->output, k_tail_lines));
}

std::string embedded_postgres::connection_string(const std::string& database) const {
  return "host=" + quote_conninfo_value(options_.data_dir.string()) + " port=" + std::to_string(port_) +
         " user=postgres dbname=" + quote_conninfo_value(database);
}

result<void> embedded_postgres::create_database_blocking(const std::string& name) {
  if (!running_) return server_failed("create database " + name + ": the server is not running");
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdb(connection_string("postgres").c_str()),
                                                    &PQfinish);
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
    log::error(k_component,
               "create database " + name + ": cannot connect: " +
                   (conn ? detail::trim(PQerrorMessage(conn.get())) : std::string("out of memory")));
    return errc::connection_lost;
  }
  std::unique_ptr<char, decltype(&PQfreemem)> quoted(PQescapeIdentifier(conn.get(), name.data(), name.size()),
                                                     &PQfreemem);
  if (!quoted) {
    log::error(k_component, "create database: cannot quote name '" + name +
                                "': " + detail::trim(PQerrorMessage(conn.get())));
    return errc::query_failed;
  }
  const std::string sql = std::string("CREATE DATABASE ") + quoted.get();
  std::unique_ptr<PGresult, decltype(&PQclear)> res(PQexec(conn.get(), sql.c_str()), &PQclear);
  if (res && PQresultStatus(res.get()) == PGRES_COMMAND_OK) {
    log::info(k_component, "created database " + name);
    return {};
  }
  const char* state = res ? PQresultErrorField(res.get(), PG_DIAG_SQLSTATE) : nullptr;
  const std::string_view sqlstate = state != nullptr ? state : "";
  if (sqlstate == "42P04") return {};  // duplicate_database: it exists, which is what was asked for
  if (sqlstate == "23505") {
    // Two concurrent CREATE DATABASE of one name can also collide on pg_database's unique index.
    const char* params[] = {name.c_str()};
    std::unique_ptr<PGresult, decltype(&PQclear)> check(
        PQexecParams(conn.get(), "SELECT 1 FROM pg_database WHERE datname = $1", 1, nullptr, params, nullptr,
                     nullptr, 0),
        &PQclear);
    if (check && PQresultStatus(check.get()) == PGRES_TUPLES_OK && PQntuples(check.get()) == 1) return {};
  }
  const std::string message =
      detail::trim(res ? PQresultErrorMessage(res.get()) : PQerrorMessage(conn.get()));
  log::error(k_component, sql + " failed: " + message);
  if (sqlstate.empty() || PQstatus(conn.get()) != CONNECTION_OK) return errc::connection_lost;
  return errc_from_sqlstate(sqlstate);
}

}  // namespace keel::storage
