#include "interrupt.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>

namespace keel::cli {
namespace {

int pipe_fds[2] = {-1, -1};
volatile std::sig_atomic_t got_interrupt = 0;

extern "C" void on_sigint(int) {
  got_interrupt = 1;
  const char byte = 1;
  const int saved = errno;  // a handler must leave errno as it found it
  [[maybe_unused]] auto n = ::write(pipe_fds[1], &byte, 1);
  errno = saved;
}

}  // namespace

void catch_interrupts() {
  if (pipe_fds[0] >= 0) return;
  if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) return;  // then SIGINT keeps killing the process
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
}

int interrupt_fd() noexcept {
  return pipe_fds[0];
}

bool interrupted() noexcept {
  return got_interrupt != 0;
}

void sleep_unless_interrupted(int ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!interrupted()) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now())
            .count();
    if (left <= 0) return;
    pollfd p{interrupt_fd(), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(left));
  }
}

}  // namespace keel::cli
