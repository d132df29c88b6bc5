#include "write_kinds.hpp"

#include <boost/json/parse.hpp>
#include <charconv>

#include "row_text.hpp"
#include "statements.hpp"
#include "step_rows.hpp"

namespace keel::storage::detail {
namespace {

std::size_t to_index(std::string_view ord) {
  std::size_t v = 0;
  std::from_chars(ord.data(), ord.data() + ord.size(), v);
  return v;
}

template <class T>
typed_write<T>& as(pending_write* w) {
  return static_cast<typed_write<T>&>(*w);
}

/// Inserts runs; resolves idempotency keys to the run that holds them; wakes idle workers elsewhere.
class enqueue_kind_t final : public write_kind {
 public:
  [[nodiscard]] int order() const noexcept override { return 0; }

  void add_statements(std::vector<pipeline_query>& tx, std::span<pending_write* const> writes,
                      bool /*again: inserts skip existing ids and keys, resolve reads them*/) const override {
    auto rows = rows_array(writes);
    tx.push_back({&sql::enqueue_insert, {rows}});
    tx.push_back({&sql::enqueue_resolve, {std::move(rows)}});
    tx.push_back({&sql::notify_runs, {}});
  }

  void complete(std::span<const pg_result> results, std::span<pending_write* const> writes) const override {
    std::vector<std::optional<enqueue_outcome>> resolved(writes.size());
    const PGresult* rr = results[1].get();
    for (int row = 0; row < PQntuples(rr); ++row) {
      const auto i = to_index(get_text(rr, row, 0)) - 1;
      if (i >= writes.size()) continue;
      std::string existing(get_text(rr, row, 1));
      const bool same = get_text(rr, row, 2) == "t";
      // The id is chosen by the client, so a run holding the key under our id is ours (inserted now, or by an
      // earlier attempt of this batch that committed before its connection broke).
      const bool ours = existing == row_field(writes[i]->row(), "id");
      resolved[i] = enqueue_outcome{std::move(existing), ours, !ours && !same};
    }
    for (std::size_t i = 0; i < writes.size(); ++i) {
      if (resolved[i]) {
        as<enqueue_outcome>(writes[i]).succeed(std::move(*resolved[i]));
      } else {
        // No key: the id is ours, inserted now or by an earlier attempt of this same batch.
        as<enqueue_outcome>(writes[i]).succeed(
            enqueue_outcome{std::string(row_field(writes[i]->row(), "id")), true, false});
      }
    }
  }
};

/// A claimed run as keel_claim_runs / keel_claim_parked return it; nullopt for one failed as dead_lettered
/// (its id in `dead`) or cancelled past its grace.
std::optional<claimed_run> read_claimed(const PGresult* res, int row, claim_outcome& out) {
  const auto finished = get_text(res, row, 8);
  if (finished == "t") {
    out.dead_lettered.emplace_back(get_text(res, row, 0));
    return std::nullopt;
  }
  if (finished == "p" || finished == "w") {  // parked: its concurrency key or throttle had no slot free
    ++out.parked;
    if (finished == "w") ++out.parked_for_throttle;
    return std::nullopt;
  }
  if (finished == "c") return std::nullopt;  // its cancel grace had passed: fenced and cancelled instead
  claimed_run run;
  run.id = std::string(get_text(res, row, 0));
  run.workflow = std::string(get_text(res, row, 1));
  run.version = to_int(get_text(res, row, 2));
  run.input = parse_stored_json(get_text(res, row, 3));
  run.epoch = std::stoll(std::string(get_text(res, row, 4)));
  run.claims = to_int(get_text(res, row, 5));
  run.recorded_steps = get_text(res, row, 6) == "t" ? 1 : 0;  // may have some: counted once loaded
  run.recoveries = to_int(get_text(res, row, 7));
  run.generation = to_int(get_text(res, row, 9));
  run.cancel_requested = get_text(res, row, 10) == "t";
  if (!PQgetisnull(res, row, 11)) run.parent = std::string(get_text(res, row, 11));
  if (!PQgetisnull(res, row, 12)) run.traceparent = std::string(get_text(res, row, 12));
  return run;
}

/// One claim statement per claim write (each with its own owner, limit and workflows).
class claim_kind_t final : public write_kind {
 public:
  [[nodiscard]] int order() const noexcept override { return 1; }

