// A fault-injecting proxy between libpq clients and the test cluster: it reads the PostgreSQL frontend
// protocol so that a test can lose a COMMIT's acknowledgement or hold a statement on its way to the server.
#pragma once

#include <memory>
#include <string>

namespace keel::test {

/// Listens on 127.0.0.1 (an ephemeral port) and relays each connection to the server named by a libpq
/// connection string: to its unix socket (`<host dir>/.s.PGSQL.<port>`) when the host is a directory, else
/// over TCP. One thread relays every connection with poll(). Faults are armed from any thread; every member
/// is thread-safe. The destructor closes every connection and joins the thread.
class tcp_proxy {
 public:
  /// Starts listening. Throws std::invalid_argument when `upstream_conninfo` does not parse or names more
  /// than one host, std::runtime_error when the listener or its thread cannot be set up.
  explicit tcp_proxy(const std::string& upstream_conninfo);
  ~tcp_proxy();
  tcp_proxy(const tcp_proxy&) = delete;
  tcp_proxy& operator=(const tcp_proxy&) = delete;

  /// The port the proxy listens on.
  [[nodiscard]] unsigned short port() const noexcept;
  /// The upstream connection string with host and port pointing at the proxy.
  [[nodiscard]] const std::string& conninfo() const noexcept;

  /// Arms the proxy to lose the acknowledgement of `n` COMMITs (a COMMIT query, or an Execute of a prepared
  /// statement whose text is COMMIT), after letting the next `let_through` pass: each is forwarded, nothing
  /// the server sends on that connection is relayed any more, and once the server reports the COMMIT done,
  /// both sides of the connection are closed. A COMMIT the server answers with ROLLBACK (an aborted
  /// transaction) also loses its connection, but does not count and leaves the proxy armed.
  void drop_after_commits(int n, int let_through = 0);
  /// COMMITs the server confirmed whose acknowledgement the proxy threw away.
  [[nodiscard]] int commits_dropped() const;
  /// Distinct connections that executed a prepared COMMIT statement (Bind/Execute) through the proxy.
  [[nodiscard]] int committing_connections() const;

  /// Holds every connection that binds the prepared statement `name`: the Bind and whatever follows it stay
  /// in the proxy until release(), so the server never sees them and the client waits for a reply.
  void hold(const std::string& name);
  /// Ends every hold and forwards what was held.
  void release();
  /// Connections waiting at a hold.
  [[nodiscard]] int held() const;
  /// Binds of prepared statement `name` forwarded to the server so far (held ones count once released).
  [[nodiscard]] int binds(const std::string& name) const;

 private:
  class impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace keel::test
