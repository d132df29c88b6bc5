// The keel command-line client end to end: the real binary as a subprocess against a real keeld, checking
// what it prints and its exit status, and its event tail across a keeld SIGKILL and restart.
#define BOOST_TEST_MODULE cli
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/beast/http/read.hpp>
#include <chrono>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "http_client.hpp"
#include "keeld_process.hpp"
#include "pg_harness.hpp"

namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

/// keel running in the background, its stdout and stderr in files of `dir`.
class keel_process {
 public:
  keel_process(const std::string& dir, const std::vector<std::string>& args,
               const std::vector<std::pair<std::string, std::string>>& env = {}) {
    static int serial = 0;
    const auto n = std::to_string(++serial);
    out_path_ = dir + "/keel-" + n + ".out";
    err_path_ = dir + "/keel-" + n + ".err";
    std::fflush(nullptr);  // or the child writes what the test buffered so far a second time
    pid_ = ::fork();
    BOOST_REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      // The test's own environment must not steer the client.
      ::unsetenv("KEEL_URL");
      ::unsetenv("KEEL_API_KEY");
      for (const auto& [k, v] : env)
        ::setenv(k.c_str(), v.c_str(), 1);
      const int out = ::open(out_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      const int err = ::open(err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      ::dup2(out, 1);
      ::dup2(err, 2);
      std::vector<char*> argv{const_cast<char*>("keel")};
      for (const auto& a : args)
        argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(KEEL_CLI_PATH, argv.data());
      ::_exit(127);
    }
  }
  ~keel_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  keel_process(const keel_process&) = delete;
  keel_process& operator=(const keel_process&) = delete;

  /// Its exit status once it exits within `timeout`; nullopt (and it is killed) otherwise.
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    int st = 0;
    while (::waitpid(pid_, &st, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > until) return std::nullopt;
      std::this_thread::sleep_for(10ms);
    }
    pid_ = -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  void signal(int sig) { ::kill(pid_, sig); }
  [[nodiscard]] std::string out() const { return read_file(out_path_); }
  [[nodiscard]] std::string err() const { return read_file(err_path_); }

 private:
  pid_t pid_ = -1;
  std::string out_path_;
  std::string err_path_;
};

struct outcome {
  int status = -1;
  std::string out;
  std::string err;
  [[nodiscard]] json::value json() const { return json::parse(out); }
};

/// keel with `args` and no --url (the environment says where, or nothing does).
outcome run_keel_env(const std::vector<std::string>& args,
                     const std::vector<std::pair<std::string, std::string>>& env) {
  static keel::test::temp_dir dir;
  keel_process p(dir.path(), args, env);
  const auto status = p.wait(60s);
  BOOST_REQUIRE_MESSAGE(status.has_value(), "keel did not exit within 60 s");
  return {*status, p.out(), p.err()};
}

/// One keeld for the whole module (a test that kills its server starts its own).
struct server {
  keel::test::temp_dir dir;
  unsigned short port = keel::test::free_port();
  keel::test::keeld_process keeld{KEEL_KEELD_PATH, dir.path(), port};
  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }
};

server& shared_server() {
  static server s;
  return s;
}

/// keel against the shared server.
outcome run_keel(std::vector<std::string> args) {
  args.insert(args.begin(), {"--url", shared_server().url()});
  return run_keel_env(args, {});
}

/// Polls `keel get ID --json` until `pred` holds for the run (a test failure after 30 s); the run.
template <class Pred>
json::value wait_for_run(const std::string& id, Pred pred) {
  json::value run;
  const bool ok = keel::test::wait_until(
      [&] {
        auto r = run_keel({"get", id, "--json"});
        if (r.status != 0) return false;
        run = r.json();
        return pred(run);
      },
      30s);
  BOOST_REQUIRE_MESSAGE(ok, "the run did not get there: " << json::serialize(run));
  return run;
}

std::string status_of(const json::value& run) {
  return std::string(run.at("status").as_string());
}

bool contains(const std::string& text, std::string_view part) {
  return text.find(part) != std::string::npos;
}

