#include "keel/storage/store.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "async_bridge.hpp"
#include "connection_pool.hpp"
#include "group_writer.hpp"
#include "keel/common/log.hpp"
#include "migrations.hpp"
#include "run_listener.hpp"
#include "statements.hpp"

namespace keel::storage {
namespace detail {
namespace {

namespace json = boost::json;
using std::chrono::steady_clock;

std::int64_t to_micros(clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

clock::time_point from_micros(std::string_view text) {
  return clock::time_point{std::chrono::microseconds{std::stoll(std::string(text))}};
}

std::optional<clock::time_point> opt_time(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return std::nullopt;
  return from_micros(get_text(r, row, col));
}

json::value parse_json(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return nullptr;
  return json::parse(get_text(r, row, col));
}

int to_int(std::string_view s) {
  return static_cast<int>(std::stol(std::string(s)));
}

/// Rows of keel_load_steps (first column run_id) grouped onto their runs, in seq order.
void read_steps(const PGresult* r, const std::function<std::vector<step_record>*(std::string_view)>& target) {
  for (int row = 0; row < PQntuples(r); ++row) {
    auto* steps = target(get_text(r, row, 0));
    if (steps == nullptr) continue;
    step_record s;
    s.seq = to_int(get_text(r, row, 1));
    s.name = std::string(get_text(r, row, 2));
    s.failed = get_text(r, row, 3) == "failed";
    s.output = parse_json(r, row, 4);
    s.error = parse_json(r, row, 5);
    s.attempts = to_int(get_text(r, row, 6));
    s.started_at = from_micros(get_text(r, row, 7));
    s.finished_at = from_micros(get_text(r, row, 8));
    steps->push_back(std::move(s));
  }
}

/// A PostgreSQL array literal (text[], uuid[]); every element quoted, so any name is safe.
std::string text_array(const std::vector<std::string>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out.push_back(',');
    out.push_back('"');
    for (char ch : items[i]) {
      if (ch == '"' || ch == '\\') out.push_back('\\');
      out.push_back(ch);
    }
    out.push_back('"');
  }
  out.push_back('}');
  return out;
}

json::object lease_row(const lease_token& l) {
  json::object row;
  row["id"] = l.id;
  row["owner"] = l.owner;
  row["epoch"] = l.epoch;
  return row;
}

}  // namespace

class store_impl {
 public:
  explicit store_impl(store_options o)
      : options_(std::move(o)),
        pool_(options_.conninfo, options_.pool_size, "pool"),
        writer_(options_.conninfo, options_.writers, options_.max_batch) {}

  /// Runs `fn` on a pool connection and resumes the caller with its result. `fn` returns the result, or
  /// errc::connection_lost to be retried on a fresh connection (only for statements safe to repeat).
  template <class T>
  boost::asio::awaitable<result<T>> on_pool(std::function<result<T>(pg_connection&)> fn,
                                            steady_clock::time_point deadline, bool urgent = false) {
    return await_completion<T>([this, fn = std::move(fn), deadline,
                                urgent](std::function<void(result<T>)> done) {
      auto shared_done = std::make_shared<std::function<void(result<T>)>>(std::move(done));
      pool_.submit(db_job{[fn, shared_done](pg_connection& c) {
                            auto r = fn(c);
                            if (!r && r.error() == errc::connection_lost) return job_outcome::reconnect;
                            (*shared_done)(std::move(r));
                            return job_outcome::done;
                          },
                          [shared_done](error_code ec) { (*shared_done)(result<T>(ec)); }, deadline, urgent});
    });
  }

  /// A write the engine makes for a run it holds: waits out database outages (no deadline).
  boost::asio::awaitable<result<void>> write_void(write_op::kind k, json::object row) {
    auto r = co_await write(k, std::move(row), steady_clock::time_point::max());
    if (!r) co_return r.error();
    co_return result<void>{};
  }

  steady_clock::time_point request_deadline() const { return steady_clock::now() + options_.request_timeout; }

  boost::asio::awaitable<result<enqueue_outcome>> write(write_op::kind k, json::object row,
                                                        steady_clock::time_point deadline) {
    return await_completion<enqueue_outcome>(
        [this, k, row = std::move(row), deadline](std::function<void(result<enqueue_outcome>)> done) mutable {
          writer_.submit(write_op{k, std::move(row), std::move(done), deadline});
        });
  }

