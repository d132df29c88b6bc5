// engine::publish_event: the runs an event starts (workflow triggers) and those it cancels (cancel_on), from
// what the newest version of each workflow declared when a worker registering it started.
#include "event_triggers.hpp"

#include <algorithm>
#include <stdexcept>
#include <tuple>

#include "engine_impl.hpp"
#include "hook_token.hpp"
#include "keel/storage/json_limits.hpp"

namespace keel {

namespace detail {

std::optional<std::vector<std::string>> json_pointer_path(std::string_view pointer) {
  std::vector<std::string> path;
  if (pointer.empty()) return path;
  if (pointer.front() != '/') return std::nullopt;
  std::string token;
  for (std::size_t i = 1; i <= pointer.size(); ++i) {
    if (i == pointer.size() || pointer[i] == '/') {
      path.push_back(std::move(token));
      token.clear();
      continue;
    }
    if (pointer[i] != '~') {
      token.push_back(pointer[i]);
      continue;
    }
    if (i + 1 >= pointer.size() || (pointer[i + 1] != '0' && pointer[i + 1] != '1')) return std::nullopt;
    token.push_back(pointer[i + 1] == '0' ? '~' : '/');
    ++i;
  }
  return path;
}

namespace {

bool valid_event_name(const std::string& name) {
  return !name.empty() && name.size() <= storage::k_max_key_bytes && storage::is_valid_utf8(name) &&
         name.find('\0') == std::string::npos;
}

}  // namespace

void check_declarations(const workflow_definition& def) {
  if (def.throttle &&
      (def.throttle->limit <= 0 || def.throttle->limit > k_max_concurrency_limit ||
       def.throttle->window.count() <= 0 || def.throttle->window > k_longest_throttle_window ||
       !json_pointer_path(def.throttle->key)))
    throw std::invalid_argument(
        "workflow '" + def.name +
        "': throttle needs a limit from 1 to 10,000, a window from 1 ms to a year and a "
        "JSON pointer key (\"\" or \"/key/...\")");
  if (def.concurrency && (def.concurrency->limit <= 0 || def.concurrency->limit > k_max_concurrency_limit ||
                          !json_pointer_path(def.concurrency->key)))
    throw std::invalid_argument("workflow '" + def.name +
                                "': concurrency needs a limit from 1 to 10,000 and a JSON pointer key (\"\" "
                                "or \"/key/...\")");
  if (def.fairness && (def.fairness->key.empty() || !json_pointer_path(def.fairness->key)))
    throw std::invalid_argument("workflow '" + def.name +
                                "': fairness needs a JSON pointer key into the input (\"/key/...\")");
  if (def.debounce && (def.debounce->window.count() <= 0 || !json_pointer_path(def.debounce->key)))
    throw std::invalid_argument(
        "workflow '" + def.name +
        "': debounce needs a window > 0 and a JSON pointer key (\"\" or \"/key/...\")");
  for (const auto& t : def.triggers) {
    if (!valid_event_name(t))
      throw std::invalid_argument("workflow '" + def.name +
                                  "': a trigger's event name is empty, over 255 bytes "
                                  "or not UTF-8");
  }
  for (const auto& c : def.cancel_on) {
    if (!valid_event_name(c.event))
      throw std::invalid_argument("workflow '" + def.name +
                                  "': a cancel_on event name is empty, over 255 "
                                  "bytes or not UTF-8");
    if (!json_pointer_path(c.match) || !json_pointer_path(c.input_match))
      throw std::invalid_argument("workflow '" + def.name + "': cancel_on '" + c.event +
                                  "': match and input_match must be JSON pointers (\"\" or \"/key/...\")");
  }
}

std::vector<storage::workflow_declaration> declarations_of(
    const std::unordered_map<std::string, std::map<int, workflow_definition>>& workflows) {
  std::vector<storage::workflow_declaration> out;
  for (const auto& [name, versions] : workflows) {
    for (const auto& [version, def] : versions) {
      storage::workflow_declaration d{name,         version,      def.triggers, {},           std::nullopt,
                                      std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt};
      if (def.fairness) d.fair_key = json_pointer_path(def.fairness->key);
      if (def.concurrency) {
        d.concurrency_limit = def.concurrency->limit;
        if (!def.concurrency->key.empty()) d.concurrency_key = json_pointer_path(def.concurrency->key);
      }
      if (def.throttle) {
        d.throttle_limit = def.throttle->limit;
        d.throttle_window = def.throttle->window;
        if (!def.throttle->key.empty()) d.throttle_key = json_pointer_path(def.throttle->key);
      }
      for (const auto& c : def.cancel_on) {
        auto match = json_pointer_path(c.match).value_or(std::vector<std::string>{});
        auto input = c.input_match.empty() ? match : json_pointer_path(c.input_match).value_or(match);
        d.cancel_on.push_back({c.event, std::move(match), std::move(input)});
      }
      out.push_back(std::move(d));
    }
  }
  // One order in every process: concurrent declarations of the same rows then never deadlock.
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::tie(a.workflow, a.version) < std::tie(b.workflow, b.version);
  });
  return out;
}

}  // namespace detail

