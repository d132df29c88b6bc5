// The public engine: each call checks what it is given and hands it to engine_impl (engine.cpp, the
// executor), on the control strand or the store as the call needs.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>
#include <future>
#include <stdexcept>

#include "engine_impl.hpp"
#include "event_triggers.hpp"
#include "http_client.hpp"
#include "keel/common/log.hpp"
#include "keel/engine/engine.hpp"

namespace keel {

namespace asio = boost::asio;
namespace json = boost::json;

namespace detail {

template <class T>
T engine_impl::block_on(asio::awaitable<T> aw) {
  if (ioc_.get_executor().running_in_this_thread()) {
    throw std::logic_error(
        "keel::engine: a _blocking call from one of the engine's own threads would deadlock");
  }
  return asio::co_spawn(ioc_, std::move(aw), asio::use_future).get();
}
// For the _blocking calls defined in other files and engine.cpp's own (co_spawn and futures compiled here
// only).
template result<run_list> engine_impl::block_on(asio::awaitable<result<run_list>>);
template result<hook_list> engine_impl::block_on(asio::awaitable<result<hook_list>>);
template result<schedule_put> engine_impl::block_on(asio::awaitable<result<schedule_put>>);
template result<schedule_info> engine_impl::block_on(asio::awaitable<result<schedule_info>>);
template result<schedule_list> engine_impl::block_on(asio::awaitable<result<schedule_list>>);
template result<void> engine_impl::block_on(asio::awaitable<result<void>>);
template result<published_event> engine_impl::block_on(asio::awaitable<result<published_event>>);
template result<purged_runs> engine_impl::block_on(asio::awaitable<result<purged_runs>>);

}  // namespace detail

std::string_view to_string(run_event::kind k) noexcept {
  switch (k) {
    case run_event::kind::enqueued:
      return "enqueued";
    case run_event::kind::claimed:
      return "claimed";
    case run_event::kind::step_completed:
      return "step_completed";
    case run_event::kind::step_retrying:
      return "step_retrying";
    case run_event::kind::step_failed:
      return "step_failed";
    case run_event::kind::completed:
      return "completed";
    case run_event::kind::failed:
      return "failed";
    case run_event::kind::released:
      return "released";
    case run_event::kind::abandoned:
      return "abandoned";
    case run_event::kind::dead_lettered:
      return "dead_lettered";
    case run_event::kind::sleeping:
      return "sleeping";
    case run_event::kind::waiting:
      return "waiting";
    case run_event::kind::continued:
      return "continued";
    case run_event::kind::cancelled:
      return "cancelled";
  }
  return "unknown";
}

engine::engine(engine_options options) : impl_(std::make_unique<detail::engine_impl>(std::move(options))) {}

engine::~engine() {
  try {
    stop_blocking();
  } catch (const std::exception& e) {
    log::error("engine", std::string("stop failed: ") + e.what());
  }
}

void engine::set_input_check(std::string workflow, int version,
                             std::function<std::optional<std::string>(const boost::json::value&)> check) {
  impl_->input_checks_[{std::move(workflow), version}] = std::move(check);
}

std::optional<std::string> engine::input_error(std::string_view workflow, std::optional<int> version,
                                               const boost::json::value& input) const {
  const std::string name(workflow);
  const auto v = impl_->registered_version(name, version);
  if (!v) return std::nullopt;
  const auto it = impl_->input_checks_.find({name, *v});
  if (it == impl_->input_checks_.end()) return std::nullopt;
  return it->second(input);
}

void engine::register_workflow(workflow_definition def) {
  detail::check_declarations(def);
  auto name = def.name;
  const int version = def.version;
  impl_->input_checks_.erase({name, version});  // a typed registration sets its own after this
  if (!impl_->metrics_.contains(name))
    impl_->metrics_.emplace(name, std::make_unique<detail::workflow_metrics>());
  impl_->workflows_[std::move(name)].insert_or_assign(version, std::move(def));
}

engine_metrics engine::metrics() const {
  engine_metrics out;
  for (const auto& [name, m] : impl_->metrics_) {
    out.workflows.push_back({name, m->step_seconds.snapshot(), m->completed.load(std::memory_order_relaxed),
                             m->failed.load(std::memory_order_relaxed),
                             m->cancelled.load(std::memory_order_relaxed)});
  }
  std::sort(out.workflows.begin(), out.workflows.end(),
            [](const auto& a, const auto& b) { return a.workflow < b.workflow; });
  out.store = impl_->store_.metrics();
  out.retention_runs_removed = impl_->retention_runs_removed_.load(std::memory_order_relaxed);
  out.retention_rows_removed = impl_->retention_rows_removed_.load(std::memory_order_relaxed);
  return out;
}

result<void> engine::start_blocking() {
  // ctx.fetch's TLS context reads the certificate authorities' files: here, on the caller's thread, rather
  // than on a run's, and a bad fetch_ca_file shows at start rather than at the first fetch.
  try {
    (void)detail::tls_client_context(impl_->options_.fetch_ca_file);
  } catch (const std::exception& e) {
    log::error("engine", std::string("ctx.fetch over TLS will fail: ") + e.what());
  }
  return impl_->start();
}
boost::asio::awaitable<void> engine::stop(std::chrono::milliseconds deadline) {
  return impl_->stop(deadline);
}
void engine::stop_blocking(std::chrono::milliseconds deadline) {
  impl_->block_on(impl_->stop(deadline));
}

boost::asio::awaitable<result<std::size_t>> engine::tick() {
  return impl_->tick();
}
result<std::size_t> engine::tick_blocking() {
  if (auto m = impl_->migrate_blocking(); !m) return m.error();
  // What its workflows declare, before its enqueues need it (once here, not once per concurrent enqueue).
  if (auto d = impl_->declare_blocking(); !d) return d.error();
  return impl_->block_on(impl_->tick());
}

namespace {

/// A payload's limits, checked before the value is copied (a copy of a value nested too deep recurses past
/// the stack). `what` names the call in the log ("enqueue refused: input ...").
result<void> check_payload(const boost::json::value& payload, const storage::json_limits& limits,
                           std::string_view what) {
  std::string why;
  auto r = storage::check_json(payload, limits, &why);
  if (!r) log::warn("engine", std::string(what) + " " + why);
  return r;
}

/// An awaitable that completes at once with `ec` (a call refused before it reached the engine).
template <class T>
boost::asio::awaitable<result<T>> refused(error_code ec) {
  co_return ec;
}

/// The run id of an enqueue outcome.
boost::asio::awaitable<result<run_id>> id_of(boost::asio::awaitable<result<enqueued>> submitted) {
  auto r = co_await std::move(submitted);
  if (!r) co_return r.error();
  co_return std::move(r->id);
}

}  // namespace

boost::asio::awaitable<result<run_id>> engine::enqueue(std::string_view workflow,
                                                       const boost::json::value& input,
                                                       const enqueue_options& options) {
  // Not a coroutine itself: the arguments are copied (or refused) before this returns.
  if (auto c = check_payload(input, impl_->store_.options().limits, "enqueue refused: input"); !c)
    return refused<run_id>(c.error());
  return id_of(impl_->enqueue(std::string(workflow), input, options));
}

boost::asio::awaitable<result<enqueued>> engine::submit(std::string_view workflow,
                                                        const boost::json::value& input,
                                                        const enqueue_options& options) {
  // Not a coroutine itself, as enqueue.
  if (auto c = check_payload(input, impl_->store_.options().limits, "enqueue refused: input"); !c)
    return refused<enqueued>(c.error());
  return impl_->enqueue(std::string(workflow), input, options);
}

std::vector<registered_workflow> engine::workflows() const {
  std::vector<registered_workflow> out;
  for (const auto& [name, versions] : impl_->workflows_) {
    for (const auto& [version, def] : versions)
      out.push_back({name, version, def.input_example, def.description});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.name != b.name ? a.name < b.name : a.version < b.version;
  });
  return out;
}
result<run_id> engine::enqueue_blocking(std::string_view workflow, const boost::json::value& input,
                                        const enqueue_options& options) {
  if (auto c = check_payload(input, impl_->store_.options().limits, "enqueue refused: input"); !c)
    return c.error();
  auto r = impl_->block_on(impl_->enqueue(std::string(workflow), input, options));
  if (!r) return r.error();
  return std::move(r->id);
}