  store_options options_;
  connection_pool pool_;
  group_writer writer_;
  std::unique_ptr<run_listener> listener_;
};

}  // namespace detail

using detail::pg_connection;
namespace json = boost::json;

store::store(store_options options) : impl_(std::make_unique<detail::store_impl>(std::move(options))) {}

store::~store() {
  stop_blocking();
}

void store::on_runs_enqueued(std::function<void()> callback) {
  impl_->listener_ = std::make_unique<detail::run_listener>(impl_->options_.conninfo, std::move(callback));
}

void store::stop_blocking() {
  if (impl_->listener_) impl_->listener_->stop();
  // Writes first: finishing runs may still be committing; then the pool.
  impl_->writer_.stop();
  impl_->pool_.stop();
}

store_stats store::stats() const noexcept {
  return {impl_->writer_.batches.load(std::memory_order_relaxed),
          impl_->writer_.writes.load(std::memory_order_relaxed)};
}

result<void> store::migrate_blocking() {
  pg_connection conn(impl_->options_.conninfo);
  if (auto c = conn.connect_blocking(); !c) {
    log::error("storage", "migrate: cannot connect: " + conn.last_error());
    return c;
  }
  // One transaction under a transaction-scoped advisory lock: concurrent starters apply each migration once.
  std::string script =
      "BEGIN;\n"
      "SELECT pg_advisory_xact_lock(7240617305);\n"
      "CREATE SCHEMA IF NOT EXISTS keel;\n"
      "CREATE TABLE IF NOT EXISTS keel.schema_migrations (version int PRIMARY KEY, name text NOT NULL,\n"
      "  applied_at timestamptz NOT NULL DEFAULT now());\n";
  if (auto r = conn.exec_script_blocking(script); !r) {
    log::error("storage", "migrate: " + conn.last_error());
    return r;
  }
  std::vector<std::optional<std::string>> none;
  detail::statement applied_q{"keel_migrations_applied", "SELECT version FROM keel.schema_migrations"};
  auto applied = conn.exec_blocking(applied_q, none);
  if (!applied) {
    log::error("storage", "migrate: " + conn.last_error());
    return applied.error();
  }
  std::vector<int> done;
  for (int row = 0; row < PQntuples(applied->get()); ++row)
    done.push_back(detail::to_int(detail::get_text(applied->get(), row, 0)));
  for (const auto& m : detail::migrations()) {
    if (std::find(done.begin(), done.end(), m.version) != done.end()) continue;
    log::info("storage", "applying migration " + std::to_string(m.version) + "_" + std::string(m.name));
    if (auto r = conn.exec_script_blocking(m.sql); !r) {
      log::error("storage", "migration " + std::to_string(m.version) + " failed: " + conn.last_error());
      return r;
    }
    detail::statement record{"keel_migration_record",
                             "INSERT INTO keel.schema_migrations (version, name) VALUES ($1::int, $2)"};
    if (auto r = conn.exec_blocking(record, {std::to_string(m.version), std::string(m.name)}); !r) {
      log::error("storage", "migrate: " + conn.last_error());
      return r.error();
    }
  }
  if (auto r = conn.exec_script_blocking("COMMIT"); !r) {
    log::error("storage", "migrate: commit failed: " + conn.last_error());
    return r;
  }
  return {};
}

boost::asio::awaitable<result<enqueue_outcome>> store::enqueue(const new_run& run) {
  json::object row;
  row["id"] = run.id;
  row["workflow"] = run.workflow;
  row["version"] = run.version;
  row["input"] = run.input;
  if (run.idempotency_key) {
    row["key"] = *run.idempotency_key;
  } else {
    row["key"] = nullptr;
  }
  row["priority"] = run.priority;
  if (run.run_at) {
    row["run_at"] = detail::to_micros(*run.run_at);
  } else {
    row["run_at"] = nullptr;
  }
  return impl_->write(detail::write_op::kind::enqueue, std::move(row), impl_->request_deadline());
}

boost::asio::awaitable<result<void>> store::checkpoint(const step_checkpoint& cp) {
  auto row = detail::lease_row(cp.lease);
  row["seq"] = cp.step.seq;
  row["name"] = cp.step.name;
  row["status"] = cp.step.failed ? "failed" : "completed";
  row["output"] = cp.step.output;
  row["error"] = cp.step.error;
  row["attempts"] = cp.step.attempts;
  row["started"] = detail::to_micros(cp.step.started_at);
  row["finished"] = detail::to_micros(cp.step.finished_at);
  return impl_->write_void(detail::write_op::kind::checkpoint, std::move(row));
}

boost::asio::awaitable<result<void>> store::finish(const run_finish& f) {
  auto row = detail::lease_row(f.lease);
  row["status"] = to_string(f.status);
  row["output"] = f.output;
  row["error"] = f.error;
  return impl_->write_void(detail::write_op::kind::finish, std::move(row));
}

boost::asio::awaitable<result<std::vector<claimed_run>>> store::claim(
    const std::string& owner, const std::vector<std::string>& workflows, std::size_t max,
    std::chrono::milliseconds lease) {
  return impl_->on_pool<std::vector<claimed_run>>(
      [owner, names = detail::text_array(workflows), max,
       lease](pg_connection& c) -> result<std::vector<claimed_run>> {
        auto r = c.exec_blocking(detail::sql::claim_runs,
                                 {owner, std::to_string(max), std::to_string(lease.count()), names});
        if (!r) return r.error();
        std::vector<claimed_run> out;
        const PGresult* res = r->get();
        std::vector<std::string> with_steps;
        out.reserve(static_cast<std::size_t>(PQntuples(res)));
        for (int row = 0; row < PQntuples(res); ++row) {
          claimed_run run;
          run.id = std::string(detail::get_text(res, row, 0));
          run.workflow = std::string(detail::get_text(res, row, 1));
          run.version = detail::to_int(detail::get_text(res, row, 2));
          run.input = detail::parse_json(res, row, 3);
          run.epoch = std::stoll(std::string(detail::get_text(res, row, 4)));
          run.claims = detail::to_int(detail::get_text(res, row, 5));
          if (detail::to_int(detail::get_text(res, row, 6)) > 0) with_steps.push_back(run.id);
          out.push_back(std::move(run));
        }
        if (!with_steps.empty()) {
          // Only runs that checkpointed before (a reclaim or a resume) need a second round trip.
          auto steps = c.exec_blocking(detail::sql::load_steps, {detail::text_array(with_steps)});
          // The claim committed; if the steps cannot be read now, the runs' leases lapse and they are
          // claimed again later. Report the error so the caller does not run them without their history.
          if (!steps) return steps.error() == errc::connection_lost ? errc::query_failed : steps.error();
          detail::read_steps(steps->get(), [&](std::string_view id) -> std::vector<step_record>* {
            for (auto& run : out) {
              if (run.id == id) return &run.steps;
            }
            return nullptr;
          });
        }
        return out;
      },
      std::chrono::steady_clock::time_point::max());
}

boost::asio::awaitable<result<std::vector<run_id>>> store::heartbeat(const std::vector<lease_token>& held,
                                                                     std::chrono::milliseconds lease) {
  json::array rows;
  for (const auto& l : held)
    rows.push_back(detail::lease_row(l));
  return impl_->on_pool<std::vector<run_id>>(
      [held = std::move(held), rows = json::serialize(rows),
       lease](pg_connection& c) -> result<std::vector<run_id>> {
        auto r = c.exec_blocking(detail::sql::heartbeat, {rows, std::to_string(lease.count())});
        if (!r) return r.error();
        std::vector<run_id> lost;
        const PGresult* res = r->get();
        for (const auto& l : held) {
          bool kept = false;
          for (int row = 0; row < PQntuples(res) && !kept; ++row)
            kept = detail::get_text(res, row, 0) == l.id;
          if (!kept) lost.push_back(l.id);
        }
        return lost;
      },
      impl_->request_deadline(), /*urgent=*/true);
}

boost::asio::awaitable<result<void>> store::release(const lease_token& lease) {
  return impl_->on_pool<void>(
      [lease](pg_connection& c) -> result<void> {
        auto r =
            c.exec_blocking(detail::sql::release_run, {lease.id, lease.owner, std::to_string(lease.epoch)});
        if (!r) return r.error();
        if (PQntuples(r->get()) == 0) return errc::fenced;
        return {};
      },
      impl_->request_deadline());
}

boost::asio::awaitable<result<run_record>> store::get(const run_id& id) {
  return impl_->on_pool<run_record>(
      [id](pg_connection& c) -> result<run_record> {
        auto r = c.exec_blocking(detail::sql::get_run, {id});
        if (!r) return r.error();
        const PGresult* res = r->get();
        if (PQntuples(res) == 0) return errc::not_found;
        run_record rec;
        rec.id = std::string(detail::get_text(res, 0, 0));
        rec.workflow = std::string(detail::get_text(res, 0, 1));
        rec.version = detail::to_int(detail::get_text(res, 0, 2));
        rec.status = run_status_from(detail::get_text(res, 0, 3)).value_or(run_status::queued);
        rec.input = detail::parse_json(res, 0, 4);
        rec.output = detail::parse_json(res, 0, 5);
        rec.error = detail::parse_json(res, 0, 6);
        if (!PQgetisnull(res, 0, 7)) rec.idempotency_key = std::string(detail::get_text(res, 0, 7));
        rec.priority = detail::to_int(detail::get_text(res, 0, 8));
        if (!PQgetisnull(res, 0, 9)) rec.owner = std::string(detail::get_text(res, 0, 9));
        rec.epoch = std::stoll(std::string(detail::get_text(res, 0, 10)));
        rec.claims = detail::to_int(detail::get_text(res, 0, 11));
        rec.created_at = detail::from_micros(detail::get_text(res, 0, 12));
        rec.started_at = detail::opt_time(res, 0, 13);
        rec.finished_at = detail::opt_time(res, 0, 14);
        auto steps = c.exec_blocking(detail::sql::load_steps, {detail::text_array({rec.id})});
        if (!steps) return steps.error();
        detail::read_steps(steps->get(), [&](std::string_view) { return &rec.steps; });
        return rec;
      },
      impl_->request_deadline());
}

boost::asio::awaitable<result<run_status>> store::cancel(const run_id& id) {
  return impl_->on_pool<run_status>(
      [id](pg_connection& c) -> result<run_status> {
        auto r = c.exec_blocking(detail::sql::cancel_run, {id});
        if (!r) return r.error();
        if (PQntuples(r->get()) == 1) return run_status::cancelled;
        auto s = c.exec_blocking(detail::sql::run_status_of, {id});
        if (!s) return s.error();
        if (PQntuples(s->get()) == 0) return errc::not_found;
        return run_status_from(detail::get_text(s->get(), 0, 0)).value_or(run_status::queued);
      },
      impl_->request_deadline());
}

}  // namespace keel::storage
