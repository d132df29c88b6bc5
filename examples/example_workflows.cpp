#include "example_workflows.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <chrono>

namespace keel::examples {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;

/// Stands in for a network call: waits without blocking the thread.
asio::awaitable<void> pretend_io(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

struct order {
  std::string order_id;
  std::int64_t amount_cents = 0;
  std::int64_t items = 0;
};

order tag_invoke(json::value_to_tag<order>, const json::value& v) {
  const auto& o = v.as_object();
  return {json::value_to<std::string>(o.at("order_id")), o.at("amount_cents").to_number<std::int64_t>(),
          o.at("items").to_number<std::int64_t>()};
}

asio::awaitable<json::value> order_fulfillment(context& ctx, order in) {
  auto reservation = co_await ctx.step("reserve_inventory", [&]() -> asio::awaitable<std::string> {
    co_await pretend_io(std::chrono::milliseconds(20));
    co_return "rsv-" + in.order_id;
  });

  // The payment provider fails the first attempt of every third order: the step retries with backoff.
  step_options payment;
  payment.retry.max_attempts = 4;
  payment.retry.initial_delay = std::chrono::milliseconds(200);
  payment.timeout = std::chrono::seconds(5);
  // Named, not written inside the co_await: it captures a shared_ptr (see keel::context::step on GCC 12).
  auto attempts = std::make_shared<int>(0);
  auto charge_card = [&, attempts]() -> asio::awaitable<json::value> {
    co_await pretend_io(std::chrono::milliseconds(30));
    if (++*attempts == 1 && in.items % 3 == 0) throw std::runtime_error("payment provider: 503 try again");
    if (in.amount_cents <= 0) throw non_retriable_error("amount must be positive");
    co_return json::value{{"charge_id", "ch-" + in.order_id}, {"amount_cents", in.amount_cents}};
  };
  auto charge = co_await ctx.step("charge_payment", charge_card, payment);

  auto tracking = co_await ctx.step("ship", [&]() -> asio::awaitable<std::string> {
    co_await pretend_io(std::chrono::milliseconds(20));
    co_return "trk-" + in.order_id;
  });
  co_return json::value{{"reservation", reservation}, {"charge", charge}, {"tracking", tracking}};
}

asio::awaitable<json::value> user_onboarding(context& ctx, json::value in) {
  const std::string email = json::value_to<std::string>(in.at("email"));
  auto user_id = co_await ctx.step("create_account",
                                   [&] { return std::string("user-").append(email, 0, email.find('@')); });
  co_await ctx.step("send_welcome_email",
                    [&]() -> asio::awaitable<void> { co_await pretend_io(std::chrono::milliseconds(15)); });
  auto plan = co_await ctx.step("pick_plan", [&] { return std::string(email.size() % 2 ? "pro" : "free"); });
  co_return json::value{{"user_id", user_id}, {"plan", plan}};
}

/// Stands in for an email or chat message carrying an approver's link; the step records where it went.
asio::awaitable<json::value> notify(context& ctx, const hook& h, const std::string& who) {
  auto send = [&h, &who]() -> asio::awaitable<json::value> {
    co_await pretend_io(std::chrono::milliseconds(5));
    co_return json::value{{"to", who}, {"link", h.path()}};
  };
  const std::string step_name = "notify_" + who;
  co_return co_await ctx.step(step_name, send);
}

/// Human in the loop: the manager approves within the deadline (24 h unless the input's `approve_within_ms`
/// says otherwise), or the request escalates to a director, who has no deadline. Each approver gets a link
/// (`/v1/hooks/<token>`); the run holds no worker while it waits, and the manager's link stops working once
/// the request escalated.
asio::awaitable<json::value> expense_approval(context& ctx, json::value in) {
  const auto* within = in.as_object().if_contains("approve_within_ms");
  const std::chrono::milliseconds deadline =
      within ? std::chrono::milliseconds(within->to_number<std::int64_t>()) : std::chrono::hours(24);
  // Named, not temporaries inside the co_await expressions (GCC 12 destroys those twice).
  const std::string to_manager = "manager", to_director = "director";
  const keel::timer manager_deadline(deadline);

  auto manager = co_await ctx.create_hook(to_manager);
  co_await notify(ctx, manager, to_manager);
  auto first = co_await ctx.any(manager, manager_deadline);
  if (first.index == 0) co_return json::value{{"decided_by", "manager"}, {"decision", *first.payload}};

  auto director = co_await ctx.create_hook(to_director);
  co_await notify(ctx, director, to_director);
  auto decision = co_await director.wait();
  co_return json::value{{"decided_by", "director"}, {"decision", decision ? *decision : json::value()}};
}

}  // namespace

void register_example_workflows(engine& e) {
  e.register_workflow<order, json::value>("order_fulfillment", 1, order_fulfillment);
  e.register_workflow<json::value, json::value>("user_onboarding", 1, user_onboarding);
  e.register_workflow<json::value, json::value>("expense_approval", 1, expense_approval);
}

json::value example_input(const std::string& workflow, int n) {
  // Built with append, not `"literal" + std::to_string(...)`: g++ 12 at -O3 reports a false -Wrestrict inside
  // the inlined insert that operator+(const char*, std::string&&) performs.
  if (workflow == "order_fulfillment") {
    return json::value{{"order_id", std::string("A").append(std::to_string(1000 + n))},
                       {"amount_cents", 1999 + 100 * n},
                       {"items", 1 + n}};
  }
  return json::value{{"email", std::string("user").append(std::to_string(n)).append("@example.com")}};
}

}  // namespace keel::examples
