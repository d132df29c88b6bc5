#include "keel/storage/embedded_postgres.hpp"

#include "keel/storage/conninfo.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "keel/common/log.hpp"
#include "keel/storage/error.hpp"

namespace keel::storage {
namespace {

namespace fs = std::filesystem;
using clock = std::chrono::steady_clock;

constexpr std::string_view k_component = "embedded_postgres";
/// How many trailing lines of a tool's output or of server.log go into an error message.
constexpr std::size_t k_tail_lines = 20;
/// Output kept per tool run; older bytes are dropped (the log file inside the data directory keeps it all).
constexpr std::size_t k_max_output = 1 << 20;
/// pg_ctl enforces options.timeout itself; this margin only catches a hung tool.
constexpr std::chrono::seconds k_tool_grace{10};
/// The first start attempt plus three retries when a picked port was taken in the meantime.
constexpr int k_port_attempts = 4;
constexpr auto k_poll_interval = std::chrono::milliseconds(20);

error_code fail(const std::string& message) {
  log::error(k_component, message);
  return errc::server_failed;
}

std::string errno_text(int e) {
  return std::error_code(e, std::generic_category()).message();
}

// ---------------------------------------------------------------------------------------------------------------
// Who the tools run as.

/// The unprivileged account the server runs as when we are root (PostgreSQL refuses to run as root).
struct identity {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
};

result<identity> lookup_identity(const std::string& name) {
  long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buf(hint > 0 ? static_cast<std::size_t>(hint) : 16384);
  passwd pw{};
  passwd* found = nullptr;
  int rc = 0;
  while ((rc = ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found)) == ERANGE) {
    buf.resize(buf.size() * 2);
  }
  if (rc != 0) return fail("cannot look up os_user '" + name + "': " + errno_text(rc));
  if (found == nullptr) {
    return fail(
        "running as root, but os_user '" + name +
        "' does not exist; create that unprivileged account or set embedded_postgres_options::os_user");
  }
  if (pw.pw_uid == 0) {
    return fail("os_user '" + name +
                "' is root; PostgreSQL refuses to run as root, choose an unprivileged account");
  }
  identity id{name, pw.pw_uid, pw.pw_gid, {}};
  // The supplementary groups are resolved here, in the parent: initgroups() reads /etc/group and allocates,
  // which is not safe between fork() and exec() in a multi-threaded process. The child only calls
  // setgroups().
  int n = 16;
  for (;;) {
    id.groups.resize(static_cast<std::size_t>(n));
    int want = n;
    if (::getgrouplist(name.c_str(), pw.pw_gid, id.groups.data(), &want) >= 0) {
      id.groups.resize(static_cast<std::size_t>(want));
      break;
    }
    if (want <= n) want = n * 2;  // defensive: some implementations do not report the needed size
    n = want;
  }
  return id;
}

/// Runs in a forked child of a possibly multi-threaded process, so it makes async-signal-safe calls only.
bool drop_privileges(const identity& id) noexcept {
  return ::setgroups(id.groups.size(), id.groups.data()) == 0 && ::setgid(id.gid) == 0 &&
         ::setuid(id.uid) == 0;
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes: fork + execv, no shell, output captured through a pipe.

std::optional<int> wait_child(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return std::nullopt;
  }
  return status;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = ::sigabbrev_np(WTERMSIG(status));
    return "was killed by signal " + std::to_string(WTERMSIG(status)) +
           (name != nullptr ? std::string(" (SIG") + name + ")" : "");
  }
  return "ended with wait status " + std::to_string(status);
}

struct tool_run {
  bool timed_out = false;
  int status = 0;  // from waitpid
  std::string output;

  [[nodiscard]] bool ok() const { return !timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0; }
};

std::string join_command(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& a : args) {
    if (!out.empty()) out.push_back(' ');
    out += a;
  }
  return out;
}

