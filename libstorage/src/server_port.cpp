#include "server_port.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>

#include "embedded_common.hpp"

namespace keel::storage::detail {

namespace fs = std::filesystem;

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

result<unsigned short> pick_free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return server_failed("socket: " + errno_text(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int e = errno;
    ::close(fd);
    return server_failed("cannot pick a free port on 127.0.0.1: " + errno_text(e));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool port_was_taken(std::string_view server_log) {
  return server_log.find("Address already in use") != std::string_view::npos ||
         server_log.find("could not create any TCP/IP sockets") != std::string_view::npos;
}

}  // namespace keel::storage::detail