/// The event ids of `--json` tail output (frames, which have none, left out).
std::vector<std::int64_t> event_ids(const std::string& out) {
  std::vector<std::int64_t> ids;
  for (const auto& line : lines_of(out)) {
    const auto ev = json::parse(line);
    if (ev.at("kind") != "progress") ids.push_back(ev.at("id").to_number<std::int64_t>());
  }
  return ids;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(start_prints_the_run_id_and_get_shows_the_hook_that_resume_answers) {
  auto started = run_keel({"start", "approval", "--input", R"({"amount":42})"});
  BOOST_TEST_INFO(started.err);
  BOOST_REQUIRE(started.status == 0);
  const auto id = lines_of(started.out).at(0);
  BOOST_TEST(id.size() == 36u);

  auto run = wait_for_run(id, [](const json::value& r) { return status_of(r) == "waiting"; });
  const std::string path(run.at("hooks").at(0).at("path").as_string());
  auto shown = run_keel({"get", id});
  BOOST_TEST(shown.status == 0);
  BOOST_TEST_INFO(shown.out);
  BOOST_TEST(contains(shown.out, id));
  BOOST_TEST(contains(shown.out, "approval"));
  BOOST_TEST(contains(shown.out, "waiting"));
  BOOST_TEST(contains(shown.out, "decision: POST " + path));
  BOOST_TEST(contains(shown.out, "request"));  // the steps table
  BOOST_TEST(contains(shown.out, "SEQ"));

  auto resumed = run_keel({"resume", path, R"({"approved":true,"by":"cli"})"});
  BOOST_TEST_INFO(resumed.err);
  BOOST_TEST(resumed.status == 0);
  BOOST_TEST(contains(resumed.out, id + ": resumed"));
  auto again = run_keel({"resume", path, R"({"approved":true,"by":"cli"})"});
  BOOST_TEST(again.status == 0);
  BOOST_TEST(contains(again.out, "already"));
  auto other = run_keel({"resume", path, R"({"approved":false,"by":"cli"})"});
  BOOST_TEST(other.status == 1);
  BOOST_TEST(contains(other.err, "keel: hook_already_resumed: "));
  BOOST_TEST(contains(other.err, "(HTTP 409)"));

  run = wait_for_run(id, [](const json::value& r) { return status_of(r) == "completed"; });
  BOOST_TEST(run.at("output").at("approved") == true);
  BOOST_TEST(run.at("output").at("by") == "cli");
  auto done = run_keel({"get", id});
  BOOST_TEST(contains(done.out, R"("by":"cli")"));
}

BOOST_AUTO_TEST_CASE(json_output_is_the_apis_json) {
  auto started =
      run_keel({"--json", "start", "countdown", "--input", R"({"n":1,"delay_ms":0})", "--key", "k-json"});
  BOOST_TEST_INFO(started.err);
  BOOST_REQUIRE(started.status == 0);
  const auto run = started.json();
  BOOST_TEST(run.at("workflow") == "countdown");
  BOOST_TEST(run.at("idempotency_key") == "k-json");
  const std::string id(run.at("id").as_string());
  // The same key and input again: the run it started, said so on stderr.
  auto repeat = run_keel({"start", "countdown", "--input", R"({"n":1,"delay_ms":0})", "--key", "k-json"});
  BOOST_TEST(repeat.status == 0);
  BOOST_TEST(lines_of(repeat.out).at(0) == id);
  BOOST_TEST(contains(repeat.err, "already"));

  BOOST_TEST(run_keel({"get", id, "--json"}).json().at("id") == id.c_str());
  BOOST_TEST(run_keel({"list", "--json"}).json().at("runs").is_array());
  const auto wf = run_keel({"workflows", "--json"}).json();
  bool has_countdown = false;
  for (const auto& w : wf.at("workflows").as_array())
    has_countdown = has_countdown || w.at("name") == "countdown";
  BOOST_TEST(has_countdown);
  auto human = run_keel({"workflows"});
  BOOST_TEST(contains(human.out, "countdown"));
  BOOST_TEST(contains(human.out, "approval"));
}

BOOST_AUTO_TEST_CASE(list_shows_a_line_per_run_and_follows_the_cursor_only_with_all) {
  std::set<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    auto r = run_keel({"start", "noop3"});
    BOOST_REQUIRE(r.status == 0);
    ids.insert(lines_of(r.out).at(0));
  }
  auto page = run_keel({"list", "--workflow", "noop3", "--limit", "2"});
  BOOST_TEST_INFO(page.err);
  BOOST_TEST(page.status == 0);
  const auto lines = lines_of(page.out);
  BOOST_TEST(lines.size() == 3u);  // a header and two runs
  BOOST_TEST(contains(lines.at(0), "STATUS"));
  BOOST_TEST(contains(page.err, "--all"));

  auto all = run_keel({"list", "--workflow", "noop3", "--limit", "2", "--all"});
  BOOST_TEST(all.status == 0);
  BOOST_TEST(lines_of(all.out).size() == 4u);
  for (const auto& id : ids)
    BOOST_TEST(contains(all.out, id));
  BOOST_TEST(!contains(all.err, "--all"));

  auto json_all = run_keel({"list", "--workflow", "noop3", "--limit", "1", "--all", "--json"});
  const auto all_runs = json_all.json();
  std::set<std::string> listed;
  for (const auto& r : all_runs.at("runs").as_array())
    listed.insert(std::string(r.at("id").as_string()));
  BOOST_TEST(listed == ids);
  BOOST_TEST(all_runs.at("next_cursor").is_null());

  auto none = run_keel({"list", "--workflow", "no_such_workflow"});
  BOOST_TEST(none.status == 0);
  BOOST_TEST(lines_of(none.out).size() == 1u);
}