[[noreturn]] void exec_child(char* const* argv, int out_fd, int max_fd, const identity* as) noexcept {
  // Signal mask and ignored dispositions survive exec: give the tool (and the server it starts) a clean
  // slate.
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int s = 1; s < NSIG; ++s)
    ::signal(s, SIG_DFL);
  // Move the pipe above the standard descriptors first, in case the parent ran with one of them closed.
  int out = ::fcntl(out_fd, F_DUPFD, 3);
  int in = ::open("/dev/null", O_RDONLY);
  if (out < 0 || in < 0) ::_exit(126);
  if ((in != 0 && ::dup2(in, 0) < 0) || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0) ::_exit(126);
  // Nothing else leaks into the tool or, through pg_ctl, into the long-lived postmaster.
  if (::close_range(3, ~0U, 0) != 0) {
    for (int fd = 3; fd < max_fd; ++fd)
      ::close(fd);
  }
  if (as != nullptr && !drop_privileges(*as)) {
    static constexpr char msg[] = "embedded_postgres: cannot switch to the server's os_user\n";
    [[maybe_unused]] auto n = ::write(2, msg, sizeof msg - 1);
    ::_exit(126);
  }
  // The tools resolve nothing relative to the working directory, which the server's user may not be able to
  // enter.
  [[maybe_unused]] int ignored = ::chdir("/");
  ::execv(argv[0], argv);
  static constexpr char msg[] = "embedded_postgres: execv failed\n";
  [[maybe_unused]] auto n = ::write(2, msg, sizeof msg - 1);
  ::_exit(127);
}

/// Runs args[0] (an absolute path) with args, as `as` when given; returns its status and combined output.
result<tool_run> run_tool(const std::vector<std::string>& args, const identity* as,
                          clock::time_point deadline) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  long open_max = ::sysconf(_SC_OPEN_MAX);
  int max_fd = open_max > 0 && open_max < 65536 ? static_cast<int>(open_max) : 65536;

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail("pipe for " + args[0] + ": " + errno_text(errno));
  log::debug(k_component, "running " + join_command(args));
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return fail("fork for " + args[0] + ": " + errno_text(e));
  }
  if (pid == 0) exec_child(argv.data(), fds[1], max_fd, as);
  ::close(fds[1]);

  tool_run run;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now()).count();
    if (left <= 0) {
      run.timed_out = true;
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (r < 0 && errno != EINTR) break;
    if (r <= 0) continue;
    ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the tool and everything that inherited its output are done
    run.output.append(buf, static_cast<std::size_t>(n));
    if (run.output.size() > k_max_output) run.output.erase(0, run.output.size() - k_max_output);
  }
  ::close(fds[0]);
  if (run.timed_out) ::kill(pid, SIGKILL);
  auto status = wait_child(pid);
  if (!status) return fail("waitpid for " + args[0] + ": " + errno_text(errno));
  run.status = *status;
  return run;
}

std::string tail_lines(std::string_view text, std::size_t lines) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
    text.remove_suffix(1);
  std::size_t pos = text.size();
  for (std::size_t i = 0; i < lines; ++i) {
    auto nl = pos == 0 ? std::string_view::npos : text.rfind('\n', pos - 1);
    if (nl == std::string_view::npos) return std::string(text);
    pos = nl;
  }
  return std::string(text.substr(pos + 1));
}

std::string outcome_text(const tool_run& run, clock::duration allowed) {
  if (run.ok()) return "exited with status 0";
  if (run.timed_out) {
    return "did not finish within " +
           std::to_string(std::chrono::duration_cast<std::chrono::seconds>(allowed).count()) +
           "s and was killed";
  }
  return describe_status(run.status);
}

/// Appends a tool's output to a log file in the data directory, owned by the server's user when we are root.
void append_log(const fs::path& file, const std::vector<std::string>& args, const tool_run& run,
                clock::duration allowed, const identity* as) {
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    log::warn(k_component, "cannot write " + file.string() + ": " + errno_text(errno));
    return;
  }
  if (as != nullptr && ::fchown(fd, as->uid, as->gid) != 0) {
    log::warn(k_component, "cannot chown " + file.string() + ": " + errno_text(errno));
  }
  std::string text = "$ " + join_command(args) + "\n" + run.output;
  if (!text.empty() && text.back() != '\n') text.push_back('\n');
  text += "# " + outcome_text(run, allowed) + "\n";
  std::string_view rest = text;
  while (!rest.empty()) {
    ssize_t n = ::write(fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
  ::close(fd);
}

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
  return fail(
      "cannot find initdb and pg_ctl on PATH or in /usr/lib/postgresql/*/bin; install the PostgreSQL server");
}

