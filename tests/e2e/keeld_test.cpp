// keeld end to end: the README's main job on its embedded PostgreSQL, as a real process.
#define BOOST_TEST_MODULE keeld
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <sstream>
#include <string>

#include "pg_harness.hpp"

namespace {

struct outcome {
  int status = -1;
  std::string output;
};

/// Runs a shell command, capturing stdout and stderr together.
outcome run(const std::string& command) {
  outcome o;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  BOOST_REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  while (std::fgets(buf.data(), buf.size(), p) != nullptr)
    o.output += buf.data();
  const int st = ::pclose(p);
  o.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return o;
}

/// Lines of `text` that contain every one of `parts`. (No std::regex: GCC 12 warns inside it under -O1.)
std::size_t count_lines(const std::string& text, std::initializer_list<std::string_view> parts) {
  std::istringstream in(text);
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    bool all = true;
    for (auto p : parts)
      all = all && line.find(p) != std::string::npos;
    if (all) ++n;
  }
  return n;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(unit)

BOOST_AUTO_TEST_CASE(keeld_runs_its_demonstration_batch_on_an_embedded_postgres_and_exits) {
  keel::test::temp_dir dir;
  const std::string cmd = std::string("cd ") + dir.path() + " && " + KEEL_KEELD_PATH;
  auto first = run(cmd + " --demo-runs 4");
  BOOST_TEST_INFO(first.output);
  BOOST_TEST(first.status == 0);
  BOOST_TEST(count_lines(first.output, {" order_fulfillment completed: {"}) == 2u);
  BOOST_TEST(count_lines(first.output, {" user_onboarding completed: {"}) == 2u);
  BOOST_TEST(first.output.find("demonstration batch of 4 runs finished") != std::string::npos);
  // The retrying payment step shows its retry (every third order fails its first attempt).
  BOOST_TEST(count_lines(first.output, {"step_retrying charge_payment"}) >= 1u);

  // A second start reuses the same data directory: the cluster and its runs are still there.
  auto second = run(cmd + " --demo-runs 1");
  BOOST_TEST_INFO(second.output);
  BOOST_TEST(second.status == 0);
  BOOST_TEST(second.output.find("initializing a new cluster") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(keeld_rejects_an_unknown_option_with_usage) {
  auto r = run(std::string(KEEL_KEELD_PATH) + " --no-such-flag");
  BOOST_TEST(r.status == 2);
  BOOST_TEST(r.output.find("--database-url") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
