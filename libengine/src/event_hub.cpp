// Streams: each subscription's buffer and gate, and the hub that feeds them from the run log and frames.
#include "event_hub.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "engine_impl.hpp"
#include "keel/common/log.hpp"
#include "keel/common/post_from_any_thread.hpp"
#include "keel/storage/store.hpp"
#include "run_state.hpp"

namespace keel::detail {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::use_awaitable;

/// Events per follower read.
constexpr std::size_t k_follow_page = 5000;
/// Longest wait before reading again when committed events are held back by an older transaction.
constexpr std::chrono::milliseconds k_max_held_wait{20};
/// After a read that found events, the next one waits this long for more to gather: under load a read per
/// writer commit would cost the database more than the events are worth (stream-overhead: 0.75-0.85 with
/// 3 ms, 0.91-0.95 with 10 ms); idle, the first event still goes out at once. Not while a bounded stream
/// is open: the engine's pause must follow its consumer closely.
constexpr std::chrono::milliseconds k_gather{10};
/// Runs whose workflow and parent the follower remembers at most.
constexpr std::size_t k_max_described_runs = 100'000;

bool is_terminal(const stream_event& e) {
  return e.as<events::run_completed>() || e.as<events::run_failed>() || e.as<events::run_cancelled>() ||
         e.as<events::run_dead_lettered>();
}

}  // namespace

// ---- subscription ----

subscription::subscription(std::weak_ptr<event_hub> hub, const asio::execution_context& home,
                           stream_options options)
    : hub_(std::move(hub)), home_(home), options_(std::move(options)) {
  if (options_.filter.run) tree_.insert(*options_.filter.run);
}

std::shared_ptr<event_hub> subscription::gate_update_locked() {
  bool hold = false;
  if (options_.buffer_size && !ended_ && !closed_) {
    const std::size_t waiting = events_.size() + (returned_ && !returned_->as<events::progress>() ? 1 : 0);
    hold = *options_.buffer_size == 0 ? (!waiter_ || waiting > 0) : waiting >= *options_.buffer_size;
  }
  if (hold == holds_gate_) return nullptr;
  holds_gate_ = hold;
  // Applied here, under this stream's lock, so that its changes reach the count in order.
  auto hub = hub_.lock();
  if (hub && hub->gate_changed(hold ? 1 : -1)) return hub;
  return nullptr;
}

subscription::~subscription() {
  if (holds_gate_) {
    if (auto hub = hub_.lock(); hub && hub->gate_changed(-1)) hub->open_gate_waiters();
  }
}

std::optional<stream_event> subscription::pop_locked() {
  if (returned_) {
    // Handed to a next() that was cancelled before it resumed: it goes out first.
    auto e = std::move(*returned_);
    returned_.reset();
    return e;
  }
  // Oldest first, whether a log event or a frame.
  frame_slot* oldest_frame = nullptr;
  for (auto& [run, slot] : frames_) {
    if (!slot.frames.empty() &&
        (oldest_frame == nullptr || slot.frames.front().first < oldest_frame->frames.front().first))
      oldest_frame = &slot;
  }
  if (oldest_frame != nullptr &&
      (events_.empty() || oldest_frame->frames.front().first < events_.front().first)) {
    auto e = std::move(oldest_frame->frames.front().second);
    oldest_frame->frames.pop_front();
    --frame_count_;
    if (auto* p = std::get_if<events::progress>(&e.body)) {
      p->missed = oldest_frame->missed;
      oldest_frame->missed = 0;
    }
    if (oldest_frame->frames.empty()) frames_.erase(e.run);
    return e;
  }
  if (events_.empty()) return std::nullopt;
  auto e = std::move(events_.front().second);
  events_.pop_front();
  return e;
}