// ---------------------------------------------------------------------------------------------------------------
// The data directory.

/// pg_ctl puts the data directory and log path inside double quotes on a /bin/sh command line, and the server
/// splits its socket directory list at commas: refuse paths either would mangle.
std::optional<std::string> unsafe_path_reason(const std::string& p) {
  for (char c : p) {
    if (c == '"' || c == '\\' || c == '$' || c == '`' || c == ',') {
      return std::string("contains '") + c +
             "', which pg_ctl's shell command line or the socket directory list would misread";
    }
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return "contains a control character";
  }
  return std::nullopt;
}

std::optional<std::string> socket_path_problem(const fs::path& dir, unsigned short port) {
  const std::string socket = dir.string() + "/.s.PGSQL." + std::to_string(port);
  constexpr std::size_t limit = sizeof(sockaddr_un{}.sun_path) - 1;  // the kernel's limit, NUL excluded
  if (socket.size() <= limit) return std::nullopt;
  return "the server's unix socket path " + socket + " is " + std::to_string(socket.size()) +
         " bytes, over the " + std::to_string(limit) +
         "-byte limit of unix socket addresses; choose a shorter data_dir";
}

std::string mode_text(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

/// Checks, as the server's user (in a forked child, so ACLs and groups count), that it can reach and write
/// `dir`.
result<void> check_reachable_as(const identity& id, const fs::path& dir) {
  std::vector<std::string> paths;
  for (fs::path p = dir; !p.empty(); p = p.parent_path()) {
    paths.push_back(p.string());
    if (p == p.root_path()) break;
  }
  std::reverse(paths.begin(), paths.end());  // "/", "/tmp", ..., dir
  if (paths.size() > 200) return fail("data_dir " + dir.string() + " is nested too deeply");
  std::vector<const char*> cpaths;
  for (const auto& p : paths)
    cpaths.push_back(p.c_str());

  pid_t pid = ::fork();
  if (pid < 0) return fail("fork: " + errno_text(errno));
  if (pid == 0) {
    if (!drop_privileges(id)) ::_exit(255);
    for (std::size_t i = 0; i < cpaths.size(); ++i) {
      int mode = i + 1 == cpaths.size() ? (R_OK | W_OK | X_OK) : X_OK;
      if (::access(cpaths[i], mode) != 0) ::_exit(static_cast<int>(i + 1));
    }
    ::_exit(0);
  }
  auto status = wait_child(pid);
  if (!status) return fail("waitpid: " + errno_text(errno));
  if (!WIFEXITED(*status)) return fail("permission check as " + id.name + " " + describe_status(*status));
  int code = WEXITSTATUS(*status);
  if (code == 0) return {};
  if (code == 255) return fail("cannot switch to os_user '" + id.name + "' to check the data directory");
  const std::string& bad = paths[static_cast<std::size_t>(code - 1)];
  struct stat st {};
  std::string detail;
  if (::stat(bad.c_str(), &st) == 0) {
    detail = " (mode " + mode_text(st.st_mode) + ", uid " + std::to_string(st.st_uid) + ", gid " +
             std::to_string(st.st_gid) + ")";
  }
  if (static_cast<std::size_t>(code) == paths.size()) {
    return fail("os_user '" + id.name + "' cannot read and write the data directory " + bad + detail);
  }
  return fail("os_user '" + id.name + "' cannot traverse " + bad + detail + ", a parent of data directory " +
              dir.string() + "; choose a data_dir it can reach or grant it search (x) permission");
}

/// Creates the data directory (and parents) when missing; as root, hands it to the server's user.
result<void> prepare_data_dir(const fs::path& dir, const identity* as) {
  // The missing parents, which create_directories makes with the umask's permissions.
  std::vector<fs::path> created_parents;
  for (fs::path p = dir.parent_path(); !p.empty() && p != p.root_path(); p = p.parent_path()) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) == 0 || errno != ENOENT) break;
    created_parents.push_back(p);
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return fail("cannot create data directory " + dir.string() + ": " + ec.message());
  if (!fs::is_directory(dir, ec)) return fail("data directory " + dir.string() + " is not a directory");
  if (as == nullptr) return {};

  // Parents we created as root follow the umask; the server's user must still be able to pass through them.
  for (const auto& p : created_parents) {
    fs::permissions(p, fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec,
                    fs::perm_options::add, ec);
  }
  if (::chown(dir.c_str(), as->uid, as->gid) != 0) {
    return fail("cannot chown data directory " + dir.string() + " to " + as->name + ": " + errno_text(errno));
  }
  return check_reachable_as(*as, dir);
}

