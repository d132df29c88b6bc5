#include "os_process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "embedded_common.hpp"

namespace keel::storage::detail {
namespace {

/// Output kept per tool run; older bytes are dropped (the log file inside the data directory keeps it all).
constexpr std::size_t k_max_output = 1 << 20;

/// Runs in a forked child of a possibly multi-threaded process, so it makes async-signal-safe calls only.
bool drop_privileges(const identity& id) noexcept {
  return ::setgroups(id.groups.size(), id.groups.data()) == 0 && ::setgid(id.gid) == 0 &&
         ::setuid(id.uid) == 0;
}

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

}  // namespace

result<identity> lookup_identity(const std::string& name) {
  long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buf(hint > 0 ? static_cast<std::size_t>(hint) : 16384);
  passwd pw{};
  passwd* found = nullptr;
  int rc = 0;
  while ((rc = ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found)) == ERANGE) {
    buf.resize(buf.size() * 2);
  }
  if (rc != 0) return server_failed("cannot look up os_user '" + name + "': " + errno_text(rc));
  if (found == nullptr) {
    return server_failed(
        "running as root, but os_user '" + name +
        "' does not exist; create that unprivileged account or set embedded_postgres_options::os_user");
  }
  if (pw.pw_uid == 0) {
    return server_failed("os_user '" + name +
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

result<std::optional<identity>> tool_identity(const std::string& os_user) {
  if (::geteuid() != 0) return std::optional<identity>{};
  auto id = lookup_identity(os_user);
  if (!id) return id.error();
  return std::optional<identity>(std::move(*id));
}

bool tool_run::ok() const {
  return !timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::string join_command(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& a : args) {
    if (!out.empty()) out.push_back(' ');
    out += a;
  }
  return out;
}

result<tool_run> run_tool(const std::vector<std::string>& args, const identity* as,
                          tool_clock::time_point deadline) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  long open_max = ::sysconf(_SC_OPEN_MAX);
  int max_fd = open_max > 0 && open_max < 65536 ? static_cast<int>(open_max) : 65536;

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return server_failed("pipe for " + args[0] + ": " + errno_text(errno));
  log::debug(k_embedded_component, "running " + join_command(args));
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return server_failed("fork for " + args[0] + ": " + errno_text(e));
  }
  if (pid == 0) exec_child(argv.data(), fds[1], max_fd, as);
  ::close(fds[1]);

  tool_run run;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - tool_clock::now()).count();
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
  if (!status) return server_failed("waitpid for " + args[0] + ": " + errno_text(errno));
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

std::string outcome_text(const tool_run& run, tool_clock::duration allowed) {
  if (run.ok()) return "exited with status 0";
  if (run.timed_out) {
    return "did not finish within " +
           std::to_string(std::chrono::duration_cast<std::chrono::seconds>(allowed).count()) +
           "s and was killed";
  }
  return describe_status(run.status);
}

void append_log(const std::filesystem::path& file, const std::vector<std::string>& args, const tool_run& run,
                tool_clock::duration allowed, const identity* as) {
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    log::warn(k_embedded_component, "cannot write " + file.string() + ": " + errno_text(errno));
    return;
  }
  if (as != nullptr && ::fchown(fd, as->uid, as->gid) != 0) {
    log::warn(k_embedded_component, "cannot chown " + file.string() + ": " + errno_text(errno));
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

result<std::optional<std::size_t>> first_denied_as(const identity& id, const std::vector<std::string>& paths,
                                                   int last_mode) {
  // The child exits with the failing path's index + 1, so the index must fit an exit status (255 is taken).
  if (paths.size() > 200) return server_failed("too many paths to check as " + id.name);
  std::vector<const char*> cpaths;
  for (const auto& p : paths)
    cpaths.push_back(p.c_str());

  pid_t pid = ::fork();
  if (pid < 0) return server_failed("fork: " + errno_text(errno));
  if (pid == 0) {
    if (!drop_privileges(id)) ::_exit(255);
    for (std::size_t i = 0; i < cpaths.size(); ++i) {
      int mode = i + 1 == cpaths.size() ? last_mode : X_OK;
      if (::access(cpaths[i], mode) != 0) ::_exit(static_cast<int>(i + 1));
    }
    ::_exit(0);
  }
  auto status = wait_child(pid);
  if (!status) return server_failed("waitpid: " + errno_text(errno));
  if (!WIFEXITED(*status))
    return server_failed("permission check as " + id.name + " " + describe_status(*status));
  int code = WEXITSTATUS(*status);
  if (code == 255) return server_failed("cannot switch to os_user '" + id.name + "' to check permissions");
  if (code == 0) return std::optional<std::size_t>{};
  return std::optional<std::size_t>(static_cast<std::size_t>(code - 1));
}

}  // namespace keel::storage::detail