namespace {

/// Cancels ask this many runs at a time; runs asked already are not read again.
constexpr std::size_t k_cancel_batch = 1000;

boost::asio::awaitable<result<published_event>> publish(detail::engine_impl& impl, std::string name,
                                                        boost::json::value payload, publish_options options) {
  if (options.idempotency_key &&
      (options.idempotency_key->empty() || options.idempotency_key->size() > storage::k_max_key_bytes ||
       !storage::is_valid_utf8(*options.idempotency_key)))
    co_return storage::errc::invalid_argument;
  auto audience = co_await impl.store_.event_subscribers(name, payload, k_cancel_batch);
  if (!audience) co_return audience.error();
  published_event out;
  for (const auto& w : audience->start) {
    storage::new_run run{new_run_id(), w.workflow,   w.version,    payload,      std::nullopt, 0,
                         std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt,
                         std::nullopt, std::nullopt, std::nullopt};
    if (options.idempotency_key) {
      // One run per (event, key, workflow), whatever their lengths: the key is their digest.
      const std::string identity = name + '\0' + *options.idempotency_key + '\0' + w.workflow;
      run.idempotency_key = "event:" + detail::hook_token_hash(identity);
    }
    auto r = co_await impl.store_.enqueue(run);
    if (!r && r.error() == storage::errc::data_rejected) co_return errc::invalid_input;
    if (!r) co_return r.error();
    if (r->conflict) co_return errc::idempotency_conflict;
    impl.emit(
        run_event{run_event::kind::enqueued, r->id, w.workflow, {}, 0, r->created ? "new" : "existing"});
    out.started.push_back({w.workflow, r->id, r->created});
  }
  if (!out.started.empty()) impl.wake_claimer();
  // Cancels: never the runs this publish starts (a repeat with the key would otherwise cancel the run it
  // returns, its input matching the payload), batch after batch of runs not yet asked (a run asked to cancel
  // leaves the next read).
  std::vector<run_id> spared;
  for (const auto& s : out.started)
    spared.push_back(s.id);
  const cancel_options grace;  // named: GCC 12 destroys a braced temporary inside co_await twice
  for (auto ids = std::move(audience->cancel);;) {
    const auto read = ids.size();
    for (const auto& id : ids) {
      if (std::find(spared.begin(), spared.end(), id) != spared.end()) continue;
      auto c = co_await impl.cancel(id, grace);
      if (c) out.cancelled.push_back(id);  // a run that finished meanwhile: nothing to do
    }
    if (read < k_cancel_batch) break;
    auto more = co_await impl.store_.event_subscribers(name, payload, k_cancel_batch, spared);
    if (!more) co_return more.error();
    ids = std::move(more->cancel);
  }
  co_return out;
}

}  // namespace

boost::asio::awaitable<result<published_event>> engine::publish_event(std::string_view name,
                                                                      const boost::json::value& payload,
                                                                      const publish_options& options) {
  return publish(*impl_, std::string(name), payload, options);
}

result<published_event> engine::publish_event_blocking(std::string_view name,
                                                       const boost::json::value& payload,
                                                       const publish_options& options) {
  return impl_->block_on(publish(*impl_, std::string(name), payload, options));
}

}  // namespace keel