asio::awaitable<std::optional<stream_event>> subscription::next() {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void(std::optional<stream_event>)>(
      [self = shared_from_this()](auto handler) {
        using handler_t = decltype(handler);
        auto shared = std::make_shared<handler_t>(std::move(handler));
        // A cancelled pull (say, the loser of `next() || timer`) completes with nullopt; an event handed to
        // it before the cancel arrived goes back to the stream, first in line.
        auto cancelled = std::make_shared<std::atomic<bool>>(false);
        auto slot = asio::get_associated_cancellation_slot(*shared);
        // Called once, from any thread: the handler moves out, so the caller keeps nothing of the consumer's.
        std::function<void(std::optional<stream_event>)> resume =
            [shared = std::move(shared), cancelled, weak = std::weak_ptr<subscription>(self),
             home = &self->home_](std::optional<stream_event> e) mutable {
              auto ex = asio::get_associated_executor(*shared);
              auto deliver = [shared = std::move(shared), cancelled, weak, e = std::move(e)]() mutable {
                auto slot = asio::get_associated_cancellation_slot(*shared);
                if (slot.is_connected()) slot.clear();
                if (e && cancelled->load(std::memory_order_acquire)) {
                  if (auto s = weak.lock()) s->give_back(std::move(*e));
                  e.reset();
                }
                (*shared)(std::move(e));
              };
              // The engine's own context outlives whoever calls this; another one may be destroyed by
              // its owner as soon as this completes (see post_from_any_thread).
              if (&asio::query(ex, asio::execution::context) == home) {
                asio::post(ex, std::move(deliver));
              } else {
                keel::detail::post_from_any_thread(std::move(ex), std::move(deliver));
              }
            };
        if (slot.is_connected()) {
          slot.assign([weak = std::weak_ptr<subscription>(self), cancelled](asio::cancellation_type) {
            cancelled->store(true, std::memory_order_release);
            if (auto s = weak.lock()) s->cancel_pull();
          });
        }
        std::optional<stream_event> ready;
        bool now = false;
        std::shared_ptr<event_hub> opened;
        {
          std::lock_guard lock(self->m_);
          ready = self->pop_locked();
          now = ready.has_value() || self->ended_ || self->closed_;
          if (!now) self->waiter_ = std::move(resume);
          opened = self->gate_update_locked();
        }
        if (opened) opened->open_gate_waiters();
        if (now) resume(std::move(ready));
      },
      use_awaitable);
}

void subscription::give_back(stream_event e) {
  std::shared_ptr<event_hub> opened;
  {
    std::lock_guard lock(m_);
    if (closed_) return;
    returned_ = std::move(e);
    opened = gate_update_locked();
  }
  if (opened) opened->open_gate_waiters();
}

void subscription::cancel_pull() {
  std::function<void(std::optional<stream_event>)> waiter;
  std::shared_ptr<event_hub> opened;
  {
    std::lock_guard lock(m_);
    waiter = std::move(waiter_);
    waiter_ = nullptr;
    opened = gate_update_locked();
  }
  if (opened) opened->open_gate_waiters();
  if (waiter) waiter(std::nullopt);
}

std::optional<stream_event> subscription::try_next() {
  std::optional<stream_event> e;
  std::shared_ptr<event_hub> opened;
  {
    std::lock_guard lock(m_);
    e = pop_locked();
    opened = gate_update_locked();
  }
  if (opened) opened->open_gate_waiters();
  return e;
}

std::size_t subscription::buffered() const {
  std::lock_guard lock(m_);
  return events_.size() + frame_count_;
}

void subscription::close() {
  std::function<void(std::optional<stream_event>)> waiter;
  std::shared_ptr<event_hub> opened;
  {
    std::lock_guard lock(m_);
    if (closed_) return;
    closed_ = true;
    events_.clear();
    frames_.clear();
    frame_count_ = 0;
    waiter = std::move(waiter_);
    waiter_ = nullptr;
    opened = gate_update_locked();
  }
  auto hub = hub_.lock();
  if (opened) opened->open_gate_waiters();
  if (hub) hub->unsubscribe(this);
  if (waiter) waiter(std::nullopt);
}

bool subscription::wants(const stream_event& e) {
  std::lock_guard lock(m_);
  if (closed_ || ended_) return false;
  const bool frame = e.as<events::progress>() != nullptr;
  if (frame && !options_.filter.progress) return false;
  if (e.as<events::log_gap>()) return true;  // whatever it missed may have been for this stream
  if (options_.filter.workflow && e.workflow != *options_.filter.workflow) return false;
  if (options_.filter.run && !tree_.contains(e.run)) {
    if (!e.parent || !tree_.contains(*e.parent)) return false;
    tree_.insert(e.run);  // a child of the tree: its later events (and children) follow
  }
  return true;
}

