// What a workflow declares for storage to enforce (event triggers, cancel-on rules, debounce, concurrency):
// checking it, and what a worker records of it.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "keel/engine/workflow.hpp"
#include "keel/storage/trigger_records.hpp"

namespace keel::detail {

/// The path a JSON pointer (RFC 6901) names, as PostgreSQL's #> takes it: "" is the whole value, "/a/0/b"
/// the keys or indexes a, 0, b (~1 reads '/', ~0 '~'). nullopt: not a JSON pointer.
std::optional<std::vector<std::string>> json_pointer_path(std::string_view pointer);

/// The most a concurrency key's limit can be (each unit is a slot row).
inline constexpr int k_max_concurrency_limit = 10'000;
/// The longest throttle window.
inline constexpr std::chrono::milliseconds k_longest_throttle_window{366LL * 24 * 3600 * 1000};

/// Throws std::invalid_argument if what `def` declares for storage to enforce (triggers, cancel_on,
/// debounce, concurrency) is malformed.
void check_declarations(const workflow_definition& def);

/// What a worker records of the workflow versions it registers.
std::vector<storage::workflow_declaration> declarations_of(
    const std::unordered_map<std::string, std::map<int, workflow_definition>>& workflows);

}  // namespace keel::detail
