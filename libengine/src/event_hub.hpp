// The engine's live events: the log follower that tails the durable run log, the streams it feeds, the
// progress frames runs publish, and the gate a bounded stream closes to pause the engine.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/json/value.hpp>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "keel/common/result.hpp"
#include "keel/engine/events.hpp"
#include "keel/storage/records.hpp"

namespace keel::storage {
class store;
}

namespace keel::detail {

struct run_state;
class event_hub;

class subscription;
/// event_stream::next: what waits now, else the next event to come.
boost::asio::awaitable<std::optional<stream_event>> next_of(std::shared_ptr<subscription> sub);

/// One stream's buffer and filter. The consumer side (next, try_next, close) runs on any thread; the hub
/// side (offer, offer_frame, end) on the follower's strand or a run's strand: everything is under `m_`.
class subscription : public std::enable_shared_from_this<subscription> {
 public:
  /// `home`: the engine's io_context, which outlives every thread that hands this stream events.
  subscription(std::weak_ptr<event_hub> hub, const boost::asio::execution_context& home,
               stream_options options);

  // Consumer side.
  boost::asio::awaitable<std::optional<stream_event>> next();
  std::optional<stream_event> try_next();
  /// A pending next() was cancelled: it completes with nullopt.
  void cancel_pull();
  /// An event handed to a next() that was cancelled meanwhile: the next pull gets it.
  void give_back(stream_event e);
  ~subscription();
  [[nodiscard]] std::size_t buffered() const;
  /// Unsubscribes: nothing more arrives, and the gate no longer waits for this stream.
  void close();

  // Hub side.
  /// Takes `e` if the filter wants it (a copy is made by the caller; this one is the stream's own).
  /// A run whose parent the filter follows joins the followed tree.
  [[nodiscard]] bool wants(const stream_event& e);
  void offer(stream_event e);
  /// Takes a frame if the filter wants it (or keeps it briefly, when its run's place in the followed tree
  /// is not known yet).
  void offer_frame(stream_event e);
  /// After the follower read more of the log: frames kept for runs now known to be in the tree go out.
  void recheck_pending_frames();
  /// The stream ends: a pending next() (and those after everything buffered) returns nullopt.
  void end();
  /// Adds runs to the followed tree (filter.run and its descendants, read when the stream opened).
  void add_tree(const std::vector<run_id>& ids);
  /// Reports whether the stream holds the gate now (when it opens).
  void refresh_gate();
  [[nodiscard]] bool bounded() const noexcept { return options_.buffer_size.has_value(); }
  [[nodiscard]] const std::optional<run_id>& followed_run() const noexcept { return options_.filter.run; }

  /// Frames kept per run for a consumer that fell behind; older ones are dropped and counted as missed.
  static constexpr std::size_t k_frames_per_run = 64;
  /// Frames of runs not yet known to be in the followed tree: at most this many, for at most this long.
  static constexpr std::size_t k_max_pending_frames = 1024;
  static constexpr std::chrono::seconds k_pending_frame_limit{2};

 private:
  /// Whether this stream holds the gate now; applies a change to the hub's count. Under m_; returns the
  /// hub when the change opened the gate (its waiters are woken outside the lock).
  std::shared_ptr<event_hub> gate_update_locked();
  void deliver_or_queue_locked(stream_event e, std::function<void()>& wake);
  std::optional<stream_event> pop_locked();
  bool in_tree_locked(const stream_event& e);
  /// Queues a frame, or hands it to a waiting next() (`waiter`, `handed`) when nothing else waits.
  void queue_frame_locked(stream_event e, std::function<void(std::optional<stream_event>)>& waiter,
                          std::optional<stream_event>& handed);

  std::weak_ptr<event_hub> hub_;
  const boost::asio::execution_context& home_;
  const stream_options options_;
  mutable std::mutex m_;
  std::deque<std::pair<std::uint64_t, stream_event>> events_;
  std::optional<stream_event> returned_;  // see give_back
  struct frame_slot {
    std::deque<std::pair<std::uint64_t, stream_event>> frames;
    std::int64_t missed = 0;
  };
  std::map<run_id, frame_slot> frames_;
  std::size_t frame_count_ = 0;
  std::uint64_t arrivals_ = 0;
  /// A pending next(): called with what it returns.
  std::function<void(std::optional<stream_event>)> waiter_;
  bool ended_ = false;
  bool closed_ = false;
  bool holds_gate_ = false;
  struct pending_frame {
    std::chrono::steady_clock::time_point since;
    stream_event event;
  };
  std::deque<pending_frame> pending_frames_;
  std::unordered_set<run_id> tree_;
  bool tree_loaded_ = false;
};

/// Owned by the engine (shared: streams hold it weakly, and may outlive the engine).
class event_hub : public std::enable_shared_from_this<event_hub> {
 public:
  event_hub(boost::asio::io_context& ioc, storage::store& store, std::string worker_id,
            std::chrono::milliseconds poll_interval, std::function<void()> gate_opened);

