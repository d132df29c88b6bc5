// A real keel-test-worker child process for crash tests, and the effect files its workflows write.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

extern char** environ;

namespace keel::test {

/// A child process running `path` with `args`; SIGKILLed by the destructor if still running.
class worker_process {
 public:
  worker_process(const std::string& path, std::vector<std::string> args) {
    args.insert(args.begin(), path);
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
      throw std::runtime_error("cannot spawn " + path);
    }
  }
  ~worker_process() {
    if (pid_ > 0) kill_hard();
  }
  worker_process(const worker_process&) = delete;
  worker_process& operator=(const worker_process&) = delete;

  void signal(int sig) { ::kill(pid_, sig); }
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

#ifdef KEEL_TEST_WORKER_PATH
/// A keel-test-worker child process (the path comes from the test target's compile definitions).
class spawned_worker : public worker_process {
 public:
  explicit spawned_worker(std::vector<std::string> args)
      : worker_process(KEEL_TEST_WORKER_PATH, std::move(args)) {}
};
#endif

/// The lines of a file (a worker's effects file: one line per step execution).
inline std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

/// How often each line occurs in a file.
inline std::map<std::string, int> count_lines(const std::string& path) {
  std::map<std::string, int> counts;
  for (auto& l : read_lines(path))
    ++counts[l];
  return counts;
}

}  // namespace keel::test