// ---------------------------------------------------------------------------------------------------------------
// A server that is already running on the data directory.

/// The lines of postmaster.pid we use (src/include/miscadmin.h: LOCK_FILE_LINE_*).
struct pid_file {
  pid_t pid = 0;
  std::string data_dir;
  unsigned short port = 0;
  std::string status;
};

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r' || s.back() == '\n'))
    s.pop_back();
  std::size_t start = s.find_first_not_of(' ');
  return start == std::string::npos ? std::string{} : s.substr(start);
}

template <class Int>
std::optional<Int> parse_int(const std::string& s) {
  Int v{};
  auto [ptr, err] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (err != std::errc{} || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<pid_file> read_pid_file(const fs::path& dir) {
  std::ifstream in(dir / "postmaster.pid");
  if (!in) return std::nullopt;
  std::vector<std::string> lines;
  for (std::string line; lines.size() < 8 && std::getline(in, line);)
    lines.push_back(trim(line));
  if (lines.empty()) return std::nullopt;
  auto pid = parse_int<pid_t>(lines[0]);
  if (!pid || *pid <= 0) return std::nullopt;
  pid_file pf;
  pf.pid = *pid;
  if (lines.size() > 1) pf.data_dir = lines[1];
  if (lines.size() > 3) pf.port = parse_int<unsigned short>(lines[3]).value_or(0);
  if (lines.size() > 7) pf.status = lines[7];
  return pf;
}

/// True when `pid` is a live (not zombie) process that looks like a postgres server.
bool alive_postgres(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  // A postmaster killed without a parent to reap it lingers as a zombie; and a pid can be reused by anything.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!stat || !std::getline(stat, text)) return true;  // no procfs: trust kill()
  auto open = text.find('(');
  auto close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close + 2 >= text.size()) return true;
  std::string comm = text.substr(open + 1, close - open - 1);
  char state = text[close + 2];
  return state != 'Z' && state != 'X' && comm == "postgres";
}

bool same_directory(const std::string& a, const fs::path& b) {
  if (fs::path(a).lexically_normal() == b) return true;
  std::error_code ec;
  return fs::equivalent(a, b, ec) && !ec;
}

enum class wait_outcome { ready, died, timed_out };

/// Waits until the server answers connections, its process dies, or the deadline passes.
wait_outcome wait_until_ready(pid_t pid, const std::string& conninfo, clock::time_point deadline) {
  const std::string ping = conninfo + " connect_timeout=2";
  for (;;) {
    if (PQping(ping.c_str()) == PQPING_OK) return wait_outcome::ready;
    if (!alive_postgres(pid)) return wait_outcome::died;
    if (clock::now() >= deadline) return wait_outcome::timed_out;
    std::this_thread::sleep_for(k_poll_interval);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Starting.

result<unsigned short> pick_free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail("socket: " + errno_text(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int e = errno;
    ::close(fd);
    return fail("cannot pick a free port on 127.0.0.1: " + errno_text(e));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
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
    if (out.size() > k_max_output) out.erase(0, out.size() - k_max_output);
  }
  return out;
}

bool port_was_taken(std::string_view server_log) {
  return server_log.find("Address already in use") != std::string_view::npos ||
         server_log.find("could not create any TCP/IP sockets") != std::string_view::npos;
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
    return fail("data_dir '" + dir.string() + "' cannot be made absolute against the working directory");
  }
  if (auto why = unsafe_path_reason(dir.string())) return fail("data_dir " + dir.string() + " " + *why);

  std::optional<identity> as;
  if (::geteuid() == 0) {
    auto id = lookup_identity(options_.os_user);
    if (!id) return id.error();
    as = std::move(*id);
  }
  const identity* as_ptr = as ? &*as : nullptr;
  auto bins = find_binaries();
  if (!bins) return bins.error();
  if (auto r = prepare_data_dir(dir, as_ptr); !r) return r;

  // A server still running on this directory (its owner was killed) is adopted rather than started twice.
  if (auto pf = read_pid_file(dir); pf && alive_postgres(pf->pid)) {
    if (!same_directory(pf->data_dir, dir)) {
      log::warn(k_component, "postmaster.pid in " + dir.string() + " names process " +
                                 std::to_string(pf->pid) + " serving " + pf->data_dir +
                                 "; leaving it to pg_ctl");
    } else if (pf->status == "stopping") {
      log::info(k_component,
                "server pid " + std::to_string(pf->pid) + " is shutting down; waiting to restart it");
      while (alive_postgres(pf->pid) && clock::now() < deadline)
        std::this_thread::sleep_for(k_poll_interval);
    } else if (pf->port == 0) {
      log::warn(k_component,
                "postmaster.pid of running server " + std::to_string(pf->pid) + " holds no port yet");
    } else {
      port_ = pf->port;
      if (options_.port != 0 && options_.port != port_) {
        log::warn(k_component, "adopted server listens on port " + std::to_string(port_) +
                                   ", not the configured " + std::to_string(options_.port));
      }
      switch (wait_until_ready(pf->pid, connection_string("postgres"), deadline)) {
        case wait_outcome::ready:
          running_ = true;
          log::info(k_component, "adopted running server pid " + std::to_string(pf->pid) + " on port " +
                                     std::to_string(port_) + " for " + dir.string());
          return {};
        case wait_outcome::died:
          log::warn(k_component,
                    "server pid " + std::to_string(pf->pid) + " exited while being adopted; starting anew");
          break;
        case wait_outcome::timed_out:
          return fail("server pid " + std::to_string(pf->pid) + " running on " + dir.string() +
                      " did not accept connections within " + std::to_string(options_.timeout.count()) + "s");
      }
    }
  }

  // A restart keeps the port it had, so connection strings handed out before stay valid.
  unsigned short port = options_.port != 0 ? options_.port : port_;
  if (port == 0) {
    auto picked = pick_free_port();
    if (!picked) return picked.error();
    port = *picked;
  }
  if (auto why = socket_path_problem(dir, port)) return fail(*why);

  std::error_code ec;
  bool has_cluster = fs::exists(dir / "PG_VERSION", ec);
  if (ec) return fail("cannot inspect data directory " + dir.string() + ": " + ec.message());
  if (!has_cluster) {
    const std::vector<std::string> args{
        bins->initdb.string(), "-D",       dir.string(), "-U", "postgres", "-A", "trust", "-E", "UTF8",
        "--locale=C.UTF-8",    "--no-sync"};
    log::info(k_component, "initializing a new cluster in " + dir.string());
    auto run = run_tool(args, as_ptr, clock::now() + tool_allowance);
    if (!run) return run.error();
    if (!run->ok()) {
      // initdb insists on an empty directory, so on failure its output stays out of it (the tail is logged).
      return fail(join_command(args) + " " + outcome_text(*run, tool_allowance) + "; last output:\n" +
                  tail_lines(run->output, k_tail_lines));
    }
    append_log(dir / "initdb.log", args, *run, tool_allowance, as_ptr);
  }

  const fs::path server_log = dir / "server.log";
  const auto timeout_secs = std::to_string(std::max<long long>(1, options_.timeout.count()));
  for (int attempt = 1;; ++attempt) {
    std::string opts =
        "-k " + shell_quote(dir.string()) + " -p " + std::to_string(port) + " -c listen_addresses=127.0.0.1";
    if (!options_.durable) opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off";
    for (const auto& [name, value] : options_.settings)
      opts += " -c " + shell_quote(name + "=" + value);
    const std::vector<std::string> args{
        bins->pg_ctl.string(), "-D", dir.string(), "-l",   server_log.string(), "-w", "-t",
        timeout_secs,          "-o", opts,         "start"};
    const auto log_offset = file_size_or_zero(server_log);
    auto run = run_tool(args, as_ptr, clock::now() + tool_allowance);
    if (!run) return run.error();
    append_log(dir / "pg_ctl.log", args, *run, tool_allowance, as_ptr);
    if (run->ok()) {
      port_ = port;
      running_ = true;
      log::info(
          k_component,
          "server started on port " + std::to_string(port_) + " for " + dir.string() + " in " +
              std::to_string(
                  std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - started).count()) +
              " ms");
      return {};
    }
    const std::string new_log = read_from(server_log, log_offset);
    if (options_.port == 0 && attempt < k_port_attempts && port_was_taken(new_log)) {
      auto picked = pick_free_port();
      if (!picked) return picked.error();
      log::warn(k_component, "port " + std::to_string(port) +
                                 " was taken before the server bound it; retrying on " +
                                 std::to_string(*picked));
      port = *picked;
      if (auto why = socket_path_problem(dir, port)) return fail(*why);
      continue;
    }
    return fail("pg_ctl start for " + dir.string() + " " + outcome_text(*run, tool_allowance) +
                "; pg_ctl output:\n" + tail_lines(run->output, k_tail_lines) + "\nserver.log:\n" +
                tail_lines(new_log, k_tail_lines));
  }
}

result<void> embedded_postgres::stop_blocking() {
  if (!running_) return {};
  const fs::path& dir = options_.data_dir;
  // Somebody else (another owner of an adopted server, an operator) may have stopped it already.
  auto server_gone = [&] {
    auto pf = read_pid_file(dir);
    return !pf || !alive_postgres(pf->pid);
  };
  if (server_gone()) {
    running_ = false;
    log::info(k_component, "server for " + dir.string() + " was already stopped");
    return {};
  }

  std::optional<identity> as;
  if (::geteuid() == 0) {
    auto id = lookup_identity(options_.os_user);
    if (!id) return id.error();
    as = std::move(*id);
  }
  const identity* as_ptr = as ? &*as : nullptr;
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
  auto run = run_tool(args, as_ptr, std::chrono::steady_clock::now() + tool_allowance);
  if (!run) return run.error();
  append_log(dir / "pg_ctl.log", args, *run, tool_allowance, as_ptr);
  if (run->ok() || server_gone()) {
    running_ = false;
    log::info(k_component, "server for " + dir.string() + " stopped");
    return {};
  }
  return fail("pg_ctl stop for " + dir.string() + " " + outcome_text(*run, tool_allowance) +
              "; pg_ctl output:\n" + tail_lines(run->output, k_tail_lines));
}

std::string embedded_postgres::connection_string(const std::string& database) const {
  return "host=" + quote_conninfo_value(options_.data_dir.string()) + " port=" + std::to_string(port_) +
         " user=postgres dbname=" + quote_conninfo_value(database);
}

result<void> embedded_postgres::create_database_blocking(const std::string& name) {
  if (!running_) return fail("create database " + name + ": the server is not running");
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdb(connection_string("postgres").c_str()),
                                                    &PQfinish);
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
    log::error(k_component, "create database " + name + ": cannot connect: " +
                                (conn ? trim(PQerrorMessage(conn.get())) : std::string("out of memory")));
    return errc::connection_lost;
  }
  std::unique_ptr<char, decltype(&PQfreemem)> quoted(PQescapeIdentifier(conn.get(), name.data(), name.size()),
                                                     &PQfreemem);
  if (!quoted) {
    log::error(k_component,
               "create database: cannot quote name '" + name + "': " + trim(PQerrorMessage(conn.get())));
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
  const std::string message = trim(res ? PQresultErrorMessage(res.get()) : PQerrorMessage(conn.get()));
  log::error(k_component, sql + " failed: " + message);
  if (sqlstate.empty() || PQstatus(conn.get()) != CONNECTION_OK) return errc::connection_lost;
  return errc_from_sqlstate(sqlstate);
}

}  // namespace keel::storage