boost::asio::awaitable<result<run_info>> engine::get(std::string_view id) {
  return impl_->get(run_id(id));
}
result<run_info> engine::get_blocking(std::string_view id) {
  return impl_->block_on(impl_->get(run_id(id)));
}

boost::asio::awaitable<result<run_info>> engine::wait(std::string_view id,
                                                      std::chrono::milliseconds timeout) {
  return impl_->wait(run_id(id), timeout);
}
result<run_info> engine::wait_blocking(std::string_view id, std::chrono::milliseconds timeout) {
  return impl_->block_on(impl_->wait(run_id(id), timeout));
}

boost::asio::awaitable<result<run_status>> engine::cancel(std::string_view id,
                                                          const cancel_options& options) {
  return impl_->cancel(run_id(id), options);
}
result<run_status> engine::cancel_blocking(std::string_view id, const cancel_options& options) {
  return impl_->block_on(impl_->cancel(run_id(id), options));
}

boost::asio::awaitable<result<void>> engine::send_event(std::string_view id, std::string_view name,
                                                        const boost::json::value& payload,
                                                        const event_options& options) {
  // Not a coroutine itself: the payload is checked before it is copied, and the arguments are copied (or
  // refused) before this returns.
  if (auto c = check_payload(payload, impl_->store_.options().limits, "event refused: payload"); !c)
    return refused<void>(c.error());
  return impl_->send_event(
      storage::event_delivery{run_id(id), std::string(name), payload, options.idempotency_key});
}
result<void> engine::send_event_blocking(std::string_view id, std::string_view name,
                                         const boost::json::value& payload, const event_options& options) {
  if (auto c = check_payload(payload, impl_->store_.options().limits, "event refused: payload"); !c)
    return c.error();
  return impl_->block_on(impl_->send_event(
      storage::event_delivery{run_id(id), std::string(name), payload, options.idempotency_key}));
}

