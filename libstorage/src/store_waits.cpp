// What a held run asks of the store besides checkpoints: durable waits (sleeps, events, waits for any of
// several alternatives, child runs), continuing as new, sending events, hooks and webhooks (their SQL:
// statements_waits.cpp, statements_hooks.cpp, statements_run_ops.cpp).
#include <boost/json/serialize.hpp>

#include "keel/storage/store.hpp"
#include "statements.hpp"
#include "step_rows.hpp"
#include "store_impl.hpp"

namespace keel::storage {

using detail::pg_connection;
namespace json = boost::json;

namespace {

std::string_view wait_kind_name(wait_kind k) {
  switch (k) {
    case wait_kind::sleep:
      return "sleep";
    case wait_kind::event:
      return "event";
    case wait_kind::hook:
      return "hook";
    case wait_kind::any:
      return "any";
    case wait_kind::child:
      return "child";
  }
  return "sleep";
}

/// The arms of a wait for any as stored in the run's waiting_for; nullopt if one cannot be stored.
std::optional<boost::json::array> arms_json(const std::vector<wait_arm>& arms, wait_mode mode) {
  const auto most = mode == wait_mode::park ? k_max_park_arms : k_max_wait_arms;
  if (arms.empty() || arms.size() > most) return std::nullopt;
  boost::json::array out;
  out.reserve(arms.size());
  for (const auto& a : arms) {
    if (a.kind == wait_kind::any) return std::nullopt;
    if (a.kind == wait_kind::child && !is_valid_run_id(a.event)) return std::nullopt;
    if (a.kind != wait_kind::sleep && !detail::valid_key(a.event)) return std::nullopt;
    if (a.kind == wait_kind::sleep && !a.until) return std::nullopt;
    boost::json::object o;
    o["kind"] = wait_kind_name(a.kind);
    if (a.kind == wait_kind::child) {
      o["child"] = a.event;
    } else if (a.kind != wait_kind::sleep) {
      o["event"] = a.event;
    }
    if (a.kind == wait_kind::hook) o["hook_seq"] = a.hook_seq;
    if (a.until) o["until"] = detail::to_micros(*a.until);
    if (mode == wait_mode::park) o["group"] = a.group;
    out.emplace_back(std::move(o));
  }
  return out;
}

}  // namespace

boost::asio::awaitable<result<wait_outcome>> store::wait(const wait_request& w) {
  if (w.kind == wait_kind::any) {
    auto arms = arms_json(w.arms, w.mode);
    if (!arms) co_return errc::invalid_argument;
    if (w.branch && !detail::valid_key(*w.branch)) co_return errc::invalid_argument;
    auto row = detail::lease_row(w.lease);
    row.num("seq", w.seq);
    if (w.name.empty()) {
      row.null("name");
    } else {
      row.str("name", valid_utf8(w.name));
    }
    row.value("arms", boost::json::value(std::move(*arms)))
        .num("started", detail::to_micros(w.started_at))
        .value("seen", boost::json::value(w.cancel_seen))
        .str("mode", w.mode == wait_mode::probe  ? "probe"
                     : w.mode == wait_mode::park ? "park"
                                                 : "decide");
    if (w.branch) row.str("branch", *w.branch).num("branch_seq", w.branch_seq);
    // Named first: GCC 12 destroys a class temporary built inside a co_await expression twice.
    auto text = std::move(row).finish();
    co_return co_await impl_->write<wait_outcome>(detail::wait_any_kind(), std::move(text),
                                                  std::chrono::steady_clock::time_point::max());
  }
  if (w.kind == wait_kind::child) co_return errc::invalid_argument;  // start_child
  if (w.kind != wait_kind::sleep && !detail::valid_key(w.event)) co_return errc::invalid_argument;
  auto row = detail::lease_row(w.lease);
  row.num("seq", w.seq).str("name", valid_utf8(w.name)).str("kind", wait_kind_name(w.kind));
  if (w.kind != wait_kind::sleep) row.str("event", w.event);
  if (w.kind == wait_kind::hook) row.num("hook_seq", w.hook_seq);
  if (w.until) {
    row.num("until", detail::to_micros(*w.until));
  } else {
    row.null("until");
  }
  row.num("started", detail::to_micros(w.started_at)).value("seen", boost::json::value(w.cancel_seen));
  // Named first: GCC 12 destroys a class temporary built inside a co_await expression twice.
  auto text = std::move(row).finish();
  co_return co_await impl_->write<wait_outcome>(detail::wait_kind(), std::move(text),
                                                std::chrono::steady_clock::time_point::max());
}

boost::asio::awaitable<result<wait_outcome>> store::start_child(const child_request& c) {
  const auto& run = c.child;
  if (!detail::valid_key(run.workflow) || !run.idempotency_key || !detail::valid_key(*run.idempotency_key) ||
      !is_valid_run_id(run.id)) {
    co_return errc::invalid_argument;
  }
  if (auto checked = impl_->check(run.input, "child input", c.lease.id); !checked) co_return checked.error();
  auto row = detail::lease_row(c.lease);
  row.num("seq", c.seq)
      .str("child", run.id)
      .str("workflow", run.workflow)
      .num("version", run.version)
      .value("input", run.input)
      .str("key", *run.idempotency_key)
      .num("priority", run.priority)
      .value("seen", boost::json::value(c.cancel_seen));
  if (run.run_at) row.num("run_at", detail::to_micros(*run.run_at));
  // Named first: GCC 12 destroys a class temporary built inside a co_await expression twice.
  auto text = std::move(row).finish();
  co_return co_await impl_->write<wait_outcome>(detail::child_kind(), std::move(text),
                                                std::chrono::steady_clock::time_point::max());
}

boost::asio::awaitable<result<int>> store::continue_as_new(const lease_token& lease,
                                                           const boost::json::value& input) {
  if (auto c = impl_->check(input, "input", lease.id); !c) co_return c.error();
  std::vector<std::optional<std::string>> params{lease.id, lease.owner, std::to_string(lease.epoch),
                                                 boost::json::serialize(input)};
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<int>(pg_connection&)> restart =
      [params = std::move(params)](pg_connection& c) -> result<int> {
    auto r = c.exec_blocking(detail::sql::continue_as_new, params);
    if (!r) return r.error();
    if (PQntuples(r->get()) == 0) return errc::fenced;
    return detail::to_int(detail::get_text(r->get(), 0, 0));
  };
  // A fenced write of a held run: it waits out database outages like the writer's (no deadline).
  auto done = co_await impl_->on_pool<int>(std::move(restart), std::chrono::steady_clock::time_point::max());
  if (done) impl_->committed();  // it appended to the run log
  co_return done;
}

boost::asio::awaitable<result<run_id>> store::start_child_only(const child_request& c) {
  const auto& run = c.child;
  if (!detail::valid_key(run.workflow) || !run.idempotency_key || !detail::valid_key(*run.idempotency_key) ||
      !is_valid_run_id(run.id)) {
    co_return errc::invalid_argument;
  }
  if (auto checked = impl_->check(run.input, "child input", c.lease.id); !checked) co_return checked.error();
  std::vector<std::optional<std::string>> params{
      c.lease.id,
      c.lease.owner,
      std::to_string(c.lease.epoch),
      std::to_string(c.seq),
      run.id,
      run.workflow,
      std::to_string(run.version),
      boost::json::serialize(run.input),
      *run.idempotency_key,
      std::to_string(run.priority),
      c.cancel_seen ? "true" : "false",
      run.run_at ? std::optional<std::string>(std::to_string(detail::to_micros(*run.run_at))) : std::nullopt};
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<run_id>(pg_connection&)> start =
      [params = std::move(params)](pg_connection& conn) -> result<run_id> {
    auto r = conn.exec_blocking(detail::sql::start_child, params);
    if (!r) return r.error();
    if (PQntuples(r->get()) == 0 || PQgetisnull(r->get(), 0, 0)) return errc::fenced;
    return run_id(detail::get_text(r->get(), 0, 0));
  };
  // A fenced write of a held run: it waits out database outages (no deadline).
  auto done = co_await impl_->on_pool<run_id>(std::move(start), std::chrono::steady_clock::time_point::max());
  if (done) impl_->committed();  // it appended to the run log
  co_return done;
}

boost::asio::awaitable<result<event_sent>> store::send_event(const event_delivery& e) {
  if (!is_valid_run_id(e.run) || !detail::valid_key(e.name)) co_return errc::invalid_argument;
  if (e.idempotency_key && !detail::valid_key(*e.idempotency_key)) co_return errc::invalid_argument;
  if (auto c = impl_->check(e.payload, "event payload", e.run); !c) co_return c.error();
  std::vector<std::optional<std::string>> params{e.run, e.name, boost::json::serialize(e.payload),
                                                 e.idempotency_key};
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<event_sent>(pg_connection&)> send =
      [params = std::move(params)](pg_connection& c) -> result<event_sent> {
    const std::function<result<event_sent>()> body = [&]() -> result<event_sent> {
      auto locked = c.exec_blocking(detail::sql::send_event_lock, {params[0]});
      if (!locked) return locked.error();
      if (PQntuples(locked->get()) == 0) return errc::not_found;
      const auto status = run_status_from(detail::get_text(locked->get(), 0, 0));
      if (status && is_terminal(*status)) return errc::run_finished;
      auto r = c.exec_blocking(detail::sql::send_event, params);
      if (!r) return r.error();
      return event_sent{detail::get_text(r->get(), 0, 0) == "0"};
    };
    return detail::in_transaction(c, body);
  };
  auto done = co_await impl_->on_pool<event_sent>(std::move(send), impl_->request_deadline());
  if (done) impl_->committed();  // it may have appended to the run log
  co_return done;
}

boost::asio::awaitable<result<std::string>> store::hook_secret() {
  return impl_->on_pool<std::string>(
      [](pg_connection& c) -> result<std::string> {
        auto r = c.exec_blocking(detail::sql::hook_secret, {});
        if (!r) return r.error();
        if (PQntuples(r->get()) == 0) return errc::not_found;
        return std::string(detail::get_text(r->get(), 0, 0));
      },
      impl_->request_deadline());
}

boost::asio::awaitable<result<void>> store::create_hook(const hook_record& h) {
  if (!detail::valid_key(h.name)) co_return errc::invalid_argument;
  if (auto c = impl_->check(h.metadata, "hook metadata", h.lease.id); !c) co_return c.error();
  std::vector<std::optional<std::string>> params{
      h.token_hash,
      h.lease.id,
      std::to_string(h.seq),
      h.name,
      boost::json::serialize(h.metadata),
      h.expires_at ? std::optional<std::string>(std::to_string(detail::to_micros(*h.expires_at)))
                   : std::nullopt,
      h.lease.owner,
      std::to_string(h.lease.epoch)};
  if (h.signature_key && !detail::valid_key(*h.signature_key)) co_return errc::invalid_argument;
  if (h.step) {
    if (auto c = impl_->check(h.step->output, "output", h.lease.id); !c) co_return c.error();
    if (h.step->branch && !detail::valid_key(*h.step->branch)) co_return errc::invalid_argument;
    params.emplace_back(valid_utf8(h.step->name));
    params.emplace_back(boost::json::serialize(h.step->output));
    params.emplace_back(std::to_string(detail::to_micros(h.step->started_at)));
    params.emplace_back(h.step->branch);
    params.emplace_back(std::to_string(h.step->branch_seq));
  } else {
    params.resize(13);
  }
  params.push_back(h.signature_key);
  if (h.webhook) {
    if (auto c = impl_->check(*h.webhook, "webhook", h.lease.id); !c) co_return c.error();
    params.emplace_back(boost::json::serialize(*h.webhook));
  } else {
    params.emplace_back(std::nullopt);
  }
  // Named first (GCC 12 destroys a closure temporary inside a co_await expression twice).
  std::function<result<void>(pg_connection&)> insert =
      [params = std::move(params)](pg_connection& c) -> result<void> {
    auto r = c.exec_blocking(detail::sql::create_hook, params);
    if (!r) return r.error();
    if (detail::get_text(r->get(), 0, 0) == "0") return errc::fenced;
    return {};
  };
  co_return co_await impl_->on_pool<void>(std::move(insert), impl_->request_deadline());
}

boost::asio::awaitable<result<hook_resume_answer>> store::resume_hook(const hook_resume& r) {
  if (r.resumed_by && (r.resumed_by->size() > k_max_key_bytes || !is_valid_utf8(*r.resumed_by)))
    co_return errc::invalid_argument;
  if (auto c = impl_->check(r.payload, "hook payload", "(hook)"); !c) co_return c.error();
  for (const auto& key : r.signature_keys) {
    if (!detail::valid_key(key)) co_return errc::invalid_argument;
  }
  if (r.signature &&
      (r.signature->size() != 64 || r.signature->find_first_not_of("0123456789abcdef") != std::string::npos))
    co_return errc::invalid_argument;
  std::vector<std::optional<std::string>> params{r.token_hash,
                                                 boost::json::serialize(r.payload),
                                                 r.resumed_by,
                                                 "true",
                                                 detail::text_array(r.signature_keys),
                                                 r.signature,
                                                 std::to_string(r.signed_at),
                                                 new_run_id(),  // this call (a UUID), see sql::resume_hook
                                                 std::to_string(r.replay_window.count()),
                                                 r.webhook ? "true" : "false"};
  // One transaction: lock the run row, then resume (see sql::resume_hook_lock). Safe to repeat after a lost
  // connection: a resume with the same payload is an idempotent success.
  std::function<result<hook_resume_answer>(pg_connection&)> resume =
      [params = std::move(params)](pg_connection& c) mutable -> result<hook_resume_answer> {
    std::string run_of;
    std::optional<boost::json::value> webhook;
    auto run = [&]() -> result<hook_resume_outcome> {
      auto locked = c.exec_blocking(detail::sql::resume_hook_lock, {params[0]});
      if (!locked) return locked.error();
      if (PQntuples(locked->get()) == 0) return hook_resume_outcome::not_found;
      run_of = std::string(detail::get_text(locked->get(), 0, 1));
      const auto status = run_status_from(detail::get_text(locked->get(), 0, 0));
      params[3] = status && is_terminal(*status) ? "false" : "true";
      auto res = c.exec_blocking(detail::sql::resume_hook, params);
      if (!res) return res.error();
      const PGresult* row = res->get();
      if (PQntuples(row) == 0) return hook_resume_outcome::not_found;
      if (!PQgetisnull(row, 0, 7)) webhook = detail::parse_json(row, 0, 7);
      // Signatures first: a caller that may not resume the hook learns nothing of its state.
      if (detail::get_text(row, 0, 5) == "t") return hook_resume_outcome::not_signed;
      if (detail::get_text(row, 0, 6) == "t") return hook_resume_outcome::replayed;
      if (detail::get_text(row, 0, 3) == "1") return hook_resume_outcome::resumed;
      const auto hook_status = detail::get_text(row, 0, 0);
      if (hook_status == "resumed")
        return detail::get_text(row, 0, 2) == "t" ? hook_resume_outcome::repeated
                                                  : hook_resume_outcome::already_resumed;
      if (hook_status == "open" && detail::get_text(row, 0, 1) == "t") return hook_resume_outcome::expired;
      return hook_resume_outcome::closed;  // closed, or its run finished
    };
    const std::function<result<hook_resume_outcome>()> body = run;
    auto outcome = detail::in_transaction(c, body);
    if (!outcome) return outcome.error();
    hook_resume_answer answer;
    answer.outcome = *outcome;
    if (*outcome != hook_resume_outcome::not_found) {
      answer.run = std::move(run_of);
      answer.webhook = std::move(webhook);
    }
    return answer;
  };
  auto done = co_await impl_->on_pool<hook_resume_answer>(std::move(resume), impl_->request_deadline());
  if (done) impl_->committed();  // it may have appended to the run log
  co_return done;
}

boost::asio::awaitable<result<void>> store::set_webhook_response(const lease_token& lease, int seq,
                                                                 const boost::json::value& response) {
  if (auto c = impl_->check(response, "webhook response", lease.id); !c) co_return c.error();
  std::vector<std::optional<std::string>> params{lease.id, lease.owner, std::to_string(lease.epoch),
                                                 std::to_string(seq), boost::json::serialize(response)};
  std::function<result<void>(pg_connection&)> set =
      [params = std::move(params)](pg_connection& c) -> result<void> {
    auto r = c.exec_blocking(detail::sql::set_webhook_response, params);
    if (!r) return r.error();
    if (detail::get_text(r->get(), 0, 0) == "0") return errc::fenced;
    if (detail::get_text(r->get(), 0, 1) == "0") return errc::not_found;
    return {};
  };
  co_return co_await impl_->on_pool<void>(std::move(set), impl_->request_deadline());
}

boost::asio::awaitable<result<std::optional<boost::json::value>>> store::webhook_response(
    const std::string& token_hash) {
  std::function<result<std::optional<boost::json::value>>(pg_connection&)> read =
      [token_hash](pg_connection& c) -> result<std::optional<boost::json::value>> {
    auto r = c.exec_blocking(detail::sql::webhook_response, {token_hash});
    if (!r) return r.error();
    if (PQntuples(r->get()) == 0 || PQgetisnull(r->get(), 0, 0)) return std::optional<boost::json::value>();
    return std::optional<boost::json::value>(detail::parse_json(r->get(), 0, 0));
  };
  co_return co_await impl_->on_pool<std::optional<boost::json::value>>(std::move(read),
                                                                       impl_->request_deadline());
}

}  // namespace keel::storage