  void add_statements(std::vector<pipeline_query>& tx, std::span<pending_write* const> writes,
                      bool /*again: each claim counts its own attempts (claim token)*/) const override {
    for (auto* w : writes)
      tx.push_back({&sql::claim_runs, static_cast<claim_write*>(w)->next_attempt()});
  }

  void complete(std::span<const pg_result> results, std::span<pending_write* const> writes) const override {
    for (std::size_t i = 0; i < writes.size(); ++i) {
      const PGresult* res = results[i].get();
      claim_outcome out;
      out.runs.reserve(static_cast<std::size_t>(PQntuples(res)));
      for (int row = 0; row < PQntuples(res); ++row) {
        if (auto run = read_claimed(res, row, out)) out.runs.push_back(std::move(*run));
      }
      as<claim_outcome>(writes[i]).succeed(std::move(out));
    }
  }
};

/// Claims of one parked run each (keel_claim_parked), with its history loaded in the same transaction.
class claim_parked_kind_t final : public write_kind {
 public:
  [[nodiscard]] int order() const noexcept override { return 1; }

  void add_statements(std::vector<pipeline_query>& tx, std::span<pending_write* const> writes,
                      bool /*again: each claim counts its own attempts (claim token)*/) const override {
    for (auto* w : writes) {
      auto* claim = static_cast<claim_write*>(w);
      const auto& params = claim->next_attempt();
      tx.push_back({&sql::claim_parked, params});
      // Built with append: g++ 12 at -O3 reports a false -Wrestrict in `"{" + std::string&&`.
      std::string ids(1, '{');
      ids.append(params[1].value_or("")).push_back('}');
      tx.push_back({&sql::load_steps, {std::move(ids)}});
    }
  }

  void complete(std::span<const pg_result> results, std::span<pending_write* const> writes) const override {
    for (std::size_t i = 0; i < writes.size(); ++i) {
      const PGresult* res = results[2 * i].get();
      claim_outcome out;
      for (int row = 0; row < PQntuples(res); ++row) {
        if (auto run = read_claimed(res, row, out)) out.runs.push_back(std::move(*run));
      }
      for (auto& run : out.runs) {
        read_steps(results[2 * i + 1].get(), [&run](std::string_view id) -> std::vector<step_record>* {
          return id == run.id ? &run.steps : nullptr;
        });
        run.recorded_steps = static_cast<int>(run.steps.size());
      }
      as<claim_outcome>(writes[i]).succeed(std::move(out));
    }
  }
};

/// Durable waits: the fence (locking the run rows), then each wait decided (see sql::wait_decide and
/// sql::wait_any_decide).
class wait_kind_t final : public write_kind {
 public:
  wait_kind_t(const statement& decide, int order) : decide_(decide), order_(order) {}
  [[nodiscard]] int order() const noexcept override { return order_; }

  void add_statements(std::vector<pipeline_query>& tx, std::span<pending_write* const> writes,
                      bool /*again: a retry finds its run parked (fenced) or its record*/) const override {
    auto rows = rows_array(writes);
    tx.push_back({&sql::wait_lock, {rows}});
    tx.push_back({&decide_, {std::move(rows)}});
  }

  void complete(std::span<const pg_result> results, std::span<pending_write* const> writes) const override {
    std::vector<std::optional<wait_outcome>> decided(writes.size());
    const PGresult* r = results[1].get();
    for (int row = 0; row < PQntuples(r); ++row) {
      const auto i = to_index(get_text(r, row, 0)) - 1;
      if (i >= writes.size()) continue;
      const auto what = get_text(r, row, 1);
      wait_outcome out;
      out.outcome = what == "recorded"    ? wait_outcome::what::recorded
                    : what == "consumed"  ? wait_outcome::what::consumed
                    : what == "timed_out" ? wait_outcome::what::timed_out
                    : what == "cancel"    ? wait_outcome::what::cancel
                    : what == "blocked"   ? wait_outcome::what::blocked
                    : what == "ready"     ? wait_outcome::what::ready
                                          : wait_outcome::what::parked;
      out.output = parse_stored_json(get_text(r, row, 2));
      decided[i] = std::move(out);
    }
    for (std::size_t i = 0; i < writes.size(); ++i) {
      if (decided[i]) {
        as<wait_outcome>(writes[i]).succeed(std::move(*decided[i]));
      } else {
        writes[i]->fail(errc::fenced);
      }
    }
  }

