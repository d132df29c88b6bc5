#include "keel/storage/store.hpp"

#include "keel/common/trace_context.hpp"

#include <algorithm>
#include <boost/json/serialize.hpp>
#include <unordered_set>

#include "migrations.hpp"
#include "statements.hpp"
#include "step_rows.hpp"

#include "store_impl.hpp"

namespace keel::storage {
namespace detail {

namespace json = boost::json;

std::int64_t to_micros(clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

std::optional<clock::time_point> opt_time(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return std::nullopt;
  return from_micros(get_text(r, row, col));
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

row_text lease_row(const lease_token& l) {
  row_text row;
  row.str("id", l.id).str("owner", l.owner).num("epoch", l.epoch);
  return row;
}

/// `[{"workflow": name, "version": n}, ...]`.
std::string versions_json(const std::vector<workflow_version>& workflows) {
  std::string out = "[";
  for (const auto& w : workflows) {
    if (out.size() > 1) out.push_back(',');
    row_text row;
    row.str("workflow", valid_utf8(w.name)).num("version", w.version);
    out += std::move(row).finish();
  }
  out.push_back(']');
  return out;
}

std::string unclaimable_reason(std::string_view workflow, int version) {
  return "no live worker has registered workflow '" + std::string(workflow) + "' version " +
         std::to_string(version);
}

/// What every session pins, whatever the server's, database's or role's defaults say.
std::string session_sql(const store_options& o) {
  auto ms = [](auto d) { return std::to_string(std::chrono::milliseconds(d).count()); };
  // jit off: every statement here is short and key-driven, and the pinned access paths make the planner's
  // cost of an unavoidable small scan (keel.workers) huge, which would JIT-compile each get (~100 ms).
  return "SET synchronous_commit = on;"
         "SET jit = off;"
         "SET default_transaction_isolation = 'read committed';"
         "SET statement_timeout = " +
         ms(o.statement_timeout) + ";SET lock_timeout = " + ms(o.lock_timeout) +
         ";SET idle_in_transaction_session_timeout = " + ms(o.idle_in_transaction_timeout) + ";";
}

connection_config config_for(const store_options& o) {
  connection_config c;
  c.conninfo = o.conninfo;
  c.defaults = {{"connect_timeout", std::to_string(std::max<std::int64_t>(1, o.connect_timeout.count()))},
                {"tcp_user_timeout", std::to_string(o.tcp_user_timeout.count())},
                // An idle connection (the listener) to a vanished server is noticed within ~25 s.
                {"keepalives", "1"},
                {"keepalives_idle", "10"},
                {"keepalives_interval", "5"},
                {"keepalives_count", "3"}};
  c.session_sql = session_sql(o);
  return c;
}

connection_config writer_config_for(const store_options& o) {
  auto c = config_for(o);
  // The claim is the writer's one statement PostgreSQL keeps planning afresh (its custom plans look cheaper
  // than the generic one by the planner's estimates), and its plan is the same for every batch: planning it
  // per claim cost ~12% of noop3's throughput. Its other statements turn generic after five runs anyway.
  c.session_sql += "SET plan_cache_mode = force_generic_plan;";
  return c;
}

/// A name or key that reaches SQL: present, at most k_max_key_bytes, valid UTF-8.
bool valid_key(std::string_view s) {
  return !s.empty() && s.size() <= k_max_key_bytes && is_valid_utf8(s);
}

bool valid_run_options(const new_run& run) {
  // Each unit of a key's limit is a row (keel.concurrency_slots, keel.throttle_slots).
  constexpr int k_max_slots = 10'000;
  constexpr auto k_longest_window = std::chrono::milliseconds(366LL * 24 * 3600 * 1000);
  const auto valid_limit = [](const std::optional<int>& l) { return !l || (*l > 0 && *l <= k_max_slots); };
  return (!run.concurrency_key || valid_key(*run.concurrency_key)) && valid_limit(run.concurrency_limit) &&
         (!run.throttle_key || valid_key(*run.throttle_key)) && valid_limit(run.throttle_limit) &&
         (!run.throttle_window ||
          (run.throttle_window->count() > 0 && *run.throttle_window <= k_longest_window)) &&
         (!run.fairness_key || valid_key(*run.fairness_key)) &&
         (!run.fairness_weight ||
          (*run.fairness_weight > 0 && *run.fairness_weight <= k_max_fairness_weight)) &&
         (!run.traceparent || parse_traceparent(*run.traceparent).has_value());
}

}  // namespace detail

using detail::pg_connection;
namespace json = boost::json;

store::store(store_options options) : impl_(std::make_unique<detail::store_impl>(std::move(options))) {}

store::~store() {
  stop_blocking();
}

void store::outlived_by(const boost::asio::execution_context& ctx) {
  impl_->home_.store(&ctx, std::memory_order_release);
}

void store::listen(store_listeners listeners) {
  if (impl_->listener_) return;
  impl_->listener_ = std::make_unique<detail::run_listener>(impl_->config_, std::move(listeners));
  impl_->live_listener_.store(impl_->listener_.get(), std::memory_order_release);
}

void store::on_local_commit(std::function<void()> callback) {
  if (impl_->local_commit_holder_) return;
  impl_->local_commit_holder_ = std::make_unique<std::function<void()>>(std::move(callback));
  impl_->local_commit_.store(impl_->local_commit_holder_.get(), std::memory_order_release);
}

bool store::publish_frame(std::string payload) {
  auto* l = impl_->live_listener_.load(std::memory_order_acquire);
  return l != nullptr && l->publish_frame(std::move(payload));
}

void store::stop_listening() noexcept {
  if (impl_->listener_) impl_->listener_->request_stop();
}

void store::stop_blocking() {
  impl_->live_listener_.store(nullptr, std::memory_order_release);
  if (impl_->listener_) impl_->listener_->stop();
  // Writes first: finishing runs may still be committing; then the pool.
  impl_->writer_.stop();
  impl_->pool_.stop();
}

const store_options& store::options() const noexcept {
  return impl_->options_;
}

store_stats store::stats() const noexcept {
  return {impl_->writer_.batches.load(std::memory_order_relaxed),
          impl_->writer_.writes.load(std::memory_order_relaxed)};
}

result<void> store::migrate_blocking() {
  pg_connection conn(impl_->config_);
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
  // Limits before SQL: a refused write must fail here, alone, not inside a batch.
  if (!detail::valid_key(run.workflow) || (run.idempotency_key && !detail::valid_key(*run.idempotency_key)) ||
      !is_valid_run_id(run.id) || !detail::valid_run_options(run)) {
    co_return errc::invalid_argument;
  }
  if (auto c = impl_->check(run.input, "input", run.id); !c) co_return c.error();
  detail::row_text row;
  row.str("id", run.id).str("workflow", run.workflow).num("version", run.version).value("input", run.input);
  if (run.idempotency_key) {
    row.str("key", *run.idempotency_key);
  } else {
    row.null("key");
  }
  row.num("priority", run.priority);
  if (run.run_at) {
    row.num("run_at", detail::to_micros(*run.run_at));
  } else {
    row.null("run_at");
  }
  if (run.concurrency_key) row.str("ckey", *run.concurrency_key);
  if (run.concurrency_limit) row.num("climit", *run.concurrency_limit);
  if (run.throttle_key) row.str("tkey", *run.throttle_key);
  if (run.throttle_limit) row.num("tlimit", *run.throttle_limit);
  if (run.throttle_window) row.num("twindow", run.throttle_window->count());
  if (run.fairness_key) row.str("fkey", *run.fairness_key);
  if (run.traceparent) row.str("tp", *run.traceparent);
  if (run.fairness_weight) row.num("fweight", *run.fairness_weight);
  // Named first: GCC 12 destroys a class temporary built inside a co_await expression twice.
  auto text = std::move(row).finish();
  co_return co_await impl_->write<enqueue_outcome>(detail::enqueue_kind(), std::move(text),
                                                   impl_->request_deadline());
}

void store::append_log(const lease_token& lease, std::string_view kind, const boost::json::value& data,
                       std::function<void()> settled) {
  if (!impl_->check(data, "log event", lease.id)) {
    if (settled) settled();
    return;
  }
  auto row = detail::lease_row(lease);
  row.str("kind", kind).value("data", data);
  auto text = std::move(row).finish();
  // Not awaited: the writer commits it with whatever comes next; its outcome changes nothing.
  impl_->writer_.submit(std::make_unique<detail::typed_write<detail::applied>>(
      detail::append_log_kind(), std::move(text), std::chrono::steady_clock::time_point::max(),
      [settled = std::move(settled)](result<detail::applied>) {
        if (settled) settled();
      }));
}

boost::asio::awaitable<result<void>> store::write_output(const output_flush& f) {
  if (!detail::valid_key(f.stream)) co_return errc::invalid_argument;
  for (const auto& c : f.chunks) {
    if (auto ok = impl_->check(c, "output chunk", f.lease.id); !ok) co_return ok.error();
  }
  auto row = detail::lease_row(f.lease);
  row.str("stream", f.stream).num("generation", f.generation).num("seq", f.seq).num("attempt", f.attempt);
  row.values("chunks", f.chunks);
  if (f.close) row.value("close", boost::json::value(true)).num("close_seq", f.close_seq);
  row.str("token", new_run_id());  // a UUIDv7: the flush's own, so that a retried transaction finds it
  auto text = std::move(row).finish();
  co_return co_await impl_->write_fenced(detail::output_kind(), std::move(text));
}

boost::asio::awaitable<result<output_page>> store::read_output(const run_id& run, const std::string& stream,
                                                               std::int64_t from, std::size_t limit) {
  if (!is_valid_run_id(run) || !detail::valid_key(stream) || from < 0 || limit == 0 || limit > 10'000)
    co_return errc::invalid_argument;
  std::vector<std::optional<std::string>> params{run, stream, std::to_string(from), std::to_string(limit)};
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<output_page>(pg_connection&)> read =
      [params = std::move(params)](pg_connection& c) -> result<output_page> {
    auto r = c.exec_blocking(detail::sql::output_read, params);
    if (!r) return r.error();
    const PGresult* res = r->get();
    output_page page;
    for (int row = 0; row < PQntuples(res); ++row) {
      if (row == 0) {
        page.closed = detail::get_text(res, 0, 0) == "t";
        page.run_ended = detail::get_text(res, 0, 1) == "t";
        page.trims = std::stoi(std::string(detail::get_text(res, 0, 4)));
        if (!PQgetisnull(res, 0, 5)) page.trimmed_from = std::stoll(std::string(detail::get_text(res, 0, 5)));
      }
      if (PQgetisnull(res, row, 2)) continue;
      page.chunks.emplace_back(std::stoll(std::string(detail::get_text(res, row, 2))),
                               detail::parse_json(res, row, 3));
    }
    return page;
  };
  co_return co_await impl_->on_pool<output_page>(std::move(read), impl_->request_deadline());
}

boost::asio::awaitable<result<void>> store::checkpoint(const step_checkpoint& cp) {
  if (auto c = impl_->check(cp.step.output, "step output", cp.lease.id); !c) co_return c.error();
  if (auto c = impl_->check(cp.step.error, "step error", cp.lease.id); !c) co_return c.error();
  auto name = valid_utf8(cp.step.name);
  std::optional<std::string> branch;
  if (cp.step.branch) branch = valid_utf8(*cp.step.branch);
  auto row = detail::lease_row(cp.lease);
  row.num("seq", cp.step.seq)
      .str("name", name)
      .str("status", cp.step.failed ? "failed" : "completed")
      .value("output", cp.step.output)
      .value("error", cp.step.error)
      .num("attempts", cp.step.attempts)
      .num("started", detail::to_micros(cp.step.started_at))
      .num("finished", detail::to_micros(cp.step.finished_at));
  if (branch) row.str("branch", *branch).num("branch_seq", cp.step.branch_seq);
  if (cp.step.log_start) row.value("log_start", boost::json::value(true));
  auto text = std::move(row).finish();
  // Before it is sent: a log follower woken by its commit finds the details here (step_details_cache).
  impl_->step_details_.put(cp.lease.id, cp.lease.epoch, cp.step, name, branch, text.size());
  auto written = co_await impl_->write_fenced(detail::checkpoint_kind(), std::move(text));
  if (!written) impl_->step_details_.drop(cp.lease.id, cp.lease.epoch, cp.step.seq);
  co_return written;
}

boost::asio::awaitable<result<void>> store::finish(const run_finish& f) {
  if (auto c = impl_->check(f.output, "output", f.lease.id); !c) co_return c.error();
  if (auto c = impl_->check(f.error, "error", f.lease.id); !c) co_return c.error();
  auto row = detail::lease_row(f.lease);
  row.str("status", to_string(f.status)).value("output", f.output).value("error", f.error);
  auto text = std::move(row).finish();
  co_return co_await impl_->write_fenced(detail::finish_kind(), std::move(text));
}

boost::asio::awaitable<result<retry_outcome>> store::retry(const run_id& id) {
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  // One transaction, the run locked first: two retries at once, or a retry racing a worker, see one
  // status. A failure whose compensations ran rolled back what the steps from the earliest undone one
  // did: those run again (a rewind to there), rather than replaying records of effects that no longer hold.
  std::function<result<retry_outcome>(pg_connection&)> retry =
      [id](pg_connection& c) -> result<retry_outcome> {
    const std::function<result<retry_outcome>()> body = [&]() -> result<retry_outcome> {
      auto locked = c.exec_blocking(detail::sql::retry_lock, {id});
      if (!locked) return locked.error();
      if (PQntuples(locked->get()) == 0) return errc::not_found;
      if (detail::get_text(locked->get(), 0, 0) != "failed") return retry_outcome::not_failed;
      if (!PQgetisnull(locked->get(), 0, 1)) {
        const std::string from(detail::get_text(locked->get(), 0, 1));
        auto r = c.exec_blocking(detail::sql::rewind_run, {id, from});
        if (!r) return r.error();
        return retry_outcome::retried;
      }
      auto r = c.exec_blocking(detail::sql::retry_run, {id});
      if (!r) return r.error();
      return detail::get_text(r->get(), 0, 0) == "1" ? retry_outcome::retried : retry_outcome::not_failed;
    };
    return detail::in_transaction(c, body);
  };
  auto done = co_await impl_->on_pool<retry_outcome>(std::move(retry), impl_->request_deadline());
  if (done) impl_->committed();  // it appended to the run log
  co_return done;
}

boost::asio::awaitable<result<std::int64_t>> store::rewind(const run_id& id, int from_step) {
  if (from_step < 0) co_return errc::invalid_argument;
  std::function<result<std::int64_t>(pg_connection&)> rewind =
      [id, from_step](pg_connection& c) -> result<std::int64_t> {
    const std::function<result<std::int64_t>()> body = [&]() -> result<std::int64_t> {
      auto locked = c.exec_blocking(detail::sql::rewind_lock, {id});
      if (!locked) return locked.error();
      if (PQntuples(locked->get()) == 0) return errc::not_found;
      auto r = c.exec_blocking(detail::sql::rewind_run, {id, std::to_string(from_step)});
      if (!r) return r.error();
      return std::int64_t{std::stoll(std::string(detail::get_text(r->get(), 0, 2)))};
    };
    return detail::in_transaction(c, body);
  };
  auto done = co_await impl_->on_pool<std::int64_t>(std::move(rewind), impl_->request_deadline());
  if (done) impl_->committed();  // it may have appended to the run log
  co_return done;
}

boost::asio::awaitable<result<void>> store::release(const lease_token& lease) {
  auto text = detail::lease_row(lease).finish();
  co_return co_await impl_->write_fenced(detail::release_kind(), std::move(text));
}

boost::asio::awaitable<result<claim_outcome>> store::claim(const claim_request& request) {
  auto wanted = detail::versions_json(request.workflows);
  std::vector<std::optional<std::string>> params{request.owner,
                                                 std::to_string(request.max),
                                                 std::to_string(request.lease.count()),
                                                 std::move(wanted),
                                                 std::to_string(request.max_recoveries),
                                                 new_run_id(),  // the claim's token (a UUIDv7)
                                                 "false"};      // set per attempt by the claim kind
  // In the writer's transactions: a claim shares its commit with the checkpoints and finishes of the batch.
  const auto submitted = std::chrono::steady_clock::now();
  auto claimed = co_await detail::await_completion<claim_outcome>(
      [this, &params](std::function<void(result<claim_outcome>)> done) {
        impl_->writer_.submit(
            std::make_unique<detail::claim_write>(detail::claim_kind(), std::move(params), std::move(done)));
      });
  if (!claimed) co_return claimed.error();
  impl_->claim_seconds.observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - submitted).count());
  std::vector<std::string> with_steps;
  for (const auto& run : claimed->runs) {
    if (run.recorded_steps > 0) with_steps.push_back(run.id);
  }
  if (with_steps.empty()) co_return std::move(claimed);
  // Only runs that checkpointed before (a reclaim or a resume) need their history.
  auto outcome = std::make_shared<claim_outcome>(std::move(*claimed));
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<void>(pg_connection&)> load =
      [outcome, ids = detail::text_array(with_steps)](pg_connection& c) -> result<void> {
    auto steps = c.exec_blocking(detail::sql::load_steps, {ids});
    if (!steps) return steps.error();
    detail::read_steps(steps->get(), [&](std::string_view id) -> std::vector<step_record>* {
      for (auto& run : outcome->runs) {
        if (run.id == id) return &run.steps;
      }
      return nullptr;
    });
    return {};
  };
  auto loaded = co_await impl_->on_pool<void>(std::move(load), std::chrono::steady_clock::time_point::max());
  // The claim committed; if the steps cannot be read, the runs' leases lapse and they are claimed again
  // later. Report the error so the caller does not run them without their history.
  if (!loaded) co_return loaded.error();
  for (auto& run : outcome->runs)
    run.recorded_steps = static_cast<int>(run.steps.size());
  co_return std::move(*outcome);
}

boost::asio::awaitable<result<claim_outcome>> store::claim_parked(const claim_request& request,
                                                                  const run_id& id, clock::time_point now) {
  if (!is_valid_run_id(id)) co_return errc::invalid_argument;
  std::vector<std::optional<std::string>> params{request.owner,
                                                 id,
                                                 std::to_string(detail::to_micros(now)),
                                                 new_run_id(),  // the claim's token
                                                 std::to_string(request.lease.count()),
                                                 "false"};  // set per attempt by the kind
  co_return co_await detail::await_completion<claim_outcome>(
      [this, &params](std::function<void(result<claim_outcome>)> done) {
        impl_->writer_.submit(std::make_unique<detail::claim_write>(detail::claim_parked_kind(),
                                                                    std::move(params), std::move(done)));
      });
}

boost::asio::awaitable<result<std::vector<lease_token>>> store::heartbeat(
    const std::vector<lease_token>& held, std::chrono::milliseconds lease,
    std::vector<cancel_notice>* cancelling) {
  std::string rows = "[";
  for (const auto& l : held) {
    if (rows.size() > 1) rows.push_back(',');
    rows += detail::lease_row(l).finish();
  }
  rows.push_back(']');
  // Filled on the pool's thread, read here once the job completed (never through the caller's pointer, which
  // a job outliving a timed-out request could otherwise reach).
  auto notices = std::make_shared<std::vector<cancel_notice>>();
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<std::vector<lease_token>>(pg_connection&)> beat =
      [held, rows = std::move(rows), lease, notices](pg_connection& c) -> result<std::vector<lease_token>> {
    auto r = c.exec_blocking(detail::sql::heartbeat, {rows, std::to_string(lease.count())});
    if (!r) return r.error();
    const PGresult* res = r->get();
    std::unordered_set<std::string> kept;
    for (int row = 0; row < PQntuples(res); ++row) {
      std::string id(detail::get_text(res, row, 0));
      const std::string epoch(detail::get_text(res, row, 1));
      if (!PQgetisnull(res, row, 2)) {
        notices->push_back(
            {id, std::stoll(epoch),
             std::chrono::milliseconds(std::stoll(std::string(detail::get_text(res, row, 2))))});
      }
      kept.emplace(std::move(id) + "/" + epoch);
    }
    std::vector<lease_token> lost;
    for (const auto& l : held) {
      if (!kept.contains(l.id + "/" + std::to_string(l.epoch))) lost.push_back(l);
    }
    return lost;
  };
  auto lost = co_await impl_->on_pool<std::vector<lease_token>>(std::move(beat), impl_->request_deadline(),
                                                                /*urgent=*/true);
  if (lost && cancelling != nullptr) *cancelling = std::move(*notices);
  co_return lost;
}

boost::asio::awaitable<result<void>> store::register_worker(const std::string& owner,
                                                            const std::vector<workflow_version>& workflows,
                                                            std::chrono::milliseconds ttl) {
  auto wanted = detail::versions_json(workflows);
  return impl_->on_pool<void>(
      [owner, wanted = std::move(wanted), ttl](pg_connection& c) -> result<void> {
        auto r = c.exec_blocking(detail::sql::register_worker, {owner, wanted, std::to_string(ttl.count())});
        if (!r) return r.error();
        return {};
      },
      impl_->request_deadline());
}

boost::asio::awaitable<result<void>> store::unregister_worker(const std::string& owner) {
  return impl_->on_pool<void>(
      [owner](pg_connection& c) -> result<void> {
        auto r = c.exec_blocking(detail::sql::unregister_worker, {owner});
        if (!r) return r.error();
        return {};
      },
      impl_->request_deadline());
}

store_metrics store::metrics() const {
  return {impl_->claim_seconds.snapshot(), impl_->writer_.commit_seconds.snapshot(),
          impl_->writer_.batch_writes.snapshot()};
}

boost::asio::awaitable<result<readiness>> store::readiness_check(std::chrono::milliseconds within) {
  std::vector<int> expected;
  for (const auto& m : detail::migrations())
    expected.push_back(m.version);
  std::function<result<readiness>(pg_connection&)> check = [expected](pg_connection& c) -> result<readiness> {
    detail::statement applied_q{
        "keel_readiness",
        "SELECT version FROM keel.schema_migrations WHERE to_regclass('keel.schema_migrations') "
        "IS NOT NULL"};
    readiness out;
    out.expected = static_cast<int>(expected.size());
    auto applied = c.exec_blocking(applied_q, {});
    if (!applied) {
      // No migrations table yet: the database answers, and nothing is applied.
      if (applied.error() == errc::connection_lost) return applied.error();
      return out;
    }
    for (int row = 0; row < PQntuples(applied->get()); ++row) {
      const int v = detail::to_int(detail::get_text(applied->get(), row, 0));
      if (std::find(expected.begin(), expected.end(), v) != expected.end()) ++out.applied;
    }
    return out;
  };
  co_return co_await impl_->on_pool<readiness>(std::move(check), std::chrono::steady_clock::now() + within);
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
        rec.recoveries = detail::to_int(detail::get_text(res, 0, 15));
        if (detail::get_text(res, 0, 16) == "t") {
          rec.unclaimable = detail::unclaimable_reason(rec.workflow, rec.version);
        }
        rec.waiting_for = detail::parse_json(res, 0, 17);
        rec.history = detail::parse_json(res, 0, 18);
        rec.generation = detail::to_int(detail::get_text(res, 0, 19));
        if (!PQgetisnull(res, 0, 20)) rec.parent = std::string(detail::get_text(res, 0, 20));
        if (!PQgetisnull(res, 0, 21)) {
          rec.concurrency_key = std::string(detail::get_text(res, 0, 21));
          rec.concurrency_limit = detail::to_int(detail::get_text(res, 0, 22));
        }
        rec.waits_for_key = detail::get_text(res, 0, 23) == "t";
        if (!PQgetisnull(res, 0, 24)) {
          rec.throttle_key = std::string(detail::get_text(res, 0, 24));
          rec.throttle_limit = detail::to_int(detail::get_text(res, 0, 25));
          rec.throttle_window = std::chrono::milliseconds(detail::to_int64(detail::get_text(res, 0, 26)));
        }
        if (!PQgetisnull(res, 0, 27)) {
          rec.fairness_key = std::string(detail::get_text(res, 0, 27));
          rec.fairness_weight = detail::to_int(detail::get_text(res, 0, 28));
        }
        if (!PQgetisnull(res, 0, 29)) rec.traceparent = std::string(detail::get_text(res, 0, 29));
        auto steps = c.exec_blocking(detail::sql::load_steps, {detail::text_array({rec.id})});
        if (!steps) return steps.error();
        detail::read_steps(steps->get(), [&](std::string_view) { return &rec.steps; });
        auto hooks = c.exec_blocking(detail::sql::open_hooks, {rec.id});
        if (!hooks) return hooks.error();
        for (int row = 0; row < PQntuples(hooks->get()); ++row) {
          open_hook h;
          h.seq = detail::to_int(detail::get_text(hooks->get(), row, 0));
          h.name = std::string(detail::get_text(hooks->get(), row, 1));
          h.metadata = detail::parse_json(hooks->get(), row, 2);
          h.created_at = detail::from_micros(detail::get_text(hooks->get(), row, 3));
          h.expires_at = detail::opt_time(hooks->get(), row, 4);
          rec.generation = detail::to_int(detail::get_text(hooks->get(), row, 5));  // the hooks' own
          h.webhook = detail::get_text(hooks->get(), row, 6) == "t";
          rec.hooks.push_back(std::move(h));
        }
        return rec;
      },
      impl_->request_deadline());
}

