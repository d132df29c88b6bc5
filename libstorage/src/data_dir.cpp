#include "data_dir.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

#include "embedded_common.hpp"

namespace keel::storage::detail {
namespace {

namespace fs = std::filesystem;

std::string mode_text(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

std::string stat_text(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return " (mode " + mode_text(st.st_mode) + ", uid " + std::to_string(st.st_uid) + ", gid " +
         std::to_string(st.st_gid) + ")";
}

/// Checks, as the server's user, that it can reach and write `dir`.
result<void> check_reachable_as(const identity& id, const fs::path& dir) {
  std::vector<std::string> paths;
  for (fs::path p = dir; !p.empty(); p = p.parent_path()) {
    paths.push_back(p.string());
    if (p == p.root_path()) break;
  }
  std::reverse(paths.begin(), paths.end());  // "/", "/tmp", ..., dir
  if (paths.size() > 200) return server_failed("data_dir " + dir.string() + " is nested too deeply");
  auto denied = first_denied_as(id, paths, R_OK | W_OK | X_OK);
  if (!denied) return denied.error();
  if (!*denied) return {};
  const std::string& bad = paths[**denied];
  if (**denied + 1 == paths.size()) {
    return server_failed("os_user '" + id.name + "' cannot read and write the data directory " + bad +
                         stat_text(bad));
  }
  return server_failed("os_user '" + id.name + "' cannot traverse " + bad + stat_text(bad) +
                       ", a parent of data directory " + dir.string() +
                       "; choose a data_dir it can reach or grant it search (x) permission");
}

template <class Int>
std::optional<Int> parse_int(std::string_view s) {
  Int v{};
  auto [ptr, err] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (err != std::errc{} || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

std::optional<std::string> unsafe_path_reason(const std::string& p) {
  // pg_ctl puts the data directory and log path inside double quotes on a /bin/sh command line, and the
  // server splits its socket directory list at commas.
  for (char c : p) {
    if (c == '"' || c == '\\' || c == '$' || c == '`' || c == ',') {
      return std::string("contains '") + c +
             "', which pg_ctl's shell command line or the socket directory list would misread";
    }
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return "contains a control character";
  }
  return std::nullopt;
}

result<void> prepare_data_dir(const fs::path& dir, const identity* as) {
  // The missing parents, which create_directories makes with the umask's permissions.
  std::vector<fs::path> created_parents;
  for (fs::path p = dir.parent_path(); !p.empty() && p != p.root_path(); p = p.parent_path()) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) == 0 || errno != ENOENT) break;
    created_parents.push_back(p);
  }
  std::error_code ec;
  fs::create_directories(dir.parent_path(), ec);
  if (ec) return server_failed("cannot create data directory " + dir.string() + ": " + ec.message());
  // Private from the first moment, not from initdb's chmod on.
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return server_failed("cannot create data directory " + dir.string() + ": " + errno_text(errno));
  }
  if (!fs::is_directory(dir, ec))
    return server_failed("data directory " + dir.string() + " is not a directory");

  if (as != nullptr) {
    // Parents we created as root follow the umask; the server's user must still be able to pass through them.
    for (const auto& p : created_parents) {
      fs::permissions(p, fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec,
                      fs::perm_options::add, ec);
    }
    if (::chown(dir.c_str(), as->uid, as->gid) != 0) {
      return server_failed("cannot chown data directory " + dir.string() + " to " + as->name + ": " +
                           errno_text(errno));
    }
  }
  // The socket lives here and local connections are trusted, so this mode is the server's access control.
  // PostgreSQL itself would also accept 0750 (a cluster made with initdb -g): that would admit the group.
  if (::chmod(dir.c_str(), 0700) != 0) {
    return server_failed("cannot make data directory " + dir.string() +
                         " private (mode 0700): " + errno_text(errno) + stat_text(dir.string()));
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return server_failed("cannot inspect data directory " + dir.string() + ": " + errno_text(errno));
  }
  const uid_t server_uid = as != nullptr ? as->uid : ::geteuid();
  if (st.st_uid != server_uid || (st.st_mode & 0777) != 0700) {
    return server_failed("data directory " + dir.string() + stat_text(dir.string()) +
                         " must be mode 0700 and owned by the server's user (uid " +
                         std::to_string(server_uid) + ")");
  }
  if (as == nullptr) return {};
  return check_reachable_as(*as, dir);
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
  if (lines.size() > 5) pf.listen_address = lines[5];
  if (lines.size() > 7) pf.status = lines[7];
  return pf;
}

std::optional<unsigned short> recorded_port(const fs::path& dir) {
  // One line: the server's argv, each argument in double quotes: ... "-p" "51234" ...
  std::ifstream in(dir / "postmaster.opts");
  if (!in) return std::nullopt;
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  constexpr std::string_view flag = "\"-p\" \"";
  auto at = text.find(flag);
  if (at == std::string::npos) return std::nullopt;
  auto begin = at + flag.size();
  auto end = text.find('"', begin);
  if (end == std::string::npos) return std::nullopt;
  auto port = parse_int<unsigned short>(std::string_view(text).substr(begin, end - begin));
  if (!port || *port == 0) return std::nullopt;
  return port;
}

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

}  // namespace keel::storage::detail
