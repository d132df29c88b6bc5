// Starts, restarts, adopts and stops real PostgreSQL servers through keel::storage::embedded_postgres.
#define BOOST_TEST_MODULE embedded_postgres
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

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

/// The uid and gid the embedded server runs as: the default os_user when we are root, else ourselves.
struct server_user {
  uid_t uid = ::geteuid();
  gid_t gid = ::getegid();

  server_user() {
    if (::geteuid() != 0) return;
    const passwd* pw = ::getpwnam(embedded_postgres_options{}.os_user.c_str());
    if (pw == nullptr) throw std::runtime_error("no account for the embedded server's os_user");
    uid = pw->pw_uid;
    gid = pw->pw_gid;
  }
};

/// Forks a child that runs as the server's user: `argv` through execv, or a pause() when `argv` is empty.
pid_t spawn_as_server_user(const std::vector<std::string>& args) {
  const server_user user;
  std::vector<char*> argv;
  for (const auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid != 0) return pid;
  if (::geteuid() == 0 &&
      (::setgroups(0, nullptr) != 0 || ::setgid(user.gid) != 0 || ::setuid(user.uid) != 0)) {
    ::_exit(126);
  }
  if (args.empty()) {
    for (;;)
      ::pause();
  }
  if (::chdir("/") != 0) ::_exit(126);
  ::execv(argv[0], argv.data());
  ::_exit(127);
}

int wait_exit_status(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// A process of the server's user that lives until this object is destroyed.
struct idle_process {
  pid_t pid = spawn_as_server_user({});

  ~idle_process() {
    ::kill(pid, SIGKILL);  // pid > 0: spawn_as_server_user throws when fork fails
    wait_exit_status(pid);
  }
  idle_process() = default;
  idle_process(const idle_process&) = delete;
  idle_process& operator=(const idle_process&) = delete;
};

/// A port no TCP listener holds on 127.0.0.1 right now.
unsigned short free_tcp_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("bind failed");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

/// connect() to 127.0.0.1:`port` with a plain TCP socket: 0 when it connects, else the errno.
int tcp_connect_error(unsigned short port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int e = rc == 0 ? 0 : errno;
  ::close(fd);
  return e;
}

mode_t mode_of(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) throw std::runtime_error("cannot stat " + p.string());
  return st.st_mode & 07777;
}

uid_t owner_of(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) throw std::runtime_error("cannot stat " + p.string());
  return st.st_uid;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

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

BOOST_AUTO_TEST_CASE(listens_only_on_its_unix_socket_in_a_private_data_directory) {
  temp_dir tmp;
  auto options = test_options(tmp.path / "data");
  // A port no TCP listener holds, so that a successful connect could only be the embedded server.
  options.port = free_tcp_port();
  embedded_postgres server(options);
  auto started = server.start_blocking();
  BOOST_TEST_REQUIRE(started.has_value(), why(started));

  BOOST_TEST(tcp_connect_error(server.port()) == ECONNREFUSED);
  client c(server.connection_string());
  BOOST_TEST_REQUIRE(c.connected(), c.error());
  BOOST_TEST(c.query("SHOW listen_addresses") == "");
  BOOST_TEST(
      c.query("SELECT count(*) FROM pg_hba_file_rules WHERE type = 'host' AND auth_method <> 'reject'") ==
      "0");

  const server_user user;
  BOOST_TEST(mode_of(options.data_dir) == mode_t{0700});
  BOOST_TEST(owner_of(options.data_dir) == user.uid);
  const fs::path socket = options.data_dir / (".s.PGSQL." + std::to_string(server.port()));
  BOOST_TEST(mode_of(socket) == mode_t{0700});
  BOOST_TEST(owner_of(socket) == user.uid);
}

BOOST_AUTO_TEST_CASE(makes_its_data_directory_private_again_before_each_start) {
  temp_dir tmp;
  const auto options = test_options(tmp.path / "data");
  fs::create_directory(options.data_dir);
  fs::permissions(options.data_dir, fs::perms(0755));
  embedded_postgres server(options);
  auto started = server.start_blocking();
  BOOST_TEST_REQUIRE(started.has_value(), why(started));
  BOOST_TEST(mode_of(options.data_dir) == mode_t{0700});
  BOOST_TEST_REQUIRE(server.stop_blocking().has_value());

  // PostgreSQL itself accepts 0750 (group access), which would let the group reach the trusted socket.
  fs::permissions(options.data_dir, fs::perms(0750));
  auto restarted = server.start_blocking();
  BOOST_TEST_REQUIRE(restarted.has_value(), why(restarted));
  BOOST_TEST(mode_of(options.data_dir) == mode_t{0700});
}