BOOST_AUTO_TEST_CASE(list_status_shows_unclaimable_and_dead_lettered_runs_with_the_reason) {
  // Runs of noop3 due tomorrow are queued under a keeld that runs noop3; the keeld after it runs no
  // examples (a deployment that dropped the workflow), so nothing live can claim them.
  keel::test::temp_dir dir;
  const auto port = keel::test::free_port();
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  auto keel_at = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--url", url});
    return run_keel_env(args, {});
  };
  std::vector<std::string> ids;
  {
    keel::test::keeld_process first{KEEL_KEELD_PATH, dir.path(), port};
    for (int i = 0; i < 3; ++i) {
      auto r = keel_at({"start", "noop3", "--run-at", "2099-01-01T00:00:00Z"});
      BOOST_TEST_INFO(r.err);
      BOOST_REQUIRE(r.status == 0);
      ids.push_back(lines_of(r.out).at(0));
    }
    auto none = keel_at({"list", "--status", "unclaimable"});
    BOOST_TEST(none.status == 0);
    BOOST_TEST(lines_of(none.out).size() == 1u);  // the header: noop3 has a live worker
  }
  keel::test::keeld_process second{KEEL_KEELD_PATH, dir.path(), port, {"--no-examples"}};
  auto page = keel_at({"list", "--status", "unclaimable", "--limit", "2", "--all"});
  BOOST_TEST_INFO(page.out << page.err);
  BOOST_TEST(page.status == 0);
  const auto lines = lines_of(page.out);
  BOOST_REQUIRE(lines.size() == 4u);  // a header and three runs, over two pages
  BOOST_TEST(contains(lines.at(0), "REASON"));
  for (std::size_t i = 1; i < lines.size(); ++i) {
    BOOST_TEST(contains(lines[i], "queued"));
    BOOST_TEST(contains(lines[i], "unclaimable: no live worker has registered workflow 'noop3' version 1"));
  }
  BOOST_TEST(contains(lines.at(1), ids.at(2)));  // newest first
  BOOST_TEST(contains(lines.at(3), ids.at(0)));
  auto json = keel_at({"list", "--status", "unclaimable", "--workflow", "noop3", "--json"}).json();
  BOOST_TEST(json.at("runs").as_array().size() == 3u);
  BOOST_TEST(json.at("runs").at(0).at("unclaimable").is_string());
  auto shown = keel_at({"get", ids.at(0)});
  BOOST_TEST(contains(shown.out, "unclaimable"));
  // No run here lost its worker: the dead-lettered listing is its header alone.
  auto dead = keel_at({"list", "--status", "dead_lettered"});
  BOOST_TEST(dead.status == 0);
  BOOST_TEST(lines_of(dead.out).size() == 1u);
  auto typo = keel_at({"list", "--status", "dead-lettered"});
  BOOST_TEST(typo.status == 2);
  BOOST_TEST(contains(typo.err, "dead_lettered, unclaimable"));
}

BOOST_AUTO_TEST_CASE(send_cancel_and_retry_report_the_servers_answers) {
  auto started = run_keel({"start", "approval", "--input", R"({"amount":1})"});
  BOOST_REQUIRE(started.status == 0);
  const auto id = lines_of(started.out).at(0);
  wait_for_run(id, [](const json::value& r) { return status_of(r) == "waiting"; });

  auto sent = run_keel({"send", id, "nudge", R"({"n":1})"});
  BOOST_TEST_INFO(sent.err);
  BOOST_TEST(sent.status == 0);
  BOOST_TEST(contains(sent.out, "sent nudge to " + id));

  auto not_failed = run_keel({"retry", id});
  BOOST_TEST(not_failed.status == 1);
  BOOST_TEST(contains(not_failed.err, "keel: run_not_failed: "));

  auto cancelled = run_keel({"cancel", id});
  BOOST_TEST_INFO(cancelled.err);
  BOOST_TEST(cancelled.status == 0);
  BOOST_TEST(contains(cancelled.out, id + ": "));
  wait_for_run(id, [](const json::value& r) { return status_of(r) == "cancelled"; });
  auto late = run_keel({"send", id, "nudge"});
  BOOST_TEST(late.status == 1);
  BOOST_TEST(contains(late.err, "keel: run_finished: "));

  // A declined card fails the order at once; retry continues it from the failed charge (which fails again).
  auto order = run_keel({"start", "order", "--input", R"({"card":"declined"})"});
  BOOST_REQUIRE(order.status == 0);
  const auto order_id = lines_of(order.out).at(0);
  wait_for_run(order_id, [](const json::value& r) { return status_of(r) == "failed"; });
  auto retried = run_keel({"retry", order_id});
  BOOST_TEST_INFO(retried.err);
  BOOST_TEST(retried.status == 0);
  BOOST_TEST(contains(retried.out, order_id + ": retrying"));
  auto run = wait_for_run(order_id, [](const json::value& r) {
    return status_of(r) == "failed" && !r.at("history").as_array().empty();
  });
  BOOST_TEST(contains(run_keel({"get", order_id}).out, "history"));
}