void subscription::add_tree(const std::vector<run_id>& ids) {
  std::lock_guard lock(m_);
  tree_.insert(ids.begin(), ids.end());
}

void subscription::offer(stream_event e) {
  std::function<void(std::optional<stream_event>)> waiter;
  std::shared_ptr<event_hub> opened;
  {
    std::lock_guard lock(m_);
    if (closed_ || ended_) return;
    if (waiter_ && events_.empty() && frame_count_ == 0) {
      waiter = std::move(waiter_);
      waiter_ = nullptr;
    } else {
      events_.emplace_back(arrivals_++, std::move(e));
    }
    opened = gate_update_locked();
  }
  if (opened) opened->open_gate_waiters();
  if (waiter) waiter(std::move(e));
}

bool subscription::in_tree_locked(const stream_event& e) {
  if (tree_.contains(e.run)) return true;
  if (!e.parent || !tree_.contains(*e.parent)) return false;
  tree_.insert(e.run);
  return true;
}

void subscription::queue_frame_locked(stream_event e,
                                      std::function<void(std::optional<stream_event>)>& waiter,
                                      std::optional<stream_event>& handed) {
  if (waiter_ && events_.empty() && frame_count_ == 0 && !handed) {
    waiter = std::move(waiter_);
    waiter_ = nullptr;
    handed = std::move(e);
    return;
  }
  auto& slot = frames_[e.run];
  if (slot.frames.size() >= k_frames_per_run) {
    // Fallen behind: the oldest goes, counted on the next one delivered.
    slot.frames.pop_front();
    ++slot.missed;
    --frame_count_;
  }
  slot.frames.emplace_back(arrivals_++, std::move(e));
  ++frame_count_;
}

void subscription::offer_frame(stream_event e) {
  std::function<void(std::optional<stream_event>)> waiter;
  std::optional<stream_event> handed;
  std::shared_ptr<event_hub> opened;
  {
    std::lock_guard lock(m_);
    if (closed_ || ended_ || !options_.filter.progress) return;
    if (options_.filter.workflow && e.workflow != *options_.filter.workflow) return;
    if (options_.filter.run) {
      // A run of the tree the follower has not yet read of (a child that just started) waits for it;
      // so do its later frames, to keep their order.
      const bool behind = std::any_of(pending_frames_.begin(), pending_frames_.end(),
                                      [&](const pending_frame& p) { return p.event.run == e.run; });
      if (behind || !in_tree_locked(e)) {
        if (pending_frames_.size() >= k_max_pending_frames) pending_frames_.pop_front();
        pending_frames_.push_back({std::chrono::steady_clock::now(), std::move(e)});
        return;
      }
    }
    queue_frame_locked(std::move(e), waiter, handed);
    opened = gate_update_locked();
  }
  if (opened) opened->open_gate_waiters();
  if (waiter) waiter(std::move(handed));
}

void subscription::recheck_pending_frames() {
  std::function<void(std::optional<stream_event>)> waiter;
  std::optional<stream_event> handed;
  std::shared_ptr<event_hub> opened;
  {
    std::lock_guard lock(m_);
    if (pending_frames_.empty()) return;
    const auto too_old = std::chrono::steady_clock::now() - k_pending_frame_limit;
    std::deque<pending_frame> still;
    for (auto& p : pending_frames_) {
      const bool earlier_waits = std::any_of(
          still.begin(), still.end(), [&](const pending_frame& q) { return q.event.run == p.event.run; });
      if (!earlier_waits && !closed_ && !ended_ && in_tree_locked(p.event)) {
        queue_frame_locked(std::move(p.event), waiter, handed);
      } else if (p.since > too_old) {
        still.push_back(std::move(p));
      }  // else: its run never showed as part of the tree: not this stream's
    }
    pending_frames_.swap(still);
    opened = gate_update_locked();
  }
  if (opened) opened->open_gate_waiters();
  if (waiter) waiter(std::move(handed));
}