  /// A new stream: it gets every event committed after this returns (and perhaps a few before). The
  /// follower starts with the first stream and stops after the last. Errors: from storage.
  boost::asio::awaitable<result<std::shared_ptr<subscription>>> subscribe(stream_options options);
  void unsubscribe(const subscription* s);

  /// The run log grew (here or on another worker): read it now. Any thread.
  void log_appended();
  /// A frame another worker published (store listener thread).
  void remote_frame(std::string_view payload);
  /// ctx.emit: publishes `frame` for the run, here and to other workers, unless its lease is gone. On the
  /// run's strand.
  void emit_frame(run_state& st, boost::json::value frame);

  /// A bounded stream holds the gate closed: runs pause before their next unit of work.
  [[nodiscard]] bool paused() const noexcept {
    return closed_.load(std::memory_order_acquire) > 0 && !released_.load(std::memory_order_acquire);
  }
  /// Before a run's next unit of work: waits while paused(), unless the run must stop anyway (lost lease,
  /// cancel request, engine stopping; cut short like a retry backoff). On the run's strand.
  boost::asio::awaitable<void> pause_point(run_state& st);
  /// A stream's gate holding changed by `delta` (+1 closed, -1 opened). Returns true when that opened
  /// the gate: the caller then calls open_gate_waiters() (outside its lock).
  bool gate_changed(int delta);
  void open_gate_waiters();

  /// engine::stop: runs pause no more.
  void release_gate();
  /// engine::stop, once runs are done: opens the gate for good, delivers what the log holds until now (within
  /// `deadline`), then ends every stream.
  boost::asio::awaitable<void> finish(std::chrono::milliseconds deadline);

 private:
  boost::asio::awaitable<result<std::shared_ptr<subscription>>> join(std::shared_ptr<subscription> sub);
  boost::asio::awaitable<void> finish_on_strand(std::chrono::milliseconds deadline);
  boost::asio::awaitable<void> follow();
  /// One read and its dispatch. Returns whether to read again at once (a full page), and sets `held` and
  /// how many events it `got`.
  boost::asio::awaitable<bool> read_once(bool& held, std::size_t& got);
  /// Fills in each event's workflow and parent (runs_, and what it does not know from the database).
  boost::asio::awaitable<void> describe_runs(std::vector<storage::log_event>& events);
  void dispatch(stream_event e, const std::vector<std::shared_ptr<subscription>>& subs);
  void dispatch_frame(stream_event e);
  std::vector<std::shared_ptr<subscription>> live_subscriptions();
  void end_all();

  boost::asio::io_context& ioc_;
  storage::store& store_;
  const std::string worker_id_;
  const std::chrono::milliseconds poll_interval_;
  std::function<void()> gate_opened_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;  // the follower's
  boost::asio::steady_timer wake_;                                      // on strand_
  std::atomic<bool> wake_requested_{false};

  std::mutex m_;  // guards everything below
  std::vector<std::weak_ptr<subscription>> subs_;
  bool following_ = false;
  bool ending_ = false;
  bool ended_ = false;
  std::vector<std::shared_ptr<boost::asio::steady_timer>> gate_waiters_;
  /// The newest epoch seen per run (run_started events, frames): frames of older executions are dropped.
  std::unordered_map<run_id, std::int64_t> epochs_;

  std::atomic<int> closed_{0};
  std::atomic<bool> released_{false};
  /// Follower state (on strand_): the last position delivered; -1 before the first read.
  std::int64_t cursor_ = -1;
  /// Counts the times cursor_ was set from the log's top (on strand_): a join that suspended sees whether
  /// the follower went idle and started afresh meanwhile.
  std::uint64_t cursor_starts_ = 0;
  /// A bounded stream is open (as of the last read): reads do not wait for events to gather.
  bool any_bounded_ = false;
  /// The retention horizon last reported as a gap.
  std::int64_t gap_reported_ = 0;
  struct run_description {
    std::string workflow;
    std::optional<run_id> parent;
  };
  std::unordered_map<run_id, run_description> runs_;
  /// The follower has ended (after finish()).
  boost::asio::steady_timer finished_;
  bool follower_done_ = true;
};

}  // namespace keel::detail