BOOST_AUTO_TEST_CASE(publish_starts_and_cancels_runs_and_start_debounces) {
  // order.placed starts an order (the example declares it), once per key.
  auto placed = run_keel({"publish", "order.placed", R"({"card":"visa"})", "--key", "cli-order-1"});
  BOOST_TEST_INFO(placed.err);
  BOOST_REQUIRE(placed.status == 0);
  const auto line = lines_of(placed.out).at(0);
  BOOST_REQUIRE(line.starts_with("started order "));
  const auto order_id = line.substr(std::string("started order ").size());
  wait_for_run(order_id, [](const json::value& r) { return status_of(r) == "completed"; });
  auto again = run_keel({"publish", "order.placed", R"({"card":"visa"})", "--key", "cli-order-1"});
  BOOST_REQUIRE(again.status == 0);
  BOOST_TEST(contains(again.out, "already started order " + order_id));
  auto conflict = run_keel({"publish", "order.placed", R"({"card":"amex"})", "--key", "cli-order-1"});
  BOOST_TEST(conflict.status == 1);
  BOOST_TEST(contains(conflict.err, "keel: idempotency_conflict: "));

  // approval.withdrawn cancels the approval of that request_id (the example's cancel_on).
  auto asked = run_keel({"start", "approval", "--input", R"({"amount":5,"request_id":"cli-r-1"})"});
  BOOST_REQUIRE(asked.status == 0);
  const auto approval_id = lines_of(asked.out).at(0);
  wait_for_run(approval_id, [](const json::value& r) { return status_of(r) == "waiting"; });
  auto withdrawn = run_keel({"publish", "approval.withdrawn", R"({"request_id":"cli-r-1"})"});
  BOOST_TEST_INFO(withdrawn.err);
  BOOST_REQUIRE(withdrawn.status == 0);
  BOOST_TEST(contains(withdrawn.out, "cancelled " + approval_id));
  wait_for_run(approval_id, [](const json::value& r) { return status_of(r) == "cancelled"; });
  auto nobody = run_keel({"publish", "nobody.listens"});
  BOOST_TEST(nobody.status == 0);
  BOOST_TEST(contains(nobody.out, "no workflow starts on nobody.listens"));
  BOOST_TEST(run_keel({"publish", "x", "{not json"}).status == 2);

  // Debounced starts: the second collapses into the first's queued run.
  auto first = run_keel(
      {"start", "noop3", "--input", R"({"n":1})", "--debounce-key", "cli-k", "--debounce-ms", "600000"});
  auto second = run_keel(
      {"start", "noop3", "--input", R"({"n":2})", "--debounce-key", "cli-k", "--debounce-ms", "600000"});
  BOOST_REQUIRE(first.status == 0);
  BOOST_REQUIRE(second.status == 0);
  BOOST_TEST(lines_of(first.out).at(0) == lines_of(second.out).at(0));
  BOOST_TEST(contains(second.err, "collapsed into the queued run of its debounce key"));
  BOOST_TEST(run_keel({"start", "noop3", "--debounce-key", "k", "--debounce-ms", "0"}).status == 2);
  // The queued run is cancelled, so that it does not start among other tests' runs.
  BOOST_TEST(run_keel({"cancel", lines_of(first.out).at(0)}).status == 0);
}

BOOST_AUTO_TEST_CASE(api_errors_exit_1_with_their_code_and_bad_arguments_exit_2_before_any_request) {
  auto unknown = run_keel({"start", "no_such_workflow"});
  BOOST_TEST(unknown.status == 1);
  BOOST_TEST(contains(unknown.err, "keel: unknown_workflow: "));
  BOOST_TEST(contains(unknown.err, "(HTTP 404)"));
  auto missing = run_keel({"get", "01a2182a-59c6-7f87-8ce9-fd55dbf21175"});
  BOOST_TEST(missing.status == 1);
  BOOST_TEST(contains(missing.err, "keel: run_not_found: "));

  // Checked locally: against a port nobody listens on, a bad argument is still a usage error.
  const auto nowhere = "http://127.0.0.1:" + std::to_string(keel::test::free_port());
  const std::vector<std::vector<std::string>> bad{
      {"start", "approval", "--input", "{not json"},
      {"send", "some-id", "event", "[1,"},
      {"resume", "token", "nope"},
      {"frobnicate"},
      {"get"},
      {"get", "a", "b"},
      {"list", "--limit", "0"},
      {"list", "--status", "sleepy"},
      {"list", "--no-such-option"},
      {},
  };
  for (const auto& args : bad) {
    auto with_url = args;
    with_url.insert(with_url.begin(), {"--url", nowhere});
    auto r = run_keel_env(with_url, {});
    BOOST_TEST_INFO(r.err);
    BOOST_TEST(r.status == 2);
    BOOST_TEST(contains(r.err, "usage: keel"));
    BOOST_TEST(!contains(r.err, "cannot reach"));
  }
  auto invalid = run_keel_env({"--url", nowhere, "start", "approval", "--input", "{not json"}, {});
  BOOST_TEST(contains(invalid.err, "invalid JSON for --input"));

  auto help = run_keel({"--help"});
  BOOST_TEST(help.status == 0);
  BOOST_TEST(contains(help.out, "tail"));
  auto tail_help = run_keel({"tail", "--help"});
  BOOST_TEST(tail_help.status == 0);
  BOOST_TEST(contains(tail_help.out, "Last-Event-ID"));
}

BOOST_AUTO_TEST_CASE(an_unreachable_server_is_named_in_the_error) {
  const auto nowhere = "http://127.0.0.1:" + std::to_string(keel::test::free_port());
  auto r = run_keel_env({"--url", nowhere, "list"}, {});
  BOOST_TEST(r.status == 1);
  BOOST_TEST_INFO(r.err);
  BOOST_TEST(contains(r.err, "cannot reach the Keel server at " + nowhere));
  BOOST_TEST(contains(r.err, "refused"));
  auto bad_url = run_keel_env({"--url", "ftp://example.com", "list"}, {});
  BOOST_TEST(bad_url.status == 2);
}

