// keeld as a child process of a test, serving HTTP on loopback with its embedded PostgreSQL (for e2e tests
// that drive the real binary: keeld_test, cli_test).
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/test/unit_test.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "http_client.hpp"

namespace keel::test {

/// A port free now (bound, read, released).
inline unsigned short free_port() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

/// keeld (the binary at `keeld_path`) serving HTTP on 127.0.0.1:`port` with its data in `dir`/keel-data and
/// its output appended to `dir`/keeld.log, with `extra` options after its own. The constructor returns once
/// /healthz answers (a test failure after 60 s). `dir` must be traversable by the postgres user
/// (keel::test::temp_dir is).
class keeld_process {
 public:
  keeld_process(const std::string& keeld_path, const std::string& dir, unsigned short port,
                const std::vector<std::string>& extra = {}) {
    const std::string log = dir + "/keeld.log";
    std::fflush(nullptr);  // or the child writes what the test buffered so far a second time
    pid_ = ::fork();
    BOOST_REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      // A test process that crashes still stops keeld (and so its embedded PostgreSQL).
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      const std::string listen = "127.0.0.1:" + std::to_string(port);
      const std::string data = dir + "/keel-data";
      std::FILE* out = std::freopen(log.c_str(), "a", stdout);
      (void)out;
      ::dup2(::fileno(stdout), 2);
      std::vector<std::string> args{"keeld", "--listen", listen, "--data-dir", data, "--demo-runs", "0"};
      args.insert(args.end(), extra.begin(), extra.end());
      std::vector<char*> argv;
      for (auto& a : args)
        argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(keeld_path.c_str(), argv.data());
      ::_exit(127);
    }
    // Ready once it answers.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (;;) {
      try {
        client c(port);
        if (c.send(boost::beast::http::verb::get, "/healthz").status == 200) break;
      } catch (const std::exception&) {
      }
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) != 0) {
        pid_ = -1;
        BOOST_FAIL("keeld exited early; see " << log);
      }
      if (std::chrono::steady_clock::now() > until) {
        stop(SIGKILL);  // not left running (nor its embedded server's owner) when the test gives up
        BOOST_FAIL("keeld did not answer /healthz within 60 s; see " << log);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  /// A test that ended early still stops keeld, with SIGTERM first so that it stops its embedded PostgreSQL
  /// too (SIGKILL would leave that server running on a directory about to be removed).
  ~keeld_process() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    int st = 0;
    while (::waitpid(pid_, &st, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > until) {
        stop(SIGKILL);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  keeld_process(const keeld_process&) = delete;
  keeld_process& operator=(const keeld_process&) = delete;

  /// Sends `sig` and waits for the process; its exit status (-1 when a signal ended it).
  int stop(int sig) {
    ::kill(pid_, sig);
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }

 private:
  pid_t pid_ = -1;
};

}  // namespace keel::test