 private:
  const statement& decide_;
  int order_;
};

/// Completes fenced writes from `r`, whose first column is the `ord` of each row applied: the others were
/// fenced.
void complete_fenced(const PGresult* r, std::span<pending_write* const> writes) {
  std::vector<char> done(writes.size(), 0);
  for (int row = 0; row < PQntuples(r); ++row) {
    const auto i = to_index(get_text(r, row, 0)) - 1;
    if (i < done.size()) done[i] = 1;
  }
  for (std::size_t i = 0; i < writes.size(); ++i) {
    if (done[i]) {
      as<applied>(writes[i]).succeed(applied{});
    } else {
      writes[i]->fail(errc::fenced);
    }
  }
}

/// Output stream flushes: the trim, then the append, acknowledged by the append's fenced rows.
class output_kind_t final : public write_kind {
 public:
  // With the other appends of a run's progress, before checkpoints: a step's chunks precede its end.
  [[nodiscard]] int order() const noexcept override { return 1; }

  void add_statements(std::vector<pipeline_query>& tx, std::span<pending_write* const> writes,
                      bool again) const override {
    auto rows = rows_array(writes);
    tx.push_back({&sql::output_trim, {rows}});
    tx.push_back({again ? &sql::output_append_again : &sql::output_append, {std::move(rows)}});
  }

  void complete(std::span<const pg_result> results, std::span<pending_write* const> writes) const override {
    complete_fenced(results[1].get(), writes);
  }
};

}  // namespace

std::string rows_array(std::span<pending_write* const> writes) {
  std::size_t size = 2;
  for (auto* w : writes)
    size += w->row().size() + 1;
  std::string out;
  out.reserve(size);
  out.push_back('[');
  for (std::size_t i = 0; i < writes.size(); ++i) {
    if (i != 0) out.push_back(',');
    out += writes[i]->row();
  }
  out.push_back(']');
  return out;
}

void fenced_kind::add_statements(std::vector<pipeline_query>& tx, std::span<pending_write* const> writes,
                                 bool again) const {
  tx.push_back({again ? &again_ : &first_, {rows_array(writes)}});
}

void fenced_kind::complete(std::span<const pg_result> results, std::span<pending_write* const> writes) const {
  complete_fenced(results[0].get(), writes);
}

const write_kind& enqueue_kind() {
  static const enqueue_kind_t k;
  return k;
}
const write_kind& claim_kind() {
  static const claim_kind_t k;
  return k;
}
const write_kind& claim_parked_kind() {
  static const claim_parked_kind_t k;
  return k;
}
const write_kind& append_log_kind() {
  // Before checkpoints: a step's start or retry is logged below the checkpoint that ends it.
  static const fenced_kind k(sql::append_log, sql::append_log_again, 1);
  return k;
}
const write_kind& output_kind() {
  static const output_kind_t k;
  return k;
}
const write_kind& checkpoint_kind() {
  static const fenced_kind k(sql::checkpoint_steps, sql::checkpoint_steps_again, 2);
  return k;
}
const write_kind& finish_kind() {
  static const fenced_kind k(sql::finish_runs, 3);
  return k;
}
const write_kind& release_kind() {
  static const fenced_kind k(sql::release_runs, 4);
  return k;
}

const write_kind& wait_kind() {
  static const wait_kind_t k(sql::wait_decide, 5);
  return k;
}
const write_kind& wait_any_kind() {
  static const wait_kind_t k(sql::wait_any_decide, 6);
  return k;
}
const write_kind& child_kind() {
  static const wait_kind_t k(sql::child_decide, 7);
  return k;
}

}  // namespace keel::storage::detail
