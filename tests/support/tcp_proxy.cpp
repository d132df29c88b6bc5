#include "tcp_proxy.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string_view>
#include <thread>

#include "keel/storage/conninfo.hpp"

namespace keel::test {
namespace {

// Untyped messages a client may send before its StartupMessage (the length word, then this code).
constexpr std::uint32_t k_ssl_request = 80877103;
constexpr std::uint32_t k_gssenc_request = 80877104;
constexpr std::uint32_t k_cancel_request = 80877102;
/// A side stops reading while this much waits to be written to the other: a stalled peer bounds memory.
constexpr std::size_t k_max_buffered = 4u << 20;
/// Far above any StartupMessage; anything bigger means the stream was misparsed.
constexpr std::uint32_t k_max_startup = 10'000;

std::uint32_t be32(std::string_view s, std::size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + at);
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

/// The NUL-terminated string at `at` in `body` (to the end if unterminated); moves `at` past it.
std::string_view cstring(std::string_view body, std::size_t& at) {
  if (at >= body.size()) return {};
  const auto end = body.find('\0', at);
  const auto stop = end == std::string_view::npos ? body.size() : end;
  auto out = body.substr(at, stop - at);
  at = stop + 1;
  return out;
}

/// COMMIT (or its synonym END) as the whole text of a statement.
bool is_commit_text(std::string_view sql) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ';'; };
  while (!sql.empty() && space(sql.front()))
    sql.remove_prefix(1);
  while (!sql.empty() && space(sql.back()))
    sql.remove_suffix(1);
  auto iequals = [&](std::string_view word) {
    return sql.size() == word.size() && std::equal(sql.begin(), sql.end(), word.begin(), [](char a, char b) {
             return (a >= 'a' && a <= 'z' ? a - 'a' + 'A' : a) == b;
           });
  };
  return iequals("COMMIT") || iequals("END");
}

void set_nonblocking(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/// Where the server listens, as libpq would resolve the connection string's host and port.
struct upstream {
  std::string unix_path;  // empty: TCP to host:port
  std::string host;
  std::string port;
};

/// One proxied connection. Touched only by the proxy thread.
struct connection {
  int client = -1;
  int server = -1;
  std::string from_client;  // received, not yet parsed
  std::string to_server;    // parsed and let through, not yet written
  std::string from_server;
  std::string to_client;
  bool startup = true;          // until the StartupMessage, client messages carry no type byte
  int single_byte_replies = 0;  // answers the server owes to SSLRequest/GSSENCRequest: one byte, untyped
  std::set<std::string, std::less<>> commit_statements;  // prepared statements whose text is COMMIT
  std::set<std::string, std::less<>> commit_portals;     // portals bound to one of them
  bool held = false;
  bool swallowing = false;  // a COMMIT went through armed: relay nothing more, close once it is done
  bool committed = false;   // executed a prepared COMMIT at least once
  bool dead = false;        // to be closed
  bool closed = false;
};

}  // namespace

