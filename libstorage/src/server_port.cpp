#include "server_port.hpp"

#include <sys/random.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>

#include "embedded_common.hpp"

namespace keel::storage::detail {
namespace {

namespace fs = std::filesystem;

// The IANA dynamic range, where no well-known service has its number: nobody mistakes the socket for one.
constexpr unsigned k_first_port = 49152;
constexpr unsigned k_port_count = 65536 - k_first_port;
constexpr int k_pick_attempts = 64;

bool exists_or_unknown(const fs::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 || errno != ENOENT;
}

std::uint32_t random_u32() {
  std::uint32_t v = 0;
  if (::getrandom(&v, sizeof v, GRND_NONBLOCK) == static_cast<ssize_t>(sizeof v)) return v;
  // No entropy yet (early boot): the port need not be unpredictable, only unlikely to repeat.
  return static_cast<std::uint32_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
         static_cast<std::uint32_t>(::getpid());
}

}  // namespace

fs::path socket_file(const fs::path& socket_dir, unsigned short port) {
  return socket_dir / (".s.PGSQL." + std::to_string(port));
}

std::optional<std::string> socket_path_problem(const fs::path& socket_dir, unsigned short port) {
  const std::string socket = socket_file(socket_dir, port).string();
  constexpr std::size_t limit = sizeof(sockaddr_un{}.sun_path) - 1;  // the kernel's limit, NUL excluded
  if (socket.size() <= limit) return std::nullopt;
  return "the server's unix socket path " + socket + " is " + std::to_string(socket.size()) +
         " bytes, over the " + std::to_string(limit) +
         "-byte limit of unix socket addresses; choose a shorter data_dir";
}

result<unsigned short> pick_port(const fs::path& socket_dir) {
  // Without a TCP listener a port can only clash with another server's socket in the same directory: the
  // socket directory is the 0700 data directory, so servers on other data directories (and the system's
  // clusters) cannot clash with ours whatever their ports, and PostgreSQL keys its SysV shared memory on the
  // data directory, not the port. What can be in the way here is a socket or lock file a server on this data
  // directory left behind: PostgreSQL would remove a stale one, but one held by a live process stops it.
  // Asking the kernel for a free TCP port, as with a TCP listener, would prove nothing about those files.
  std::uint32_t start = random_u32();
  for (int i = 0; i < k_pick_attempts; ++i) {
    const auto port =
        static_cast<unsigned short>(k_first_port + (start + static_cast<unsigned>(i)) % k_port_count);
    const fs::path socket = socket_file(socket_dir, port);
    if (exists_or_unknown(socket) || exists_or_unknown(socket.string() + ".lock")) continue;
    return port;
  }
  return server_failed("no free port for a unix socket in " + socket_dir.string() + " after " +
                       std::to_string(k_pick_attempts) + " tries; remove stale .s.PGSQL.* files there");
}

bool socket_was_taken(std::string_view server_log) {
  // PostgreSQL locks "<socket>.lock" before binding: a live holder of the lock is reported as
  //   FATAL:  lock file ".../.s.PGSQL.N.lock" already exists
  //   HINT:  Is another postmaster (PID P) using socket file ".../.s.PGSQL.N"?
  // and a socket bound without that lock as "Address already in use".
  return server_log.find("using socket file") != std::string_view::npos ||
         server_log.find("Address already in use") != std::string_view::npos;
}

}  // namespace keel::storage::detail
