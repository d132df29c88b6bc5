// The three ways a keel command fails, each with its exit status: bad arguments (2), an answer from the
// server that is an error (1), or no answer at all (1).
#pragma once

#include <stdexcept>
#include <string>

namespace keel::cli {

// Exceptions rather than result<T>: every one of these ends the process, from wherever it is found, and
// main() is the only place that turns them into a message and an exit status.

/// The command line is wrong: exit 2 with the usage of `command` ("" for the general one).
class usage_error : public std::runtime_error {
 public:
  usage_error(std::string message, std::string command = {})
      : std::runtime_error(std::move(message)), command_(std::move(command)) {}
  [[nodiscard]] const std::string& command() const noexcept { return command_; }

 private:
  std::string command_;
};

/// The server answered with an error (`{"error":{"code","message"}}`): exit 1.
class api_error : public std::runtime_error {
 public:
  api_error(int status, std::string code, std::string message)
      : std::runtime_error(std::move(message)), status_(status), code_(std::move(code)) {}
  [[nodiscard]] int status() const noexcept { return status_; }
  [[nodiscard]] const std::string& code() const noexcept { return code_; }

 private:
  int status_;
  std::string code_;
};

/// No usable answer: the server cannot be reached, the connection dropped, or it timed out: exit 1.
class unreachable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace keel::cli