BOOST_AUTO_TEST_CASE(keel_url_in_the_environment_says_where_the_server_is_unless_url_is_given) {
  auto from_env = run_keel_env({"workflows"}, {{"KEEL_URL", shared_server().url()}});
  BOOST_TEST_INFO(from_env.err);
  BOOST_TEST(from_env.status == 0);
  BOOST_TEST(contains(from_env.out, "countdown"));
  const auto nowhere = "http://127.0.0.1:" + std::to_string(keel::test::free_port());
  auto flag_wins = run_keel_env({"--url", shared_server().url(), "workflows"}, {{"KEEL_URL", nowhere}});
  BOOST_TEST(flag_wins.status == 0);
  auto env_nowhere = run_keel_env({"workflows"}, {{"KEEL_URL", nowhere}});
  BOOST_TEST(env_nowhere.status == 1);
  BOOST_TEST(contains(env_nowhere.err, nowhere));
}

BOOST_AUTO_TEST_CASE(the_api_key_is_sent_as_a_bearer_token) {
  // A one-request server that records the header (keeld does not check keys yet).
  namespace asio = boost::asio;
  namespace bhttp = boost::beast::http;
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  const auto url = "http://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
  std::vector<std::string> seen;
  std::thread fake([&] {
    for (int i = 0; i < 2; ++i) {
      asio::ip::tcp::socket s(io);
      acceptor.accept(s);
      boost::beast::flat_buffer buf;
      bhttp::request<bhttp::string_body> req;
      bhttp::read(s, buf, req);
      seen.emplace_back(req[bhttp::field::authorization]);
      bhttp::response<bhttp::string_body> res{bhttp::status::ok, 11};
      res.set(bhttp::field::content_type, "application/json");
      res.body() = R"({"workflows":[]})";
      res.prepare_payload();
      bhttp::write(s, res);
    }
  });
  auto by_flag = run_keel_env({"--url", url, "--api-key", "s3cret", "workflows"}, {});
  auto by_env = run_keel_env({"--url", url, "workflows"}, {{"KEEL_API_KEY", "from-env"}});
  fake.join();
  BOOST_TEST(by_flag.status == 0);
  BOOST_TEST(by_env.status == 0);
  BOOST_REQUIRE(seen.size() == 2u);
  BOOST_TEST(seen[0] == "Bearer s3cret");
  BOOST_TEST(seen[1] == "Bearer from-env");
}