void subscription::end() {
  std::function<void(std::optional<stream_event>)> waiter;
  std::shared_ptr<event_hub> opened;
  {
    std::lock_guard lock(m_);
    if (ended_) return;
    ended_ = true;
    if (events_.empty() && frame_count_ == 0) {
      waiter = std::move(waiter_);
      waiter_ = nullptr;
    }
    opened = gate_update_locked();
  }
  if (opened) opened->open_gate_waiters();
  if (waiter) waiter(std::nullopt);
}

void subscription::refresh_gate() {
  std::shared_ptr<event_hub> opened;
  {
    std::lock_guard lock(m_);
    opened = gate_update_locked();
  }
  if (opened) opened->open_gate_waiters();
}

// ---- event_hub ----

event_hub::event_hub(asio::io_context& ioc, storage::store& store, std::string worker_id,
                     std::chrono::milliseconds poll_interval, std::function<void()> gate_opened)
    : ioc_(ioc),
      store_(store),
      worker_id_(std::move(worker_id)),
      poll_interval_(poll_interval),
      gate_opened_(std::move(gate_opened)),
      strand_(asio::make_strand(ioc)),
      wake_(strand_),
      finished_(strand_) {}

asio::awaitable<result<std::shared_ptr<subscription>>> event_hub::subscribe(stream_options options) {
  auto sub = std::make_shared<subscription>(weak_from_this(), ioc_, options);
  // On the follower's strand: the stream starts where the follower is, so it misses nothing committed
  // after this returns (see follow()).
  co_return co_await asio::co_spawn(strand_, join(std::move(sub)), use_awaitable);
}

asio::awaitable<result<std::shared_ptr<subscription>>> event_hub::join(std::shared_ptr<subscription> sub) {
  for (;;) {
    if (cursor_ < 0) {
      auto top = co_await store_.follow_log(0, 0);
      if (!top) co_return top.error();
      if (cursor_ < 0) {
        cursor_ = top->top - 1;
        ++cursor_starts_;
      }
    }
    if (!sub->followed_run()) break;
    // The runs it started so far, read after the cursor is set: one started since shows in an event
    // past the cursor, naming its parent.
    const auto starts = cursor_starts_;
    auto tree = co_await store_.run_tree(*sub->followed_run());
    if (!tree) co_return tree.error();
    sub->add_tree(*tree);
    // Unless the follower went idle while the tree was read (this stream had not joined yet): it then
    // forgot the cursor, and would start from -1; or another join set it afresh, past this tree's read.
    if (cursor_ >= 0 && cursor_starts_ == starts) break;
  }
  bool start = false;
  {
    std::lock_guard lock(m_);
    if (ended_) {
      sub->end();
    } else {
      subs_.push_back(sub);
      start = !following_;
      following_ = true;
    }
  }
  sub->refresh_gate();
  if (start) {
    follower_done_ = false;
    asio::co_spawn(strand_, follow(), [self = shared_from_this()](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log::error("engine", std::string("log follower stopped: ") + ex.what());
      } catch (...) {
        log::error("engine", "log follower stopped");
      }
      // The next stream starts a new one; a stop does not wait for this one.
      {
        std::lock_guard lock(self->m_);
        self->following_ = false;
      }
      self->cursor_ = -1;  // on strand_, as the completion of a coroutine spawned there
      self->follower_done_ = true;
      self->finished_.cancel();
      // Its streams would stay silent: they end (their consumers may open new ones).
      for (auto& sub : self->live_subscriptions())
        sub->end();
    });
  }
  co_return sub;
}

void event_hub::unsubscribe(const subscription* s) {
  // References taken here are released after the lock: a last one's destructor may give back the gate.
  std::vector<std::shared_ptr<subscription>> held;
  std::lock_guard lock(m_);
  held.reserve(subs_.size());
  std::erase_if(subs_, [&](const std::weak_ptr<subscription>& w) {
    held.push_back(w.lock());
    return !held.back() || held.back().get() == s;
  });
}

std::vector<std::shared_ptr<subscription>> event_hub::live_subscriptions() {
  std::vector<std::shared_ptr<subscription>> out;
  std::lock_guard lock(m_);
  out.reserve(subs_.size());
  for (const auto& w : subs_) {
    if (auto p = w.lock()) out.push_back(std::move(p));
  }
  return out;
}

