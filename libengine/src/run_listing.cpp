// engine::list_runs (runs newest first, a page at a time: storage's run_list.cpp does the work),
// engine::list_hooks (the inbox of pending decisions), engine::overview and engine::readiness: the
// read-only questions an operator's tools ask.
#include "engine_impl.hpp"
#include "hook_token.hpp"
#include "keel/engine/engine.hpp"

namespace keel {

namespace {

// `store` is the engine's (it outlives every call); the query is the caller's, copied into this frame.
boost::asio::awaitable<result<run_list>> list_from(storage::store& store, run_query query) {
  auto page = co_await store.list_runs(query);
  if (!page) co_return detail::engine_error(page.error());
  co_return std::move(*page);
}

// `impl` is the engine's; the query is the caller's, copied into this frame.
boost::asio::awaitable<result<hook_list>> hooks_from(detail::engine_impl& impl, hook_query query) {
  auto page = co_await impl.store_.list_hooks(query);
  if (!page) co_return detail::engine_error(page.error());
  if (!page->hooks.empty()) {
    // Their links, derived as get() derives a run's (tokens are never stored).
    auto secret = co_await impl.hook_secret();
    if (!secret) co_return detail::engine_error(secret.error());
    for (auto& h : page->hooks)
      h.hook.path = "/v1/hooks/" + detail::hook_token(*secret, h.run, h.generation, h.hook.seq, h.hook.name);
  }
  co_return std::move(*page);
}

boost::asio::awaitable<result<run_overview>> overview_of(storage::store& store, std::int64_t cap,
                                                         std::chrono::milliseconds within) {
  auto r = co_await store.overview(cap, within);
  if (!r) co_return detail::engine_error(r.error());
  co_return std::move(*r);
}

boost::asio::awaitable<result<storage::readiness>> readiness_of(storage::store& store,
                                                                std::chrono::milliseconds within) {
  auto r = co_await store.readiness_check(within);
  if (!r) co_return detail::engine_error(r.error());
  co_return *r;
}

}  // namespace

boost::asio::awaitable<result<storage::readiness>> engine::readiness(std::chrono::milliseconds within) {
  return readiness_of(impl_->store_, within);
}

boost::asio::awaitable<result<run_list>> engine::list_runs(const run_query& query) {
  return list_from(impl_->store_, query);
}

result<run_list> engine::list_runs_blocking(const run_query& query) {
  return impl_->block_on(list_from(impl_->store_, query));
}

boost::asio::awaitable<result<hook_list>> engine::list_hooks(const hook_query& query) {
  return hooks_from(*impl_, query);
}

result<hook_list> engine::list_hooks_blocking(const hook_query& query) {
  return impl_->block_on(hooks_from(*impl_, query));
}

boost::asio::awaitable<result<run_overview>> engine::overview(std::int64_t cap,
                                                              std::chrono::milliseconds within) {
  return overview_of(impl_->store_, cap, within);
}

}  // namespace keel
