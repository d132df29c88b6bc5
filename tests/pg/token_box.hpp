// A test's record of the hook tokens its workflows handed out (composition tests).
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "keel/engine/context.hpp"

namespace keel::test {

/// Tokens a workflow handed out, by hook name, in the order they were handed out.
struct token_box {
  std::mutex m;
  std::map<std::string, std::vector<std::string>> by_name;
  void put(const keel::hook& h) {
    std::lock_guard lock(m);
    by_name[h.name()].push_back(h.token());
  }
  /// The latest ("" if none).
  std::string get(const std::string& name) {
    std::lock_guard lock(m);
    auto it = by_name.find(name);
    return it == by_name.end() ? std::string() : it->second.back();
  }
  /// The first ("" if none).
  std::string first(const std::string& name) {
    std::lock_guard lock(m);
    auto it = by_name.find(name);
    return it == by_name.end() ? std::string() : it->second.front();
  }
};

}  // namespace keel::test