void event_hub::log_appended() {
  if (!wake_requested_.exchange(true, std::memory_order_acq_rel)) {
    asio::post(strand_, [self = shared_from_this()] { self->wake_.cancel(); });
  }
}

void event_hub::dispatch(stream_event e, const std::vector<std::shared_ptr<subscription>>& subs) {
  if (const auto* s = e.as<events::run_started>()) {
    std::lock_guard lock(m_);
    auto& epoch = epochs_[e.run];
    epoch = std::max(epoch, s->epoch);
  } else if (is_terminal(e)) {
    std::lock_guard lock(m_);
    epochs_.erase(e.run);
  }
  std::vector<subscription*> to;
  for (const auto& s : subs) {
    if (s->wants(e)) to.push_back(s.get());
  }
  // Each stream its own copy; the last one takes the original.
  for (std::size_t i = 0; i < to.size(); ++i) {
    if (i + 1 < to.size()) {
      to[i]->offer(e);
    } else {
      to[i]->offer(std::move(e));
    }
  }
}

void event_hub::dispatch_frame(stream_event e) {
  const auto* p = e.as<events::progress>();
  const auto subs = live_subscriptions();
  if (subs.empty()) return;
  {
    std::lock_guard lock(m_);
    // A frame of an execution older than one this worker has seen start: a zombie's, dropped.
    auto& epoch = epochs_[e.run];
    if (p->epoch < epoch) return;
    epoch = p->epoch;
  }
  // Each stream its own copy (it filters); the last one takes the original.
  for (std::size_t i = 0; i < subs.size(); ++i) {
    if (i + 1 < subs.size()) {
      subs[i]->offer_frame(e);
    } else {
      subs[i]->offer_frame(std::move(e));
    }
  }
}

void event_hub::emit_frame(run_state& st, json::value frame) {
  // At most once, and never from an execution that may have lost its lease.
  if (st.lost.load(std::memory_order_acquire) ||
      std::chrono::steady_clock::now() > st.lease_deadline.load(std::memory_order_acquire)) {
    return;
  }
  stream_event e;
  e.run = st.claim.id;
  e.workflow = st.claim.workflow;
  e.parent = st.claim.parent;
  e.at = std::chrono::system_clock::now();
  events::progress p;
  p.execution = st.claim.claims;
  p.epoch = st.claim.epoch;
  p.seq = ++st.frames;
  // Other workers' streams: the same frame as a notification (best-effort; too large a frame stays here).
  json::object wire;
  wire["w"] = worker_id_;
  wire["r"] = e.run;
  wire["wf"] = e.workflow;
  if (e.parent) wire["p"] = *e.parent;
  wire["x"] = p.execution;
  wire["e"] = p.epoch;
  wire["s"] = p.seq;
  wire["t"] = std::chrono::duration_cast<std::chrono::microseconds>(e.at.time_since_epoch()).count();
  wire["f"] = frame;
  (void)store_.publish_frame(json::serialize(wire));
  p.frame = std::move(frame);
  e.body = std::move(p);
  dispatch_frame(std::move(e));
}

void event_hub::remote_frame(std::string_view payload) {
  boost::system::error_code ec;
  auto v = json::parse(payload, ec);
  if (ec || !v.is_object()) return;
  auto& o = v.as_object();
  const auto* w = o.if_contains("w");
  if (w == nullptr || !w->is_string() || w->as_string() == worker_id_) return;  // ours: delivered already
  try {
    stream_event e;
    e.run = std::string(o.at("r").as_string());
    e.workflow = std::string(o.at("wf").as_string());
    if (const auto* p = o.if_contains("p"); p != nullptr && p->is_string())
      e.parent = std::string(p->as_string());
    e.at =
        std::chrono::system_clock::time_point(std::chrono::microseconds(o.at("t").to_number<std::int64_t>()));
    events::progress p;
    p.execution = o.at("x").to_number<int>();
    p.epoch = o.at("e").to_number<std::int64_t>();
    p.seq = o.at("s").to_number<std::int64_t>();
    p.frame = std::move(o.at("f"));
    e.body = std::move(p);
    dispatch_frame(std::move(e));
  } catch (const std::exception&) {
    // Not a frame this version understands: best-effort, dropped.
  }
}