// The schedules these tests make fire once a year at most (New Year), so that no run of theirs lands among
// the runs other tests count.
BOOST_AUTO_TEST_CASE(schedule_put_show_pause_resume_and_delete_and_schedules_lists_them) {
  auto created = run_keel({"schedule", "put", "cli.yearly", "--workflow", "noop3", "--cron", "0 0 1 1 *",
                           "--tz", "Europe/Paris", "--input", R"({"from":"cli"})", "--catch-up", "2",
                           "--priority", "-4", "--version", "1"});
  BOOST_TEST_INFO(created.err);
  BOOST_REQUIRE(created.status == 0);
  BOOST_TEST(contains(created.out, "cli.yearly: created; next firing "));
  BOOST_TEST(contains(created.out, "-12-31 23:00:00.000Z"));  // midnight in Paris, in UTC
  // The same definition again: nothing changed, and it says so; another one: updated.
  const std::vector<std::string> again{
      "schedule", "put",          "cli.yearly", "--workflow",        "noop3",      "--cron", "0 0 1 1 *",
      "--tz",     "Europe/Paris", "--input",    R"({"from":"cli"})", "--catch-up", "2",      "--priority",
      "-4",       "--version",    "1"};
  auto repeat = run_keel(again);
  BOOST_TEST(repeat.status == 0);
  BOOST_TEST(contains(repeat.out, "cli.yearly: unchanged; next firing "));

  auto shown = run_keel({"schedule", "show", "cli.yearly"});
  BOOST_TEST_INFO(shown.err);
  BOOST_TEST(shown.status == 0);
  BOOST_TEST_INFO(shown.out);
  BOOST_TEST(contains(shown.out, "cli.yearly"));
  BOOST_TEST(contains(shown.out, "noop3 (version 1)"));
  BOOST_TEST(contains(shown.out, "0 0 1 1 * (Europe/Paris)"));
  BOOST_TEST(contains(shown.out, R"({"from":"cli"})"));
  BOOST_TEST(contains(shown.out, "catch up"));
  BOOST_TEST(contains(shown.out, "upcoming\n"));
  std::size_t new_years = 0;  // the next five firings, one a line
  for (const auto& line : lines_of(shown.out))
    new_years += line.starts_with("  ") && contains(line, "-12-31 23:00:00.000Z") ? 1 : 0;
  BOOST_TEST(new_years == 5u);
  const auto as_json = run_keel({"--json", "schedule", "show", "cli.yearly"});
  BOOST_REQUIRE(as_json.status == 0);
  const auto s = as_json.json();
  BOOST_TEST(s.at("name") == "cli.yearly");
  BOOST_TEST(s.at("time_zone") == "Europe/Paris");
  BOOST_TEST(s.at("catch_up") == 2);
  BOOST_TEST(s.at("priority") == -4);
  BOOST_TEST(s.at("version") == 1);
  BOOST_TEST(s.at("upcoming").as_array().size() == 5u);

  auto second = run_keel({"schedule", "put", "cli.yearly-2", "--workflow", "noop3", "--cron", "0 0 1 1 *"});
  BOOST_REQUIRE(second.status == 0);
  auto changed =
      run_keel({"--json", "schedule", "put", "cli.yearly-2", "--workflow", "noop3", "--cron", "30 4 1 1 *"});
  BOOST_REQUIRE(changed.status == 0);
  BOOST_TEST(changed.json().at("changed") == true);
  BOOST_TEST(changed.json().at("cron") == "30 4 1 1 *");
  BOOST_TEST(changed.json().at("time_zone") == "UTC");

  // The table: a header, then a line per schedule.
  auto listed = run_keel({"schedules", "--workflow", "noop3"});
  BOOST_TEST_INFO(listed.err);
  BOOST_TEST(listed.status == 0);
  auto lines = lines_of(listed.out);
  BOOST_REQUIRE(lines.size() == 3u);
  BOOST_TEST(contains(lines[0], "NAME"));
  BOOST_TEST(contains(lines[0], "TIME ZONE"));
  BOOST_TEST(contains(lines[0], "NEXT FIRING"));
  BOOST_TEST(lines[1].starts_with("cli.yearly "));
  BOOST_TEST(contains(lines[1], "noop3"));
  BOOST_TEST(contains(lines[1], "0 0 1 1 *"));
  BOOST_TEST(contains(lines[1], "Europe/Paris"));
  BOOST_TEST(contains(lines[1], " no "));
  BOOST_TEST(contains(lines[1], "-12-31 23:00:00.000Z"));
  BOOST_TEST(lines[2].starts_with("cli.yearly-2 "));
  BOOST_TEST(contains(lines[2], "-01-01 04:30:00.000Z"));
  // A page at a time, as `list` pages runs.
  auto page = run_keel({"schedules", "--workflow", "noop3", "--limit", "1"});
  BOOST_TEST(page.status == 0);
  BOOST_TEST(lines_of(page.out).size() == 2u);
  BOOST_TEST(contains(page.err, R"(--cursor "cli.yearly")"));  // quoted, as `list` writes it
  BOOST_TEST(contains(page.err, "--all"));
  auto next = run_keel({"schedules", "--workflow", "noop3", "--limit", "1", "--cursor", "cli.yearly"});
  BOOST_TEST(lines_of(next.out).size() == 2u);
  BOOST_TEST(contains(next.out, "cli.yearly-2"));
  auto all = run_keel({"--json", "schedules", "--workflow", "noop3", "--limit", "1", "--all"});
  BOOST_REQUIRE(all.status == 0);
  BOOST_TEST(all.json().at("schedules").as_array().size() == 2u);
  BOOST_TEST(all.json().at("next_cursor").is_null());
  BOOST_TEST(lines_of(run_keel({"schedules", "--workflow", "nothing"}).out).size() == 1u);

  auto paused = run_keel({"schedule", "pause", "cli.yearly"});
  BOOST_TEST_INFO(paused.err);
  BOOST_TEST(paused.status == 0);
  BOOST_TEST(paused.out == "cli.yearly: paused\n");
  lines = lines_of(run_keel({"schedules", "--workflow", "noop3"}).out);
  BOOST_REQUIRE(lines.size() == 3u);
  BOOST_TEST(contains(lines[1], " yes "));
  BOOST_TEST(lines[1].ends_with(" -"));  // a paused schedule fires nothing
  BOOST_TEST(contains(run_keel({"schedule", "show", "cli.yearly"}).out, "none while paused"));
  BOOST_TEST(run_keel({"--json", "schedule", "pause", "cli.yearly"}).json().at("paused") == true);
  auto resumed = run_keel({"schedule", "resume", "cli.yearly"});
  BOOST_TEST(resumed.status == 0);
  BOOST_TEST(contains(resumed.out, "cli.yearly: resumed; next firing "));

  auto deleted = run_keel({"schedule", "delete", "cli.yearly"});
  BOOST_TEST_INFO(deleted.err);
  BOOST_TEST(deleted.status == 0);
  BOOST_TEST(deleted.out == "cli.yearly: deleted\n");
  auto deleted_json = run_keel({"--json", "schedule", "delete", "cli.yearly-2"});
  BOOST_TEST(deleted_json.status == 0);
  BOOST_TEST(deleted_json.json() == json::parse(R"({"name":"cli.yearly-2","deleted":true})"));
  for (const auto* sub : {"show", "pause", "resume", "delete"}) {
    auto gone = run_keel({"schedule", sub, "cli.yearly"});
    BOOST_TEST_INFO(sub << ": " << gone.err);
    BOOST_TEST(gone.status == 1);
    BOOST_TEST(contains(gone.err, "keel: schedule_not_found: "));
    BOOST_TEST(contains(gone.err, "(HTTP 404)"));
  }
  BOOST_TEST(lines_of(run_keel({"schedules", "--workflow", "noop3"}).out).size() == 1u);
}

