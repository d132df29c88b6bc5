// A run that kills every worker that runs it is dead-lettered by real worker processes, not run forever.
#define BOOST_TEST_MODULE dead_letter
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "engine_fixture.hpp"

extern char** environ;

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;

namespace {

/// A keel-test-worker child process; SIGKILLed by the destructor if still running.
class worker_process {
 public:
  explicit worker_process(std::vector<std::string> args) {
    args.insert(args.begin(), KEEL_TEST_WORKER_PATH);
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
      throw std::runtime_error("cannot spawn keel-test-worker");
    }
  }
  ~worker_process() {
    if (pid_ > 0) kill_hard();
  }
  worker_process(const worker_process&) = delete;
  worker_process& operator=(const worker_process&) = delete;

  void kill_hard() {
    ::kill(pid_, SIGKILL);
    reap();
  }
  /// SIGTERM, then the exit status (0 when it stopped cleanly).
  int terminate() {
    ::kill(pid_, SIGTERM);
    return reap();
  }

 private:
  int reap() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  pid_t pid_ = -1;
};

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

std::map<std::string, int> count_lines(const std::string& path) {
  std::map<std::string, int> counts;
  for (auto& l : read_lines(path))
    ++counts[l];
  return counts;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(a_run_that_loses_its_worker_past_max_recoveries_is_dead_lettered_not_rerun,
                     *boost::unit_test::timeout(240)) {
  auto db = fresh_database();
  temp_dir dir;
  const std::string effects = dir.path() + "/effects", marker = dir.path() + "/marker";
  // Only migrates and enqueues: the workflow's body lives in the worker processes.
  engine producer(options_for(db));
  add_workflow(producer, "crashable",
               [](context&, json::value) -> asio::awaitable<json::value> { co_return nullptr; });
  BOOST_REQUIRE(producer.tick_blocking());
  auto id = producer.enqueue_blocking("crashable", json::object{}).value();

  const std::vector<std::string> args{
      "--db",      db,      "--effects",        effects, "--lease-ms", "500",
      "--hold-ms", "60000", "--max-recoveries", "2",     "--marker",   marker};
  // Killed inside step s2 three times: the first execution, then two recoveries (max_recoveries = 2).
  for (int kill = 1; kill <= 3; ++kill) {
    BOOST_TEST_CONTEXT("kill " << kill) {
      worker_process w(args);
      BOOST_REQUIRE(wait_until([&] { return !read_lines(marker).empty(); }, 30s));
      w.kill_hard();
      std::filesystem::remove(marker);
      BOOST_TEST(query_value(db, "SELECT status FROM keel.runs") == "running");
      BOOST_TEST(count_lines(effects)[id + " s2"] == kill);
    }
  }

  // A third loss is past the limit: the next claim fails the run instead of running s2 a fourth time.
  worker_process last(args);
  auto run = producer.wait_blocking(id, 30s);
  BOOST_REQUIRE(run);
  BOOST_TEST(to_string(run->status) == "failed");
  BOOST_REQUIRE(run->error.is_object());
  BOOST_TEST(run->error.at("code").as_string() == "dead_lettered");
  BOOST_TEST(run->error.at("recoveries").to_number<int>() == 3);
  BOOST_TEST(!run->owner.has_value());
  BOOST_TEST(run->claims == 3);
  BOOST_REQUIRE_EQUAL(run->steps.size(), 1u);  // s1 only: s2 never completed
  auto counts = count_lines(effects);
  BOOST_TEST(counts[id + " s1"] == 1);
  BOOST_TEST(counts[id + " s2"] == 3);
  BOOST_TEST(counts[id + " s3"] == 0);
  BOOST_TEST(counts[id + " completed"] == 0);
  BOOST_TEST(read_lines(marker).empty());
  BOOST_TEST(last.terminate() == 0);
}

BOOST_AUTO_TEST_SUITE_END()