asio::awaitable<void> event_hub::describe_runs(std::vector<storage::log_event>& events) {
  // A run's enqueue says what it is; runs enqueued before the follower started are read, once.
  std::vector<run_id> unknown;
  for (const auto& e : events) {
    if (e.kind == "run_enqueued" && e.data.is_object()) {
      const auto& d = e.data.as_object();
      run_description r;
      if (const auto* w = d.if_contains("workflow"); w != nullptr && w->is_string())
        r.workflow = w->as_string();
      if (const auto* p = d.if_contains("parent"); p != nullptr && p->is_string())
        r.parent = std::string(p->as_string());
      runs_.insert_or_assign(e.run, std::move(r));
    } else if (!runs_.contains(e.run) && std::find(unknown.begin(), unknown.end(), e.run) == unknown.end()) {
      unknown.push_back(e.run);
    }
  }
  if (!unknown.empty()) {
    auto meta = co_await store_.runs_meta(unknown);
    if (meta) {
      for (auto& m : *meta)
        runs_.insert_or_assign(m.id, run_description{std::move(m.workflow), std::move(m.parent)});
    } else {
      log::warn("engine", "log follower: cannot read runs' workflows: " + meta.error().message());
    }
  }
  for (auto& e : events) {
    auto it = runs_.find(e.run);
    if (it == runs_.end()) continue;
    e.workflow = it->second.workflow;
    e.parent = it->second.parent;
  }
  // Runs that ended are forgotten as their end goes by; this bounds what runs that never end here leave.
  if (runs_.size() > k_max_described_runs) runs_.clear();
}

asio::awaitable<bool> event_hub::read_once(bool& held, std::size_t& got) {
  held = false;
  got = 0;
  auto page = co_await store_.follow_log(cursor_, k_follow_page);
  if (!page) {
    log::warn("engine", "log follower: read failed: " + page.error().message());
    co_return false;
  }
  held = page->held_back;
  const auto subs = live_subscriptions();
  any_bounded_ = std::any_of(subs.begin(), subs.end(), [](const auto& s) { return s->bounded(); });
  if (page->page.gap_until && *page->page.gap_until > gap_reported_) {
    // Once per new horizon. The cursor stays: retention skips rows of runs still going, so events below
    // the horizon may still come, and the gap's id is no position to resume from.
    gap_reported_ = *page->page.gap_until;
    stream_event gap;
    gap.at = std::chrono::system_clock::now();
    gap.body = events::log_gap{gap_reported_};
    dispatch(std::move(gap), subs);
  }
  const bool full = page->page.events.size() + 1 >= k_follow_page;  // (a start cut from its end is held back)
  got = page->page.events.size();
  co_await describe_runs(page->page.events);
  for (auto& e : page->page.events) {
    cursor_ = std::max(cursor_, e.pos);
    auto ev = to_stream_event(std::move(e));
    if (is_terminal(ev)) runs_.erase(ev.run);
    dispatch(std::move(ev), subs);
  }
  for (const auto& s : subs)
    s->recheck_pending_frames();  // the runs just read may have joined a followed tree
  co_return full;
}