BOOST_AUTO_TEST_CASE(schedule_errors_exit_1_with_the_servers_words_and_bad_arguments_exit_2) {
  auto bad_cron = run_keel({"schedule", "put", "cli.bad", "--workflow", "noop3", "--cron", "61 * * * *"});
  BOOST_TEST(bad_cron.status == 1);
  BOOST_TEST_INFO(bad_cron.err);
  BOOST_TEST(contains(bad_cron.err, "keel: invalid_cron_expression: "));
  BOOST_TEST(contains(bad_cron.err, "61"));
  BOOST_TEST(contains(bad_cron.err, "(HTTP 400)"));
  auto bad_zone = run_keel(
      {"schedule", "put", "cli.bad", "--workflow", "noop3", "--cron", "0 0 1 1 *", "--tz", "Mars/Base"});
  BOOST_TEST(bad_zone.status == 1);
  BOOST_TEST(contains(bad_zone.err, "keel: unknown_time_zone: "));
  BOOST_TEST(contains(bad_zone.err, "Mars/Base"));
  auto unknown =
      run_keel({"schedule", "put", "cli.bad", "--workflow", "no_such_workflow", "--cron", "0 0 1 1 *"});
  BOOST_TEST(unknown.status == 1);
  BOOST_TEST(contains(unknown.err, "keel: unknown_workflow: "));
  BOOST_TEST(contains(unknown.err, "(HTTP 404)"));
  auto bad_name = run_keel({"schedule", "show", "no spaces/or slashes"});
  BOOST_TEST(bad_name.status == 1);
  BOOST_TEST(contains(bad_name.err, "keel: invalid_request: a schedule name is "));
  BOOST_TEST(contains(bad_name.err, "(HTTP 400)"));
  BOOST_TEST(lines_of(run_keel({"schedules", "--workflow", "noop3"}).out).size() == 1u);  // nothing was made

  const auto nowhere = "http://127.0.0.1:" + std::to_string(keel::test::free_port());
  const std::vector<std::vector<std::string>> bad{
      {"schedule"},
      {"schedule", "show"},
      {"schedule", "show", "a", "b"},
      {"schedule", "frobnicate", "a"},
      {"schedule", "put", "a", "--cron", "0 0 1 1 *"},
      {"schedule", "put", "a", "--workflow", "noop3"},
      {"schedule", "put", "a", "--workflow", "noop3", "--cron", "0 0 1 1 *", "--input", "{not json"},
      {"schedule", "put", "a", "--workflow", "noop3", "--cron", "0 0 1 1 *", "--catch-up", "1001"},
      {"schedule", "put", "a", "--workflow", "noop3", "--cron", "0 0 1 1 *", "--priority", "high"},
      {"schedule", "put", "a", "--workflow", "noop3", "--cron", "0 0 1 1 *", "--version", "0"},
      {"schedule", "put", "a", "--workflow", "noop3", "--cron", "0 0 1 1 *", "--timezone", "UTC"},
      {"schedule", "show", "a", "--cron", "0 0 1 1 *"},
      {"schedule", "delete", "a", "--workflow", "noop3"},
      {"schedules", "--limit", "0"},
      {"schedules", "--cron", "x"},
      {"schedules", "extra"},
  };
  for (const auto& args : bad) {
    auto with_url = args;
    with_url.insert(with_url.begin(), {"--url", nowhere});
    auto r = run_keel_env(with_url, {});
    BOOST_TEST_INFO((args.empty() ? std::string() : args[0]) << ": " << r.err);
    BOOST_TEST(r.status == 2);
    BOOST_TEST(contains(r.err, "usage: keel"));
    BOOST_TEST(!contains(r.err, "cannot reach"));
  }
  auto invalid = run_keel_env(
      {"--url", nowhere, "schedule", "put", "a", "--workflow", "w", "--cron", "c", "--input", "{not json"},
      {});
  BOOST_TEST(contains(invalid.err, "invalid JSON for --input"));
  auto not_put = run_keel_env({"--url", nowhere, "schedule", "pause", "a", "--tz", "UTC"}, {});
  BOOST_TEST(contains(not_put.err, "--tz is for `schedule put` only"));
  auto help = run_keel({"help", "schedule"});
  BOOST_TEST(help.status == 0);
  BOOST_TEST(contains(help.out, "--catch-up N"));
  BOOST_TEST(contains(run_keel({"--help"}).out, "schedules"));
}

BOOST_AUTO_TEST_CASE(tail_follows_a_run_to_its_end_showing_each_event_once_in_order) {
  auto started = run_keel({"start", "countdown", "--input", R"({"n":3,"delay_ms":100})"});
  BOOST_REQUIRE(started.status == 0);
  const auto id = lines_of(started.out).at(0);
  auto tail = run_keel({"tail", id, "--json"});
  BOOST_TEST_INFO(tail.err);
  BOOST_TEST(tail.status == 0);
  const auto lines = lines_of(tail.out);
  BOOST_REQUIRE(!lines.empty());
  BOOST_TEST(json::parse(lines.back()).at("kind") == "run_completed");
  const auto ids = event_ids(tail.out);
  for (std::size_t i = 1; i < ids.size(); ++i)
    BOOST_TEST(ids[i - 1] < ids[i]);
  // Human lines: the same events, one line each, and the whole log again (the run has ended).
  auto human = run_keel({"tail", id, "--no-frames"});
  BOOST_TEST(human.status == 0);
  BOOST_TEST(lines_of(human.out).size() == ids.size());
  BOOST_TEST(contains(human.out, "step_completed  tick_0"));
  BOOST_TEST(contains(lines_of(human.out).back(), "run_completed"));
  BOOST_TEST(contains(lines_of(human.out).back(), R"({"done":3})"));
}

