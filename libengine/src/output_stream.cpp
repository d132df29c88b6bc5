// Durable output streams: the writer's buffer and flusher, and the reader that follows a stream live.
#include "keel/engine/output_stream.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <stdexcept>

#include "engine_impl.hpp"
#include "keel/common/log.hpp"
#include "keel/storage/json_limits.hpp"
#include "output_state.hpp"

namespace keel {
namespace detail {
namespace {

namespace asio = boost::asio;
using asio::use_awaitable;

/// Chunks per flush at most (one statement's array).
constexpr std::size_t k_flush_chunks = 1000;
/// write() waits once this many chunks wait to be flushed.
constexpr std::size_t k_max_buffered = 10'000;
/// A reader with nothing new re-reads this often even without an event saying more came.
constexpr std::chrono::milliseconds k_reader_poll{1000};
constexpr std::size_t k_read_page = 1000;

/// One round of the flusher ended (or the caller's wait is cut short): wakes writers waiting on it.
void wake_writers(output_state& s) {
  for (auto* t : s.waiters)
    t->cancel();
}

/// Until the next flush round ends. On the run's strand.
asio::awaitable<void> next_round(output_state& s) {
  asio::steady_timer t(s.strand, asio::steady_timer::time_point::max());
  s.waiters.push_back(&t);
  co_await t.async_wait(asio::as_tuple(use_awaitable));
  std::erase(s.waiters, &t);
}

asio::awaitable<void> flush_loop(std::shared_ptr<output_state> s) {
  while (!s->fenced && (!s->buffer.empty() || (s->close_requested && !s->closed) || s->trim_at)) {
    // The longest run of chunks from one writer position (a flush has one position).
    storage::output_flush f;
    f.lease = s->lease;
    f.stream = s->name;
    f.generation = s->generation;
    f.seq = -1;  // a close alone: no writer position (see keel_output_trim)
    if (!s->buffer.empty()) {
      f.seq = s->buffer.front().seq;
      f.attempt = s->buffer.front().attempt;
    } else if (s->trim_at) {
      f.seq = s->trim_at->seq;  // no chunks: this flush only moves the writer, removing what that supersedes
      f.attempt = s->trim_at->attempt;
      s->trim_at.reset();
    }
    while (!s->buffer.empty() && f.chunks.size() < k_flush_chunks && s->buffer.front().seq == f.seq &&
           s->buffer.front().attempt == f.attempt) {
      f.chunks.push_back(std::move(s->buffer.front().chunk));
      s->buffer.pop_front();
    }
    f.close = s->buffer.empty() && s->close_requested;
    f.close_seq = s->close_seq;
    auto r = co_await s->store.write_output(f);
    if (!r) {
      if (r.error() == storage::errc::fenced || r.error() == storage::errc::shut_down) {
        s->fenced = true;  // the run's next step or wait finds its lease gone
        s->buffer.clear();
      } else {
        // Refused by the database (not a lost lease): these chunks are lost; the writer hears of it.
        s->refused = r.error().message();
        log::error("engine", "run " + f.lease.id + ": " + std::to_string(f.chunks.size()) +
                                 " chunk(s) of output stream '" + storage::valid_utf8(f.stream) +
                                 "' were refused: " + r.error().message());
      }
    } else {
      if (f.seq >= 0) s->moved_to = output_state::position{f.seq, f.attempt};
      if (f.close) s->closed = true;
    }
    wake_writers(*s);
  }
  s->flushing = false;
  wake_writers(*s);
}

void start_flush(const std::shared_ptr<output_state>& s) {
  if (s->flushing) return;
  s->flushing = true;
  asio::co_spawn(s->strand, flush_loop(s), asio::detached);
}

asio::awaitable<void> drain(run_state& st, output_state& s) {
  while (s.flushing)
    co_await next_round(s);
  if (s.fenced) lose_lease(st);
  if (!s.refused.empty()) {
    // Fails what waits for the flush (the step that wrote the chunks, or the run): lost output must show.
    const auto why = std::move(s.refused);
    s.refused.clear();
    throw std::runtime_error("output stream '" + s.name + "': chunks were refused by the database (" + why +
                             ")");
  }
}

/// Whether chunks this execution has not replaced are superseded by new work at `at`: an earlier
/// execution's at or past `at` when nothing was recorded there (work it lost; the first new work of this
/// execution comes before any flush of its own moves the writer), or a failed attempt's of the step at
/// `at`. Redone work that wrote chunks replaced them already (its flush moved the writer); this is for redone
/// work that wrote none.
bool needs_trim(const run_state& st, const output_state& s, output_state::position at) {
  if (s.fenced) return false;
  if (!s.moved_to) return s.older_executions && static_cast<std::size_t>(at.seq) >= st.by_seq.size();
  return s.moved_to->seq == at.seq && s.moved_to->attempt > 0 && s.moved_to->attempt < at.attempt;
}

/// Where a record or a write made now sits (see output_state::position).
output_state::position current_position(const run_state& st, int attempt) {
  return {st.in_step ? st.next_seq - 1 : st.next_seq, attempt};
}

}  // namespace

asio::awaitable<void> flush_outputs(run_state& st, int attempt) {
  if (st.outputs.empty()) co_return;
  const auto at = current_position(st, attempt);
  for (auto& [name, s] : st.outputs) {
    co_await drain(st, *s);
    if (!needs_trim(st, *s, at)) continue;
    s->trim_at = at;
    start_flush(s);
    co_await drain(st, *s);
  }
}

output_follower::output_follower(engine_impl& engine, run_id run, std::string stream, std::int64_t from,
                                 event_stream events)
    : engine_(engine),
      run_(std::move(run)),
      stream_(std::move(stream)),
      next_index_(from),
      delivered_(from),
      events_(std::move(events)) {}

bool output_follower::replaced(const storage::output_page& page) {
  if (!trims_seen_ || page.trims == *trims_seen_) {
    trims_seen_ = page.trims;
    return false;
  }
  // Redone work removed chunks since the last read: from where the last removal began when it was the
  // only one, else (several, only the last one's start known) from the stream's start.
  const std::int64_t first = page.trims == *trims_seen_ + 1 && page.trimmed_from ? *page.trimmed_from : 0;
  trims_seen_ = page.trims;
  if (first >= next_index_) return false;  // past what was read: this page already has what replaced them
  std::erase_if(page_, [&](const output_chunk& k) { return k.index >= first; });
  next_index_ = first;
  if (first < delivered_) rewind_ = std::min(rewind_.value_or(first), first);
  return true;
}

asio::awaitable<std::optional<output_chunk>> output_follower::next() {
  using namespace asio::experimental::awaitable_operators;
  // A cancellation (output_reader::next) ends the wait for more. A read in progress finishes and keeps what
  // it read; the state is whole at every co_await (where Asio throws once cancelled), so the next call
  // goes on where this one stopped.
  const auto cancelled = [](const asio::cancellation_state& cs) {
    return cs.cancelled() != asio::cancellation_type::none;
  };
  auto backoff = std::chrono::milliseconds(10);
  for (;;) {
    // Cancelled (perhaps while a read was under way): what was read stays for the next call, which the
    // caller makes; a chunk returned now would be dropped with the cancelled call's result.
    if (cancelled(co_await asio::this_coro::cancellation_state)) co_return std::nullopt;
    if (rewind_) {
      // The consumer read chunks a redo has replaced since: it hears from where, then gets those again.
      output_chunk marker{*rewind_, nullptr, true};
      delivered_ = *rewind_;
      rewind_.reset();
      co_return marker;
    }
    if (!page_.empty()) {
      auto c = std::move(page_.front());
      page_.pop_front();
      delivered_ = c.index + 1;
      co_return c;
    }
    if (done_) co_return std::nullopt;
    // Whatever the run's events said so far is covered by this read (it began after them).
    while (events_.try_next()) {
    }
    auto page = co_await engine_.store_.read_output(run_, stream_, next_index_, k_read_page);
    if (!page) {
      log::warn("engine", "read_stream: read failed (retrying): " + page.error().message());
      asio::steady_timer t(co_await asio::this_coro::executor, backoff);
      co_await t.async_wait(asio::as_tuple(use_awaitable));
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
      continue;
    }
    backoff = std::chrono::milliseconds(10);
    if (replaced(*page)) continue;
    for (auto& [index, data] : page->chunks) {
      next_index_ = index + 1;
      page_.push_back(output_chunk{index, std::move(data)});
    }
    if (!page_.empty()) continue;
    if (page->closed || page->run_ended) {
      done_ = true;
      continue;
    }
    // Caught up: until the run's next event (an append, its end) or the poll.
    asio::steady_timer poll(co_await asio::this_coro::executor, k_reader_poll);
    auto more = events_.next();
    auto woke = co_await (std::move(more) || poll.async_wait(asio::as_tuple(use_awaitable)));
    // A cancelled wait ends both alternatives (the event one with nullopt, which is no end here).
    if (cancelled(co_await asio::this_coro::cancellation_state)) co_return std::nullopt;
    if (woke.index() == 0 && !std::get<0>(woke)) {
      // The engine stopped: read what is there once more, then end.
      done_ = true;
      auto last = co_await engine_.store_.read_output(run_, stream_, next_index_, k_read_page);
      if (last) {
        for (auto& [index, data] : last->chunks) {
          next_index_ = index + 1;
          page_.push_back(output_chunk{index, std::move(data)});
        }
      }
    }
  }
}

}  // namespace detail

output_stream::output_stream(detail::run_state& st, std::shared_ptr<detail::output_state> state)
    : st_(&st), state_(std::move(state)) {}

const std::string& output_stream::name() const noexcept {
  return state_->name;
}

boost::asio::awaitable<void> output_stream::write(const boost::json::value& chunk) {
  auto& st = *st_;
  auto& s = *state_;
  if (s.fenced || st.lost.load(std::memory_order_acquire)) detail::lose_lease(st);
  // A branch's writes would interleave with its siblings' at one position (see output_stream).
  if (!st.live_branches.empty()) {
    throw std::logic_error("output stream '" + s.name +
                           "': written inside a ctx.parallel branch (write on the main line)");
  }
  // Replaying the workflow's own code between recorded steps: it wrote this chunk the first time.
  if (!st.in_step && static_cast<std::size_t>(st.next_seq) < st.by_seq.size()) co_return;
  if (s.close_requested) co_return;
  std::string why;
  if (auto c = storage::check_json(chunk, st.engine.store_.options().limits, &why); !c)
    throw std::invalid_argument("output stream '" + s.name + "': chunk refused (" + c.error().message() +
                                "): " + why);
  // Inside a step: that step's position and attempt; between steps: the next step's, attempt 0.
  const auto at = detail::current_position(st, st.in_step ? st.step_attempt : 0);
  s.buffer.push_back({chunk, at.seq, at.attempt});
  detail::start_flush(state_);
  while (s.buffer.size() >= detail::k_max_buffered && !s.fenced)
    co_await detail::next_round(s);
}

boost::asio::awaitable<void> output_stream::flush() {
  co_await detail::drain(*st_, *state_);
}

boost::asio::awaitable<void> output_stream::close() {
  auto& s = *state_;
  if (!s.close_requested && !s.closed) {
    auto& st = *st_;
    const auto at = detail::current_position(st, st.in_step ? st.step_attempt : 0);
    s.close_requested = true;
    s.close_seq = at.seq;
    // A closed stream is not read again: what the close supersedes goes with it (not while replaying).
    const bool replaying = !st.in_step && static_cast<std::size_t>(st.next_seq) < st.by_seq.size();
    if (!replaying && detail::needs_trim(st, s, at)) s.trim_at = at;
    detail::start_flush(state_);
  }
  co_await detail::drain(*st_, s);
}

output_reader::output_reader(std::shared_ptr<detail::output_follower> follower)
    : follower_(std::move(follower)) {}
output_reader::~output_reader() = default;
output_reader::output_reader(output_reader&&) noexcept = default;
output_reader& output_reader::operator=(output_reader&&) noexcept = default;

namespace {
boost::asio::awaitable<std::optional<output_chunk>> next_of(std::shared_ptr<detail::output_follower> f) {
  if (!f) co_return std::nullopt;
  co_return co_await f->next();  // `f` keeps it alive while suspended, whatever happens to the reader
}
}  // namespace

boost::asio::awaitable<std::optional<output_chunk>> output_reader::next() {
  return next_of(follower_);
}

}  // namespace keel
