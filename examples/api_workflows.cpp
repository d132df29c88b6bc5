#include "api_workflows.hpp"

#include <boost/json.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "keel/engine/error.hpp"

namespace keel::examples {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

/// A whole number from 0 to `max` from the input's `key`, or `otherwise` when it is absent; anything else
/// fails the run (as invalid input: it would fail again on every retry). The bound keeps time arithmetic
/// from overflowing.
std::int64_t whole(const json::object& in, std::string_view key, std::int64_t otherwise, std::int64_t max) {
  const auto* v = in.if_contains(key);
  if (v == nullptr) return otherwise;
  if (!v->is_int64() || v->get_int64() < 0 || v->get_int64() > max)
    throw invalid_input_error("'" + std::string(key) + "' must be an integer from 0 to " +
                              std::to_string(max));
  return v->get_int64();
}

constexpr std::int64_t k_ten_years_s = 10LL * 366 * 86'400;

const json::object& object_input(const json::value& in) {
  if (!in.is_object()) throw invalid_input_error("the input must be a JSON object");
  return in.get_object();
}

[[noreturn]] void fail_run(std::string_view code, std::string_view message) {
  throw step_failed_error(json::object{{"code", code}, {"message", message}});
}

/// Input {"amount": number, "ttl_s"?: int (86,400), "escalate_after_s"?: int}: step `request`, then a hook
/// `decision` (payload {"approved": bool, "by": string}) for ttl_s. With escalate_after_s, the hook races a
/// timer; when the timer wins, a second hook `escalation` (for a manager) takes the decision instead.
/// Output {"approved", "by", "amount"}; a hook that expires fails the run with code hook_expired.
asio::awaitable<json::value> approval(context& ctx, json::value input) {
  const auto& in = object_input(input);
  const auto* amount = in.if_contains("amount");
  if (amount == nullptr || !amount->is_number()) throw invalid_input_error("'amount' must be a number");
  const auto ttl = seconds(whole(in, "ttl_s", 86'400, k_ten_years_s));
  const auto escalate_after =
      in.contains("escalate_after_s")
          ? std::optional<seconds>(seconds(whole(in, "escalate_after_s", 0, k_ten_years_s)))
          : std::nullopt;
  const json::value amount_value = *amount;
  auto request = [amount_value] { return json::value{{"amount", amount_value}, {"requested", true}}; };
  co_await ctx.step("request", request);

  hook_options options;
  options.ttl = ttl;
  options.metadata =
      json::object{{"amount", amount_value}, {"answer", {{"approved", "bool"}, {"by", "string"}}}};
  const std::string decision_name = "decision", escalation_name = "escalation";
  auto decision = co_await ctx.create_hook(decision_name, options);
  std::optional<json::value> answer;
  if (escalate_after) {
    const keel::timer escalate(*escalate_after);
    auto first = co_await ctx.any(decision, escalate);
    if (first.index == 0) {
      answer = first.payload;
    } else {
      options.metadata.as_object()["escalated"] = true;
      auto escalation = co_await ctx.create_hook(escalation_name, options);
      answer = co_await escalation.wait();
    }
  } else {
    answer = co_await decision.wait();
  }
  if (!answer) fail_run("hook_expired", "nobody decided before the approval hook expired");
  const auto* o = answer->if_object();
  const auto* approved = o ? o->if_contains("approved") : nullptr;
  const auto* by = o ? o->if_contains("by") : nullptr;
  if (approved == nullptr || !approved->is_bool() || by == nullptr || !by->is_string())
    fail_run("invalid_decision", "the decision must be {\"approved\": bool, \"by\": string}");
  co_return json::value{{"approved", *approved}, {"by", *by}, {"amount", amount_value}};
}

/// Input {"n": int, "delay_ms": int}: n steps, each publishing a frame {"left": k, "progress": percent done},
/// with a durable sleep of delay_ms between them. Output {"done": n}.
asio::awaitable<json::value> countdown(context& ctx, json::value input) {
  const auto& in = object_input(input);
  const auto n = whole(in, "n", 3, 10'000);
  const auto delay = milliseconds(whole(in, "delay_ms", 1000, k_ten_years_s * 1000));
  for (std::int64_t k = 0; k < n; ++k) {
    auto tick = [k] { return json::value(k); };
    const std::string name = "tick_" + std::to_string(k);  // named: no class temporary inside co_await
    co_await ctx.step(name, tick);
    ctx.emit(json::object{{"left", n - k - 1},
                          {"progress", 100.0 * static_cast<double>(k + 1) / static_cast<double>(n)}});
    if (k + 1 < n) co_await ctx.sleep(delay);
  }
  co_return json::value{{"done", n}};
}

/// Input {"card"?: string, "amount"?: number}: reserve → charge → ship, a frame per stage. A card
/// "declined" fails the charge at once (no retry), and the reservation is released by its compensation.
asio::awaitable<json::value> order(context& ctx, json::value input) {
  const auto& in = object_input(input);
  const auto* card = in.if_contains("card");
  if (card != nullptr && !card->is_string()) throw invalid_input_error("'card' must be a string");
  const std::string card_text = card != nullptr ? std::string(card->get_string()) : "";
  const std::string id(ctx.id());
  auto reserve = [id] { return json::value("rsv-" + id.substr(0, 8)); };
  const auto reservation = co_await ctx.step("reserve", reserve);
  ctx.emit(json::object{{"stage", "reserved"}});
  auto release = [reservation] { return json::value{{"released", reservation}}; };
  ctx.compensate("release", release);
  auto charge = [card_text, id]() -> json::value {
    if (card_text == "declined") throw non_retriable_error("the card was declined");
    return json::value{{"charge_id", "ch-" + id.substr(0, 8)}};
  };
  const auto charged = co_await ctx.step("charge", charge);
  ctx.emit(json::object{{"stage", "charged"}});
  auto ship = [id] { return json::value("trk-" + id.substr(0, 8)); };
  const auto tracking = co_await ctx.step("ship", ship);
  ctx.emit(json::object{{"stage", "shipped"}});
  co_return json::value{{"reservation", reservation}, {"charge", charged}, {"tracking", tracking}};
}

/// Input {"n": int (1 to 50), "delay_ms"?: int}: n child runs of `countdown` ({"n": 2, "delay_ms"}), two at a
/// time, each released from the parent's worker while it runs. Output {"children": n, "outputs": [...]}.
asio::awaitable<json::value> batch(context& ctx, json::value input) {
  const auto& in = object_input(input);
  const auto n = whole(in, "n", 3, 50);
  if (n == 0) throw invalid_input_error("'n' must be at least 1");
  const auto delay = whole(in, "delay_ms", 200, 60'000);
  std::vector<json::value> inputs(static_cast<std::size_t>(n), json::value{{"n", 2}, {"delay_ms", delay}});
  map_options options;
  options.concurrency = 2;
  const std::string child_workflow = "countdown";
  auto outputs = co_await ctx.map_children(child_workflow, inputs, options);
  co_return json::value{{"children", n}, {"outputs", json::value_from(outputs)}};
}

/// Three steps that do nothing: the benchmark workflow (keel-bench's noop3).
asio::awaitable<json::value> noop3(context& ctx, json::value) {
  for (int i = 1; i <= 3; ++i) {
    auto step = [i] { return json::value{{"i", i}}; };
    const std::string name = "step" + std::to_string(i);
    co_await ctx.step(name, step);
  }
  co_return json::value{{"steps", 3}};
}

}  // namespace

void register_api_workflows(engine& e) {
  // Withdrawn requests stop waiting: the event approval.withdrawn with the request's request_id cancels it.
  auto approval_def = make_workflow<json::value, json::value>("approval", 1, approval);
  approval_def.input_example = json::value{{"amount", 1200}, {"ttl_s", 3600}, {"request_id", "r-1"}};
  approval_def.description =
      "waits for a person's decision on a hook (escalate_after_s: a manager's hook when nobody answers); the "
      "event approval.withdrawn with its request_id cancels it";
  approval_def.cancel_on = {{"approval.withdrawn", "/request_id", ""}};
  e.register_workflow(std::move(approval_def));
  e.register_workflow<json::value, json::value>(
      "countdown", 1, countdown, json::value{{"n", 5}, {"delay_ms", 1000}},
      "n steps, each emitting a frame, with a durable sleep between");
  // Started by the event order.placed too (its payload the input).
  auto order_def = make_workflow<json::value, json::value>("order", 1, order);
  order_def.input_example = json::value{{"card", "visa"}};
  order_def.description =
      "reserve, charge, ship; card \"declined\" fails the charge and the reservation is released; the event "
      "order.placed starts one";
  order_def.triggers = {"order.placed"};
  e.register_workflow(std::move(order_def));
  e.register_workflow<json::value, json::value>(
      "batch", 1, batch, json::value{{"n", 3}, {"delay_ms", 200}},
      "n child runs of countdown, two at a time: a run tree to watch");
  e.register_workflow<json::value, json::value>("noop3", 1, noop3, json::object{},
                                                "three empty steps: the benchmark");
}

}  // namespace keel::examples