boost::asio::awaitable<result<run_status>> store::cancel(const run_id& id, std::chrono::milliseconds grace) {
  const std::string grace_ms = std::to_string(std::max<std::int64_t>(0, grace.count()));
  std::function<result<run_status>(pg_connection&)> cancel =
      [id, grace_ms](pg_connection& c) -> result<run_status> {
    const std::function<result<run_status>()> body = [&]() -> result<run_status> {
      auto locked = c.exec_blocking(detail::sql::cancel_lock_tree, {id});
      if (!locked) return locked.error();
      auto r = c.exec_blocking(detail::sql::cancel_run, {id, grace_ms});
      if (!r) return r.error();
      if (PQntuples(r->get()) == 1) {
        // Its children too, recursively, including one inserted while the cancel waited for the run's lock.
        for (;;) {
          auto d = c.exec_blocking(detail::sql::cancel_descendants, {id, grace_ms});
          if (!d) return d.error();
          if (PQntuples(d->get()) == 0) break;
        }
        return run_status_from(detail::get_text(r->get(), 0, 0)).value_or(run_status::cancelled);
      }
      auto s = c.exec_blocking(detail::sql::run_status_of, {id});
      if (!s) return s.error();
      if (PQntuples(s->get()) == 0) return errc::not_found;
      return run_status_from(detail::get_text(s->get(), 0, 0)).value_or(run_status::queued);
    };
    return detail::in_transaction(c, body);
  };
  auto done = co_await impl_->on_pool<run_status>(std::move(cancel), impl_->request_deadline());
  if (done) impl_->committed();  // it may have appended to the run log
  co_return done;
}

}  // namespace keel::storage
