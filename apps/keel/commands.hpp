// The keel commands: what each takes, its help, and what it does with the API.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "http_client.hpp"

namespace keel::cli {

/// Options every command takes.
struct global_options {
  bool json = false;  ///< print the API's JSON instead of the human form
};

/// A command's arguments and options, as parsed (each option checked to be one the command takes).
struct invocation {
  std::vector<std::string> args;
  std::map<std::string, std::string, std::less<>> values;
  std::set<std::string, std::less<>> flags;

  [[nodiscard]] const std::string* value(std::string_view name) const {
    auto it = values.find(name);
    return it == values.end() ? nullptr : &it->second;
  }
  [[nodiscard]] bool flag(std::string_view name) const { return flags.contains(name); }
};

struct command_spec {
  std::string_view name;
  std::string_view synopsis;  ///< "get ID"
  std::string_view summary;   ///< one line for the list of commands
  std::string_view details;   ///< its options and behaviour, for `keel help NAME`
  std::size_t min_args = 0;
  std::size_t max_args = 0;
  std::vector<std::string_view> value_options;  ///< "--input", …
  std::vector<std::string_view> flag_options;   ///< "--all", …
  /// Runs it; the process's exit status. Throws usage_error, api_error, unreachable.
  int (*run)(http_client& client, const global_options& g, const invocation& inv) = nullptr;
};

/// Every command, in the order `keel --help` lists them.
const std::vector<command_spec>& commands();

/// The command named `name`, or nullptr.
const command_spec* find_command(std::string_view name);

}  // namespace keel::cli
