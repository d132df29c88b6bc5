// engine::list_runs (runs newest first, a page at a time: storage's run_list.cpp does the work) and
// engine::readiness: the read-only questions an operator's tools ask.
#include "engine_impl.hpp"
#include "keel/engine/engine.hpp"

namespace keel {

namespace {

// `store` is the engine's (it outlives every call); the query is the caller's, copied into this frame.
boost::asio::awaitable<result<run_list>> list_from(storage::store& store, run_query query) {
  auto page = co_await store.list_runs(query);
  if (!page) co_return detail::engine_error(page.error());
  co_return std::move(*page);
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

}  // namespace keel