boost::asio::awaitable<result<hook_resumption>> engine::resume_hook(std::string_view token,
                                                                    const boost::json::value& payload,
                                                                    const resume_options& options) {
  if (auto c = check_payload(payload, impl_->store_.options().limits, "hook resume refused: payload"); !c)
    return refused<hook_resumption>(c.error());
  auto resume = impl_->signed_resume(payload, options);
  if (!resume) return refused<hook_resumption>(resume.error());
  return impl_->resume_hook(std::string(token), std::move(*resume));
}
result<hook_resumption> engine::resume_hook_blocking(std::string_view token,
                                                     const boost::json::value& payload,
                                                     const resume_options& options) {
  if (auto c = check_payload(payload, impl_->store_.options().limits, "hook resume refused: payload"); !c)
    return c.error();
  auto resume = impl_->signed_resume(payload, options);
  if (!resume) return resume.error();
  return impl_->block_on(impl_->resume_hook(std::string(token), std::move(*resume)));
}

result<webhook_delivery> engine::deliver_webhook_blocking(std::string_view token,
                                                          const webhook_request& request) {
  return impl_->block_on(impl_->deliver_webhook(std::string(token), boost::json::value_from(request)));
}

boost::asio::awaitable<result<output_reader>> engine::read_stream(std::string_view id,
                                                                  std::string_view stream,
                                                                  std::int64_t from) {
  return impl_->read_stream(run_id(id), std::string(stream), from);
}
result<output_reader> engine::read_stream_blocking(std::string_view id, std::string_view stream,
                                                   std::int64_t from) {
  return impl_->block_on(impl_->read_stream(run_id(id), std::string(stream), from));
}

boost::asio::awaitable<result<event_stream>> engine::stream(const stream_options& options) {
  return impl_->stream(options);
}
result<event_stream> engine::stream_blocking(const stream_options& options) {
  return impl_->block_on(impl_->stream(options));
}

boost::asio::awaitable<result<log_page>> engine::read_log(std::int64_t after,
                                                          const read_log_options& options) {
  return impl_->read_log(after, options);
}
result<log_page> engine::read_log_blocking(std::int64_t after, const read_log_options& options) {
  return impl_->block_on(impl_->read_log(after, options));
}

boost::asio::awaitable<result<std::int64_t>> engine::trim_log(std::chrono::milliseconds older_than) {
  return impl_->trim_log(older_than);
}
result<std::int64_t> engine::trim_log_blocking(std::chrono::milliseconds older_than) {
  return impl_->block_on(impl_->trim_log(older_than));
}

boost::asio::awaitable<result<void>> engine::retry(std::string_view id) {
  return impl_->retry(run_id(id));
}
result<void> engine::retry_blocking(std::string_view id) {
  return impl_->block_on(impl_->retry(run_id(id)));
}

boost::asio::awaitable<result<void>> engine::rewind(std::string_view id, int from_step) {
  return impl_->rewind(run_id(id), from_step);
}
result<void> engine::rewind_blocking(std::string_view id, int from_step) {
  return impl_->block_on(impl_->rewind(run_id(id), from_step));
}

const std::string& engine::worker_id() const noexcept {
  return impl_->worker_id_;
}
boost::asio::any_io_executor engine::get_executor() const noexcept {
  return impl_->ioc_.get_executor();
}
storage::store& engine::store() noexcept {
  return impl_->store_;
}

}  // namespace keel
