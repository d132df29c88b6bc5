// Starts, restarts, adopts and stops real PostgreSQL servers through keel::storage::embedded_postgres.
#define BOOST_TEST_MODULE embedded_postgres
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <libpq-fe.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "keel/storage/embedded_postgres.hpp"
#include "keel/storage/error.hpp"

namespace fs = std::filesystem;
using keel::storage::embedded_postgres;
using keel::storage::embedded_postgres_options;
using keel::storage::errc;

namespace {

constexpr auto k_cleanup_deadline = std::chrono::seconds(20);

std::optional<pid_t> postmaster_pid(const fs::path& data_dir) {
  std::ifstream in(data_dir / "postmaster.pid");
  long pid = 0;
  if (!(in >> pid) || pid <= 0) return std::nullopt;
  return static_cast<pid_t>(pid);
}

/// A fresh directory under /tmp; removed at the end, after stopping any server a failed test left running in
/// it.
struct temp_dir {
  fs::path path;

  temp_dir() {
    std::string name = "/tmp/keel-embpg-XXXXXX";
    if (::mkdtemp(name.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = name;
    // As root the server runs as the postgres user, which must be able to pass through this directory.
    if (::geteuid() == 0) fs::permissions(path, fs::perms(0755));
  }

  ~temp_dir() {
    std::error_code ec;
    for (fs::recursive_directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->path().filename() != "postmaster.pid") continue;
      auto dir = it->path().parent_path();
      auto pid = postmaster_pid(dir);
      if (!pid || ::kill(*pid, SIGINT) != 0) continue;  // fast shutdown; the postmaster removes its pid file
      auto deadline = std::chrono::steady_clock::now() + k_cleanup_deadline;
      while (fs::exists(dir / "postmaster.pid") && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    fs::remove_all(path, ec);
  }

  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

embedded_postgres_options test_options(const fs::path& data_dir) {
  embedded_postgres_options o;
  o.data_dir = data_dir;
  o.durable = false;
  o.timeout = std::chrono::seconds(60);
  return o;
}

std::string why(const keel::result<void>& r) {
  return r ? std::string("ok") : r.error().message();
}

/// One blocking libpq connection for checking what the server holds.
class client {
 public:
  explicit client(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str()), &PQfinish) {}

  [[nodiscard]] bool connected() const { return conn_ && PQstatus(conn_.get()) == CONNECTION_OK; }
  [[nodiscard]] std::string error() const { return conn_ ? PQerrorMessage(conn_.get()) : "out of memory"; }

  /// The first column of the first row ("" for commands without rows); "<failed: ...>" if the statement
  /// failed.
  std::string query(const std::string& sql) {
    std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(conn_.get(), sql.c_str()), &PQclear);
    auto status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK) return std::string();
    if (status != PGRES_TUPLES_OK) {
      return "<failed: " + (r ? std::string(PQresultErrorMessage(r.get())) : error()) + ">";
    }
    if (PQntuples(r.get()) == 0) return std::string();
    return std::string(PQgetvalue(r.get(), 0, 0));
  }

 private:
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn_;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(pg)

BOOST_AUTO_TEST_CASE(starts_a_fresh_cluster_and_accepts_connections) {
  temp_dir tmp;
  auto options = test_options(tmp.path / "data");
  options.settings = {{"work_mem", "8MB"}, {"keel.note", "it's a test"}};
  embedded_postgres server(options);
  BOOST_TEST(!server.running());

  auto started = server.start_blocking();
  BOOST_TEST_REQUIRE(started.has_value(), why(started));
  BOOST_TEST(server.running());
  BOOST_TEST(server.port() != 0);
  BOOST_TEST(fs::exists(tmp.path / "data" / "PG_VERSION"));
  BOOST_TEST(fs::exists(tmp.path / "data" / (".s.PGSQL." + std::to_string(server.port()))));

  {
    client c(server.connection_string());
    BOOST_TEST_REQUIRE(c.connected(), c.error());
    BOOST_TEST(c.query("SELECT 1") == "1");
    BOOST_TEST(c.query("SELECT current_user") == "postgres");
    BOOST_TEST(c.query("SELECT current_setting('work_mem')") == "8MB");
    BOOST_TEST(c.query("SELECT current_setting('keel.note')") == "it's a test");
    BOOST_TEST(c.query("SHOW fsync") == "off");
    BOOST_TEST(c.query("SHOW port") == std::to_string(server.port()));
  }

  auto stopped = server.stop_blocking();
  BOOST_TEST_REQUIRE(stopped.has_value(), why(stopped));
  BOOST_TEST(!server.running());
  BOOST_TEST(!fs::exists(tmp.path / "data" / "postmaster.pid"));
  BOOST_TEST(!client(server.connection_string()).connected());
  BOOST_TEST(server.stop_blocking().has_value());  // a second stop is a no-op
}

BOOST_AUTO_TEST_CASE(makes_a_relative_data_dir_absolute_against_the_working_directory) {
  auto options = test_options("relative/keel-data/");
  embedded_postgres server(options);
  BOOST_TEST(server.data_dir() == fs::current_path() / "relative" / "keel-data");
  BOOST_TEST(server.connection_string("app") ==
             "host=" + (fs::current_path() / "relative" / "keel-data").string() +
                 " port=0 user=postgres dbname=app");
}

BOOST_AUTO_TEST_CASE(quotes_connection_string_values_that_need_it) {
  embedded_postgres server(test_options("/tmp/keel data/it's"));
  BOOST_TEST(server.connection_string("my db") ==
             "host='/tmp/keel data/it\\'s' port=0 user=postgres dbname='my db'");
}

BOOST_AUTO_TEST_CASE(restarts_on_an_existing_data_directory) {
  temp_dir tmp;
  const auto options = test_options(tmp.path / "data");
  {
    embedded_postgres first(options);
    auto started = first.start_blocking();
    BOOST_TEST_REQUIRE(started.has_value(), why(started));
    client c(first.connection_string());
    BOOST_TEST_REQUIRE(c.connected(), c.error());
    BOOST_TEST_REQUIRE(c.query("CREATE TABLE kept (v text)") == "");
    BOOST_TEST_REQUIRE(c.query("INSERT INTO kept VALUES ('survives a restart')") == "");
    auto stopped = first.stop_blocking();
    BOOST_TEST_REQUIRE(stopped.has_value(), why(stopped));
  }
  embedded_postgres second(options);
  auto started = second.start_blocking();
  BOOST_TEST_REQUIRE(started.has_value(), why(started));
  client c(second.connection_string());
  BOOST_TEST_REQUIRE(c.connected(), c.error());
  BOOST_TEST(c.query("SELECT v FROM kept") == "survives a restart");
}

BOOST_AUTO_TEST_CASE(creates_a_database_idempotently) {
  temp_dir tmp;
  embedded_postgres server(test_options(tmp.path / "data"));

  auto not_started = server.create_database_blocking("early");
  BOOST_TEST(!not_started.has_value());

  auto started = server.start_blocking();
  BOOST_TEST_REQUIRE(started.has_value(), why(started));
  const std::string name = "keel \"test\" db";  // needs identifier quoting and conninfo quoting
  auto first = server.create_database_blocking(name);
  BOOST_TEST(first.has_value(), why(first));
  auto again = server.create_database_blocking(name);
  BOOST_TEST(again.has_value(), why(again));

  client c(server.connection_string(name));
  BOOST_TEST_REQUIRE(c.connected(), c.error());
  BOOST_TEST(c.query("SELECT current_database()") == name);
  client admin(server.connection_string());
  BOOST_TEST_REQUIRE(admin.connected(), admin.error());
  BOOST_TEST(admin.query("SELECT count(*) FROM pg_database WHERE datname = 'keel \"test\" db'") == "1");

  auto bad = server.create_database_blocking("");  // a zero-length identifier is a SQL error, not a crash
  BOOST_TEST(!bad.has_value());
  if (!bad) BOOST_TEST(bad.error() == make_error_code(errc::query_failed));
}

BOOST_AUTO_TEST_CASE(adopts_a_server_left_running_by_a_dead_owner) {
  temp_dir tmp;
  const auto options = test_options(tmp.path / "data");

  // The owner is a real process that starts the server and is then SIGKILLed: no destructor, no stop.
  int fds[2];
  BOOST_TEST_REQUIRE(::pipe(fds) == 0);
  pid_t owner = ::fork();
  BOOST_TEST_REQUIRE(owner >= 0);
  if (owner == 0) {
    ::close(fds[0]);
    auto* server = new embedded_postgres(options);  // deliberately never destroyed
    unsigned short port = server->start_blocking() ? server->port() : 0;
    [[maybe_unused]] auto n = ::write(fds[1], &port, sizeof port);
    ::raise(SIGKILL);
    ::_exit(1);
  }
  ::close(fds[1]);
  unsigned short owner_port = 0;
  auto got = ::read(fds[0], &owner_port, sizeof owner_port);
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(owner, &status, 0) < 0 && errno == EINTR) {
  }
  BOOST_TEST_REQUIRE(got == static_cast<ssize_t>(sizeof owner_port));
  BOOST_TEST_REQUIRE(owner_port != 0);
  BOOST_TEST(WIFSIGNALED(status));
  BOOST_TEST_REQUIRE(postmaster_pid(options.data_dir).has_value());
  const pid_t postmaster = *postmaster_pid(options.data_dir);
  BOOST_TEST(::kill(postmaster, 0) == 0);

  embedded_postgres heir(options);
  auto started = heir.start_blocking();
  BOOST_TEST_REQUIRE(started.has_value(), why(started));
  BOOST_TEST(heir.running());
  BOOST_TEST(heir.port() == owner_port);
  BOOST_TEST(postmaster_pid(options.data_dir).value_or(0) == postmaster);  // the same server, not a new one
  {
    client c(heir.connection_string());
    BOOST_TEST_REQUIRE(c.connected(), c.error());
    BOOST_TEST(c.query("SELECT 1") == "1");
  }
  auto stopped = heir.stop_blocking();
  BOOST_TEST_REQUIRE(stopped.has_value(), why(stopped));
  BOOST_TEST(!fs::exists(options.data_dir / "postmaster.pid"));
}

BOOST_AUTO_TEST_CASE(stopping_a_server_another_owner_already_stopped_succeeds) {
  temp_dir tmp;
  const auto options = test_options(tmp.path / "data");
  embedded_postgres first(options);
  auto started = first.start_blocking();
  BOOST_TEST_REQUIRE(started.has_value(), why(started));

  embedded_postgres second(options);
  auto adopted = second.start_blocking();
  BOOST_TEST_REQUIRE(adopted.has_value(), why(adopted));
  BOOST_TEST(second.port() == first.port());
  auto stopped = second.stop_blocking();
  BOOST_TEST_REQUIRE(stopped.has_value(), why(stopped));

  auto stopped_again = first.stop_blocking();
  BOOST_TEST(stopped_again.has_value(), why(stopped_again));
  BOOST_TEST(!first.running());
}

BOOST_AUTO_TEST_CASE(reports_a_clear_error_for_an_unusable_data_directory) {
  temp_dir tmp;
  std::ofstream(tmp.path / "file") << "not a directory\n";
  embedded_postgres under_a_file(test_options(tmp.path / "file" / "data"));
  auto r = under_a_file.start_blocking();
  BOOST_TEST(!r.has_value());
  if (!r) BOOST_TEST(r.error() == make_error_code(errc::server_failed));
  BOOST_TEST(!under_a_file.running());

  if (::geteuid() == 0) {
    // The server's user cannot pass through a root-only parent directory.
    fs::create_directory(tmp.path / "private");
    fs::permissions(tmp.path / "private", fs::perms(0700));
    embedded_postgres unreachable(test_options(tmp.path / "private" / "data"));
    auto denied = unreachable.start_blocking();
    BOOST_TEST(!denied.has_value());
    if (!denied) BOOST_TEST(denied.error() == make_error_code(errc::server_failed));
    BOOST_TEST(!fs::exists(tmp.path / "private" / "data" / "PG_VERSION"));
  }
}

BOOST_AUTO_TEST_CASE(refuses_a_data_directory_whose_socket_path_is_too_long) {
  temp_dir tmp;
  embedded_postgres server(test_options(tmp.path / std::string(100, 'x')));
  auto r = server.start_blocking();
  BOOST_TEST(!r.has_value());
  if (!r) BOOST_TEST(r.error() == make_error_code(errc::server_failed));
  BOOST_TEST(!server.running());
}

BOOST_AUTO_TEST_SUITE_END()