asio::awaitable<void> event_hub::follow() {
  auto held_wait = std::chrono::milliseconds(1);
  for (;;) {
    bool ending = false;
    bool idle = false;
    {
      std::lock_guard lock(m_);
      ending = ending_;
      std::erase_if(subs_, [](const std::weak_ptr<subscription>& w) { return w.expired(); });
      idle = subs_.empty();
    }
    if (ending) break;
    if (idle) {
      // Nobody follows: stop reading; the next stream starts afresh from where the log is then.
      std::lock_guard lock(m_);
      if (subs_.empty()) {
        following_ = false;
        cursor_ = -1;
        runs_.clear();
        epochs_.clear();
        follower_done_ = true;
        co_return;
      }
      continue;
    }
    bool held = false;
    std::size_t got = 0;
    if (co_await read_once(held, got)) continue;
    if (got > 0 && !any_bounded_) {
      // More are coming (under load some transaction is nearly always in progress, so `held` says little
      // then): let them gather briefly.
      held_wait = std::chrono::milliseconds(1);
      wake_.expires_after(k_gather);
      co_await wake_.async_wait(asio::as_tuple(use_awaitable));
      wake_requested_.store(false, std::memory_order_release);
      continue;
    }
    if (held) {
      // An older transaction holds committed events back: it ends soon.
      wake_.expires_after(held_wait);
      held_wait = std::min(held_wait * 2, k_max_held_wait);
      co_await wake_.async_wait(asio::as_tuple(use_awaitable));
      wake_requested_.store(false, std::memory_order_release);
      continue;
    }
    held_wait = std::chrono::milliseconds(1);
    if (wake_requested_.exchange(false, std::memory_order_acq_rel)) continue;
    wake_.expires_after(poll_interval_);
    co_await wake_.async_wait(asio::as_tuple(use_awaitable));
    wake_requested_.store(false, std::memory_order_release);
  }
  // Stopping: deliver what the log holds until now, briefly, then end.
  for (;;) {  // until caught up, or finish()'s deadline ends the streams first
    bool held = false;
    std::size_t got = 0;
    const bool more = co_await read_once(held, got);
    if (!more && !held) break;
    if (held) {
      wake_.expires_after(std::chrono::milliseconds(2));
      co_await wake_.async_wait(asio::as_tuple(use_awaitable));
    }
  }
  follower_done_ = true;
  finished_.cancel();
}

bool event_hub::gate_changed(int delta) {
  return closed_.fetch_add(delta, std::memory_order_acq_rel) + delta == 0 && delta < 0;
}

void event_hub::open_gate_waiters() {
  std::vector<std::shared_ptr<asio::steady_timer>> waiters;
  {
    std::lock_guard lock(m_);
    waiters.swap(gate_waiters_);
  }
  for (auto& w : waiters)
    asio::post(w->get_executor(), [w] { w->cancel(); });
  if (gate_opened_) gate_opened_();
}

asio::awaitable<void> event_hub::pause_point(run_state& st) {
  while (paused()) {
    if (st.lost.load(std::memory_order_acquire) || st.engine.stopping() ||
        (!st.cancel_seen && st.cancel_requested.load(std::memory_order_acquire))) {
      co_return;  // the caller's interrupt check says what happens now
    }
    // Until the lease this worker can be sure of ends: re-checked then (a heartbeat extends it meanwhile).
    const auto until = st.lease_deadline.load(std::memory_order_acquire);
    if (std::chrono::steady_clock::now() >= until) co_return;
    auto timer = std::make_shared<asio::steady_timer>(st.strand, until);
    {
      std::lock_guard lock(m_);
      gate_waiters_.push_back(timer);
    }
    st.branch_backoffs.push_back(timer.get());  // cut short by a cancel, a lost lease or a stop
    if (paused()) co_await timer->async_wait(asio::as_tuple(use_awaitable));
    std::erase(st.branch_backoffs, timer.get());
    std::lock_guard lock(m_);
    std::erase(gate_waiters_, timer);
  }
}

void event_hub::release_gate() {
  released_.store(true, std::memory_order_release);
  open_gate_waiters();
}

asio::awaitable<void> event_hub::finish(std::chrono::milliseconds deadline) {
  release_gate();
  co_await asio::co_spawn(strand_, finish_on_strand(deadline), use_awaitable);
}

asio::awaitable<void> event_hub::finish_on_strand(std::chrono::milliseconds deadline) {
  {
    std::lock_guard lock(m_);
    ending_ = true;
  }
  if (!follower_done_) {
    wake_requested_.store(true, std::memory_order_release);  // a read in progress does not wait after it
    wake_.cancel();
    finished_.expires_after(deadline);
    co_await finished_.async_wait(asio::as_tuple(use_awaitable));
  }
  end_all();
}

void event_hub::end_all() {
  std::vector<std::shared_ptr<subscription>> subs;
  {
    std::lock_guard lock(m_);
    ended_ = true;
    for (const auto& w : subs_) {
      if (auto p = w.lock()) subs.push_back(std::move(p));
    }
    subs_.clear();
  }
  for (auto& s : subs)
    s->end();
}

}  // namespace keel::detail