BOOST_AUTO_TEST_CASE(servers_on_different_data_directories_can_share_a_port) {
  temp_dir tmp;
  auto first_options = test_options(tmp.path / "first");
  first_options.port = free_tcp_port();
  auto second_options = test_options(tmp.path / "second");
  second_options.port = first_options.port;
  embedded_postgres first(first_options);
  embedded_postgres second(second_options);
  auto first_started = first.start_blocking();
  BOOST_TEST_REQUIRE(first_started.has_value(), why(first_started));
  auto second_started = second.start_blocking();
  BOOST_TEST_REQUIRE(second_started.has_value(), why(second_started));

  client a(first.connection_string());
  client b(second.connection_string());
  BOOST_TEST_REQUIRE(a.connected(), a.error());
  BOOST_TEST_REQUIRE(b.connected(), b.error());
  BOOST_TEST(a.query("SHOW data_directory") == first_options.data_dir.string());
  BOOST_TEST(b.query("SHOW data_directory") == second_options.data_dir.string());
}

BOOST_AUTO_TEST_CASE(refuses_settings_that_would_open_tcp_or_move_its_socket) {
  temp_dir tmp;
  for (const auto& name : {"listen_addresses", "Listen-Addresses", "port", "unix_socket_directories"}) {
    auto options = test_options(tmp.path / "data");
    // emplace, not settings[name] = "*": g++ 12 at -O3 reports a false -Wrestrict in the inlined assignment.
    options.settings.emplace(name, "*");
    embedded_postgres server(options);
    auto r = server.start_blocking();
    BOOST_TEST(!r.has_value(), name);
    if (!r) BOOST_TEST(r.error() == make_error_code(errc::server_failed));
    BOOST_TEST(!server.running());
    BOOST_TEST(!fs::exists(options.data_dir), name);
  }
}

namespace {

/// Starts and stops a server on `options`' data directory; returns the port it had.
unsigned short port_of_a_server_that_ran_on(const embedded_postgres_options& options) {
  embedded_postgres first(options);
  auto started = first.start_blocking();
  BOOST_TEST_REQUIRE(started.has_value(), why(started));
  return first.port();
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_new_owner_keeps_the_port_of_the_last_server_on_the_data_directory) {
  temp_dir tmp;
  const auto options = test_options(tmp.path / "data");
  const unsigned short first_port = port_of_a_server_that_ran_on(options);
  embedded_postgres second(options);
  auto started = second.start_blocking();
  BOOST_TEST_REQUIRE(started.has_value(), why(started));
  BOOST_TEST(second.port() == first_port);
  client c(second.connection_string());
  BOOST_TEST(c.connected(), c.error());
}

BOOST_AUTO_TEST_CASE(moves_to_another_port_when_a_live_process_holds_the_socket_lock) {
  temp_dir tmp;
  const auto options = test_options(tmp.path / "data");
  const unsigned short first_port = port_of_a_server_that_ran_on(options);
  // The socket's lock held by a live process of the server's user, as another server sharing this socket
  // directory would hold it: PostgreSQL refuses to take over such a lock.
  idle_process holder;
  const fs::path lock = options.data_dir / (".s.PGSQL." + std::to_string(first_port) + ".lock");
  std::ofstream(lock) << holder.pid << "\n" << options.data_dir.string() << "\n";
  const server_user user;
  BOOST_TEST_REQUIRE(::chown(lock.c_str(), user.uid, user.gid) == 0);

  embedded_postgres second(options);
  auto started = second.start_blocking();
  BOOST_TEST_REQUIRE(started.has_value(), why(started));
  BOOST_TEST(second.port() != first_port);
  client c(second.connection_string());
  BOOST_TEST(c.connected(), c.error());
}

BOOST_AUTO_TEST_CASE(restarts_an_adopted_server_that_listens_on_tcp) {
  temp_dir tmp;
  auto options = test_options(tmp.path / "data");
  options.port = free_tcp_port();
  {
    embedded_postgres first(options);
    auto started = first.start_blocking();
    BOOST_TEST_REQUIRE(started.has_value(), why(started));
  }
  // Start it as Keel used to, listening on 127.0.0.1, with pg_ctl from the installation that ran it.
  const std::string opts = read_file(options.data_dir / "postmaster.opts");
  const std::string postgres = opts.substr(0, opts.find(' '));
  const std::string pg_ctl = (fs::path(postgres).parent_path() / "pg_ctl").string();
  const std::string dir = options.data_dir.string();
  BOOST_TEST_REQUIRE(
      wait_exit_status(spawn_as_server_user(
          {pg_ctl, "-s", "-D", dir, "-l", dir + "/server.log", "-w", "-o",
           "-k " + dir + " -p " + std::to_string(options.port) + " -c listen_addresses=127.0.0.1",
           "start"})) == 0);
  BOOST_TEST_REQUIRE(tcp_connect_error(options.port) == 0);
  const pid_t old_postmaster = postmaster_pid(options.data_dir).value_or(0);

  embedded_postgres heir(options);
  auto started = heir.start_blocking();
  BOOST_TEST_REQUIRE(started.has_value(), why(started));
  BOOST_TEST(heir.port() == options.port);
  BOOST_TEST(postmaster_pid(options.data_dir).value_or(0) != old_postmaster);
  BOOST_TEST(tcp_connect_error(options.port) == ECONNREFUSED);
  client c(heir.connection_string());
  BOOST_TEST_REQUIRE(c.connected(), c.error());
  BOOST_TEST(c.query("SHOW listen_addresses") == "");
}

BOOST_AUTO_TEST_SUITE_END()