BOOST_AUTO_TEST_CASE(tail_without_a_run_follows_every_run_live_with_its_frames_until_sigint) {
  static keel::test::temp_dir dir;
  keel_process tail(dir.path(), {"--url", shared_server().url(), "tail", "--json"});
  // It follows from now on: live once it shows a run started after it.
  bool live = false;
  for (int attempt = 0; attempt < 50 && !live; ++attempt) {
    auto r = run_keel({"start", "noop3"});
    BOOST_REQUIRE(r.status == 0);
    const auto id = lines_of(r.out).at(0);
    live = keel::test::wait_until([&] { return contains(tail.out(), id); }, 200ms);
  }
  BOOST_REQUIRE(live);

  auto started = run_keel({"start", "countdown", "--input", R"({"n":3,"delay_ms":50})"});
  BOOST_REQUIRE(started.status == 0);
  const auto id = lines_of(started.out).at(0);
  std::vector<json::value> events;
  auto ended = [&] {
    events.clear();
    bool done = false;
    for (const auto& line : lines_of(tail.out())) {
      auto ev = json::parse(line);
      if (ev.at("run_id") != id.c_str()) continue;
      done = done || ev.at("kind") == "run_completed";
      events.push_back(std::move(ev));
    }
    return done;
  };
  BOOST_REQUIRE(keel::test::wait_until(ended, 30s));
  std::vector<std::int64_t> left;
  std::int64_t last_id = 0;
  for (const auto& ev : events) {
    if (ev.at("kind") == "progress") {
      left.push_back(ev.at("data").at("frame").at("left").to_number<std::int64_t>());
      continue;
    }
    BOOST_TEST(ev.at("id").to_number<std::int64_t>() > last_id);  // each once, in order
    last_id = ev.at("id").to_number<std::int64_t>();
  }
  BOOST_TEST(left == (std::vector<std::int64_t>{2, 1, 0}), boost::test_tools::per_element());

  tail.signal(SIGINT);
  const auto status = tail.wait(10s);
  BOOST_REQUIRE(status.has_value());
  BOOST_TEST(*status == 0);
}

BOOST_AUTO_TEST_CASE(tail_resumes_after_keeld_is_killed_and_restarted_without_a_gap_or_a_duplicate,
                     *boost::unit_test::timeout(240)) {
  keel::test::temp_dir dir;
  const auto port = keel::test::free_port();
  const auto url = "http://127.0.0.1:" + std::to_string(port);
  auto keeld = std::make_unique<keel::test::keeld_process>(KEEL_KEELD_PATH, dir.path(), port);
  auto started =
      run_keel_env({"--url", url, "start", "countdown", "--input", R"({"n":8,"delay_ms":300})"}, {});
  BOOST_REQUIRE(started.status == 0);
  const auto id = lines_of(started.out).at(0);

  keel_process tail(dir.path(), {"--url", url, "tail", id, "--json", "--no-frames"});
  auto ticks = [&] {
    int n = 0;
    for (const auto& line : lines_of(tail.out()))
      n += contains(line, R"("kind":"step_completed")") && contains(line, R"("name":"tick_)") ? 1 : 0;
    return n;
  };
  BOOST_REQUIRE(keel::test::wait_until([&] { return ticks() >= 3; }, 60s));
  BOOST_TEST(keeld->stop(SIGKILL) == -1);  // no goodbye: the stream just drops
  keeld.reset();
  const auto before = event_ids(tail.out());
  keeld = std::make_unique<keel::test::keeld_process>(KEEL_KEELD_PATH, dir.path(), port);

  const auto status = tail.wait(120s);
  BOOST_TEST_INFO(tail.err());
  BOOST_REQUIRE(status.has_value());
  BOOST_TEST(*status == 0);
  BOOST_TEST(contains(tail.err(), "reconnecting"));
  const auto shown = event_ids(tail.out());
  BOOST_TEST(shown.size() > before.size());  // it went on after the restart
  BOOST_TEST(json::parse(lines_of(tail.out()).back()).at("kind") == "run_completed");

  // The run's whole log, read afresh: the tail showed exactly it, in order, once each.
  keel::test::sse_reader whole(port, "/v1/runs/" + id + "/events?frames=false");
  std::vector<std::int64_t> all;
  whole.read_until([&](const keel::test::sse_event& ev) {
    if (ev.id) all.push_back(std::stoll(*ev.id));
    return ev.json().at("kind") == "run_completed";
  });
  BOOST_TEST(shown == all, boost::test_tools::per_element());
  BOOST_TEST(keeld->stop(SIGTERM) == 0);
}

BOOST_AUTO_TEST_SUITE_END()
