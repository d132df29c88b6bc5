// Debounce: which key and window an enqueue collapses on, from the workflow's rule and the enqueue's
// options. Storage's debounce.cpp makes the collapse one upsert.
#include <boost/json/serialize.hpp>

#include "engine_impl.hpp"
#include "hook_token.hpp"
#include "keel/storage/json_limits.hpp"

namespace keel::detail {

result<std::optional<debounce_key>> debounce_of(const workflow_definition& def,
                                                const boost::json::value& input,
                                                const enqueue_options& options) {
  if (!options.debounce_key && !options.debounce_window && !def.debounce) return std::nullopt;
  const auto window = options.debounce_window ? *options.debounce_window
                      : def.debounce          ? def.debounce->window
                                              : std::chrono::milliseconds(0);
  if (window.count() <= 0) return storage::errc::invalid_argument;
  std::optional<std::string> key = options.debounce_key;
  if (!key && def.debounce) {
    // The value at the rule's pointer (checked at registration): a string as it is, anything else as its JSON
    // text; one that is no valid key (empty, long, not UTF-8) by its digest.
    boost::system::error_code ec;
    if (const auto* v = input.find_pointer(def.debounce->key, ec); v != nullptr) {
      key = v->is_string() ? std::string(v->get_string()) : boost::json::serialize(*v);
      if (key->empty() || key->size() > storage::k_max_key_bytes || !storage::is_valid_utf8(*key))
        key = "sha256:" + hook_token_hash(*key);
    }
  }
  if (!key) {
    if (!def.debounce) return storage::errc::invalid_argument;  // a window, and nothing to key it on
    return std::nullopt;                                        // an input without the rule's value
  }
  if (options.idempotency_key || options.run_at) return storage::errc::invalid_argument;
  return debounce_key{std::move(*key), window};
}

}  // namespace keel::detail