class tcp_proxy::impl {
 public:
  explicit impl(const std::string& upstream_conninfo) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listener_ < 0) throw std::runtime_error("tcp_proxy: socket failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listener_, 128) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ::close(listener_);
      throw std::runtime_error(std::string("tcp_proxy: cannot listen on 127.0.0.1: ") + std::strerror(errno));
    }
    port_ = ntohs(addr.sin_port);
    try {
      parse_upstream(upstream_conninfo);
    } catch (...) {
      ::close(listener_);
      throw;
    }
    if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
      ::close(listener_);
      throw std::runtime_error("tcp_proxy: pipe failed");
    }
    thread_ = std::thread([this] { run(); });
  }

  ~impl() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake();
    thread_.join();
    for (auto& c : connections_)
      close_connection(c);
    ::close(listener_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }

  void drop_after_commits(int n, int let_through) {
    std::lock_guard lock(mutex_);
    armed_ += n;
    let_through_ += let_through;
  }
  int commits_dropped() const {
    std::lock_guard lock(mutex_);
    return dropped_;
  }
  int committing_connections() const {
    std::lock_guard lock(mutex_);
    return committing_;
  }
  void hold(const std::string& name) {
    std::lock_guard lock(mutex_);
    holds_.insert(name);
  }
  void release() {
    {
      std::lock_guard lock(mutex_);
      holds_.clear();
      release_pending_ = true;
    }
    wake();
  }
  int held() const {
    std::lock_guard lock(mutex_);
    return held_;
  }
  int binds(const std::string& name) const {
    std::lock_guard lock(mutex_);
    auto it = binds_.find(name);
    return it == binds_.end() ? 0 : it->second;
  }

  unsigned short port_ = 0;
  std::string conninfo_;

 private:
  void parse_upstream(const std::string& conninfo) {
    char* error = nullptr;
    PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
    if (options == nullptr) {
      std::string message = error != nullptr ? error : "out of memory";
      PQfreemem(error);
      throw std::invalid_argument("tcp_proxy: cannot parse connection string: " + message);
    }
    std::string host, hostaddr, port = "5432";
    for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
      if (o->val == nullptr) continue;
      const std::string_view key = o->keyword;
      if (key == "host") {
        host = o->val;
      } else if (key == "hostaddr") {
        hostaddr = o->val;
      } else if (key == "port") {
        if (*o->val != '\0') port = o->val;
      } else {
        conninfo_ += std::string(o->keyword) + "=" + storage::quote_conninfo_value(o->val) + " ";
      }
    }
    PQconninfoFree(options);
    conninfo_ += "host=127.0.0.1 port=" + std::to_string(port_);
    if (host.find(',') != std::string::npos || port.find(',') != std::string::npos ||
        hostaddr.find(',') != std::string::npos) {
      throw std::invalid_argument("tcp_proxy: the connection string names more than one server");
    }
    if (!hostaddr.empty()) {
      upstream_ = {{}, hostaddr, port};
    } else if (host.empty() || host.front() == '/') {
      // libpq's default is the unix socket directory compiled into it (Debian: /var/run/postgresql).
      const std::string dir = host.empty() ? "/var/run/postgresql" : host;
      upstream_ = {dir + "/.s.PGSQL." + port, {}, port};
    } else {
      upstream_ = {{}, host, port};
    }
  }

  void wake() {
    const char b = 1;
    [[maybe_unused]] auto n = ::write(wake_[1], &b, 1);  // a full pipe is a pending wake-up already
  }

  int connect_upstream() const {
    if (!upstream_.unix_path.empty()) {
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      if (upstream_.unix_path.size() >= sizeof addr.sun_path) return -1;
      std::memcpy(addr.sun_path, upstream_.unix_path.c_str(), upstream_.unix_path.size() + 1);
      const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) return -1;
      if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(fd);
        return -1;
      }
      return fd;
    }
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (::getaddrinfo(upstream_.host.c_str(), upstream_.port.c_str(), &hints, &found) != 0) return -1;
    int fd = -1;
    for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
      fd = ::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd >= 0 && ::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
        ::close(fd);
        fd = -1;
      }
    }
    ::freeaddrinfo(found);
    return fd;
  }

  void close_connection(connection& c) {
    if (c.closed) return;
    c.dead = c.closed = true;
    {
      std::lock_guard lock(mutex_);
      if (c.held) --held_;
      // Closed before the server confirmed the COMMIT: the fault is still owed.
      if (c.swallowing) ++armed_;
    }
    ::close(c.client);
    ::close(c.server);
  }

  void accept_all() {
    for (;;) {
      const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (client < 0) return;
      // A refused upstream is passed on as a connection closed before the server said anything, which is
      // what libpq sees when the server is down.
      const int server = connect_upstream();
      if (server < 0) {
        ::close(client);
        continue;
      }
      set_nonblocking(server);
      auto& c = connections_.emplace_back();
      c.client = client;
      c.server = server;
    }
  }

  /// Reads what `fd` has; false on end of stream or error.
  static bool read_into(int fd, std::string& buffer) {
    char chunk[65536];
    for (;;) {
      const auto n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n > 0) {
        buffer.append(chunk, static_cast<std::size_t>(n));
        if (buffer.size() > k_max_buffered) return true;
        continue;
      }
      if (n == 0) return false;
      return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    }
  }

  /// Writes what it can of `buffer` to `fd`; false on error.
  static bool write_from(int fd, std::string& buffer) {
    while (!buffer.empty()) {
      const auto n = ::send(fd, buffer.data(), buffer.size(), MSG_NOSIGNAL);
      if (n > 0) {
        buffer.erase(0, static_cast<std::size_t>(n));
        continue;
      }
      return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
    }
    return true;
  }

  /// Lets complete client messages through to the server, acting on the ones a fault is armed for.
  void parse_client(connection& c) {
    std::lock_guard lock(mutex_);
    std::size_t at = 0;
    const std::string_view buf = c.from_client;
    while (!c.held && !c.dead) {
      const std::string_view rest = buf.substr(at);
      if (c.startup) {
        if (rest.size() < 8) break;
        const auto len = be32(rest, 0), code = be32(rest, 4);
        if (len < 8 || len > k_max_startup) {
          c.dead = true;  // not PostgreSQL: closed below
          break;
        }
        if (rest.size() < len) break;
        if (code == k_ssl_request || code == k_gssenc_request) {
          ++c.single_byte_replies;
        } else if (code != k_cancel_request) {
          c.startup = false;
        }
        at += len;
        continue;
      }
      if (rest.size() < 5) break;
      const auto len = be32(rest, 1);
      if (len < 4) {
        c.dead = true;
        break;
      }
      const std::size_t total = 1 + std::size_t{len};
      if (rest.size() < total) break;
      const std::string_view body = rest.substr(5, total - 5);
      std::size_t pos = 0;
      bool commit = false;
      switch (rest[0]) {
        case 'P': {  // Parse: statement name, query text, parameter types
          const std::string name(cstring(body, pos));
          if (is_commit_text(cstring(body, pos))) {
            c.commit_statements.insert(name);
          } else {
            c.commit_statements.erase(name);
          }
          break;
        }
        case 'B': {  // Bind: portal name, statement name, parameters
          const std::string portal(cstring(body, pos));
          const std::string statement(cstring(body, pos));
          if (holds_.contains(statement)) {
            c.held = true;
            ++held_;
            continue;  // the loop stops at this message; release() resumes it here
          }
          ++binds_[statement];
          if (c.commit_statements.contains(statement)) {
            c.commit_portals.insert(portal);
          } else {
            c.commit_portals.erase(portal);
          }
          break;
        }
        case 'E':  // Execute: portal name, row limit
          if (c.commit_portals.contains(cstring(body, pos))) {
            commit = true;
            if (!c.committed) ++committing_;
            c.committed = true;
          }
          break;
        case 'Q':  // Query: text
          commit = is_commit_text(cstring(body, pos));
          break;
        case 'C': {  // Close: 'S'tatement or 'P'ortal, name
          if (body.empty()) break;
          pos = 1;
          const std::string name(cstring(body, pos));
          (body[0] == 'S' ? c.commit_statements : c.commit_portals).erase(name);
          break;
        }
        default:
          break;
      }
      if (commit && let_through_ > 0) {
        --let_through_;
      } else if (commit && armed_ > 0 && !c.swallowing) {
        --armed_;
        c.swallowing = true;
      }
      at += total;
    }
    c.to_server.append(buf.substr(0, at));
    c.from_client.erase(0, at);
  }

  /// Relays complete server messages to the client, unless a COMMIT is having its reply thrown away.
  void parse_server(connection& c) {
    std::size_t at = 0;
    const std::string_view buf = c.from_server;
    std::size_t relay = 0;  // bytes of buf[0, at) to relay
    while (!c.dead) {
      const std::string_view rest = buf.substr(at);
      if (c.single_byte_replies > 0) {
        if (rest.empty()) break;
        --c.single_byte_replies;
        at += 1;
        if (!c.swallowing) relay = at;
        continue;
      }
      if (rest.size() < 5) break;
      const std::size_t total = 1 + std::size_t{be32(rest, 1)};
      if (total < 5) {
        c.dead = true;
        break;
      }
      if (rest.size() < total) break;
      at += total;
      if (!c.swallowing) {
        relay = at;
        continue;
      }
      // Swallowing: CommandComplete carries the tag COMMIT when the transaction committed, ROLLBACK when it
      // had failed; ReadyForQuery without either means the pipeline was aborted before the COMMIT.
      std::size_t pos = 0;
      const std::string_view tag = rest[0] == 'C' ? cstring(rest.substr(5, total - 5), pos) : "";
      const bool committed = tag.starts_with("COMMIT");
      if (committed || tag.starts_with("ROLLBACK") || rest[0] == 'Z') {
        if (committed) {
          std::lock_guard lock(mutex_);
          ++dropped_;
          c.swallowing = false;
        }
        c.dead = true;
      }
    }
    c.to_client.append(buf.substr(0, relay));
    c.from_server.erase(0, at);
  }

  void run() {
    std::vector<pollfd> fds;
    for (;;) {
      bool releasing = false;
      {
        std::lock_guard lock(mutex_);
        if (stopping_) return;
        releasing = std::exchange(release_pending_, false);
      }
      if (releasing) {
        for (auto& c : connections_) {
          if (!c.held) continue;
          {
            std::lock_guard lock(mutex_);
            --held_;
          }
          c.held = false;
          parse_client(c);
        }
      }
      for (auto& c : connections_) {
        if (!c.dead && (!write_from(c.server, c.to_server) || !write_from(c.client, c.to_client)))
          close_connection(c);
        if (c.dead) close_connection(c);
      }
      connections_.remove_if([](const connection& c) { return c.closed; });

      fds.clear();
      fds.push_back({wake_[0], POLLIN, 0});
      fds.push_back({listener_, POLLIN, 0});
      for (auto& c : connections_) {
        const short client_events =
            static_cast<short>((c.to_server.size() + c.from_client.size() < k_max_buffered ? POLLIN : 0) |
                               (c.to_client.empty() ? 0 : POLLOUT));
        const short server_events =
            static_cast<short>((c.to_client.size() + c.from_server.size() < k_max_buffered ? POLLIN : 0) |
                               (c.to_server.empty() ? 0 : POLLOUT));
        fds.push_back({c.client, client_events, 0});
        fds.push_back({c.server, server_events, 0});
      }
      if (::poll(fds.data(), fds.size(), 200) < 0) continue;  // EINTR
      if (fds[0].revents != 0) {
        char drain[64];
        while (::read(wake_[0], drain, sizeof drain) > 0) {
        }
      }
      if (fds[1].revents != 0) accept_all();
      std::size_t i = 2;
      for (auto& c : connections_) {
        if (i + 1 >= fds.size()) break;  // accepted during this round: polled next round
        const short from_client = fds[i++].revents, from_server = fds[i++].revents;
        if (from_client & (POLLIN | POLLHUP | POLLERR)) {
          if (!read_into(c.client, c.from_client)) {
            close_connection(c);
            continue;
          }
          parse_client(c);
        }
        if (from_server & (POLLIN | POLLHUP | POLLERR)) {
          if (!read_into(c.server, c.from_server)) {
            close_connection(c);
            continue;
          }
          parse_server(c);
        }
      }
    }
  }

  upstream upstream_;
  int listener_ = -1;
  int wake_[2] = {-1, -1};
  std::list<connection> connections_;  // proxy thread only
  std::thread thread_;

  mutable std::mutex mutex_;  // guards what follows
  bool stopping_ = false;
  bool release_pending_ = false;
  int armed_ = 0;
  int let_through_ = 0;
  int dropped_ = 0;
  int committing_ = 0;
  int held_ = 0;
  std::set<std::string, std::less<>> holds_;
  std::map<std::string, int, std::less<>> binds_;
};

tcp_proxy::tcp_proxy(const std::string& upstream_conninfo)
    : impl_(std::make_unique<impl>(upstream_conninfo)) {}
tcp_proxy::~tcp_proxy() = default;

unsigned short tcp_proxy::port() const noexcept {
  return impl_->port_;
}
const std::string& tcp_proxy::conninfo() const noexcept {
  return impl_->conninfo_;
}
void tcp_proxy::drop_after_commits(int n, int let_through) {
  impl_->drop_after_commits(n, let_through);
}
int tcp_proxy::commits_dropped() const {
  return impl_->commits_dropped();
}
int tcp_proxy::committing_connections() const {
  return impl_->committing_connections();
}
void tcp_proxy::hold(const std::string& name) {
  impl_->hold(name);
}
void tcp_proxy::release() {
  impl_->release();
}
int tcp_proxy::held() const {
  return impl_->held();
}
int tcp_proxy::binds(const std::string& name) const {
  return impl_->binds(name);
}

}  // namespace keel::test
