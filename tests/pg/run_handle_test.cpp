// Run handles on a real PostgreSQL: a typed start through a workflow_ref (a wrong input type does not
// compile), the typed result or the run's own error, and the run's events and output streams.
#define BOOST_TEST_MODULE run_handle
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/describe/class.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "engine_fixture.hpp"
#include "keel/common/log.hpp"
#include "keel/engine/async.hpp"

using namespace keel;
using namespace keel::test;
using namespace std::chrono_literals;
namespace utf = boost::unit_test;

namespace shop {
struct order {
  std::string item;
  int quantity = 0;
};
BOOST_DESCRIBE_STRUCT(order, (), (item, quantity))
struct receipt {
  std::string item;
  int total_cents = 0;
};
BOOST_DESCRIBE_STRUCT(receipt, (), (item, total_cents))
}  // namespace shop

namespace {

template <class Engine, class Ref, class Arg>
concept can_start = requires(Engine& e, Ref ref, Arg arg) {
  e.start(ref, arg);
};

using order_ref = workflow_ref<shop::order, shop::receipt>;
static_assert(can_start<engine, order_ref, shop::order>);
static_assert(!can_start<engine, order_ref, std::string>, "a string is not an order");
static_assert(!can_start<engine, order_ref, shop::receipt>, "a receipt is not an order");
static_assert(!can_start<engine, order_ref, json::value>, "untyped JSON goes through start(name, ...)");

/// Runs `a` on the engine's executor and returns what it gives.
template <class T>
T on_engine(engine& e, asio::awaitable<T> a) {
  return asio::co_spawn(e.get_executor(), std::move(a), asio::use_future).get();
}

order_ref register_checkout(engine& e) {
  std::function<asio::awaitable<shop::receipt>(context&, shop::order)> body =
      [](context& ctx, shop::order o) -> asio::awaitable<shop::receipt> {
    auto price = [o]() -> asio::awaitable<int> { co_return 250 * o.quantity; };
    const int total = co_await ctx.step("price", price);
    co_return shop::receipt{o.item, total};
  };
  return e.register_workflow<shop::order, shop::receipt>("checkout", 1, body);
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_typed_start_gives_a_typed_result, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  const auto checkout = register_checkout(e);
  BOOST_TEST(checkout.name == "checkout");
  BOOST_TEST(checkout.version == 1);
  BOOST_REQUIRE(e.start_blocking());
  auto h = on_engine(e, e.start(checkout, shop::order{"tea", 3}));
  BOOST_REQUIRE(h);
  BOOST_TEST(!h->id().empty());
  auto receipt = on_engine(e, h->result(10s));
  BOOST_REQUIRE(receipt);
  BOOST_TEST(receipt->item == "tea");
  BOOST_TEST(receipt->total_cents == 750);
  auto status = on_engine(e, h->status());
  BOOST_REQUIRE(status);
  BOOST_TEST((*status == storage::run_status::completed));
  // The run's record says it ran checkout version 1 with the order as its input.
  auto info = on_engine(e, h->info());
  BOOST_REQUIRE(info);
  BOOST_TEST(info->workflow == "checkout");
  BOOST_TEST(info->input == (json::value{{"item", "tea"}, {"quantity", 3}}));
  // A handle made from the id alone reads the same run; asked for the wrong type, it says so.
  auto again = e.handle(h->id());
  auto same = on_engine(e, again.result<shop::receipt>(1s));
  BOOST_REQUIRE(same);
  BOOST_TEST(same->total_cents == 750);
  auto as_int = on_engine(e, again.result<int>(1s));
  BOOST_REQUIRE(!as_int);
  BOOST_TEST((as_int.error() == errc::invalid_output));
  auto as_json = on_engine(e, again.output(1s));
  BOOST_REQUIRE(as_json);
  BOOST_TEST(*as_json == (json::value{{"item", "tea"}, {"total_cents", 750}}));
  auto completed = on_engine(e, again.result<void>(1s));
  BOOST_TEST(completed.has_value());
}

BOOST_AUTO_TEST_CASE(a_typed_start_runs_its_refs_version, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  const auto v1 = register_checkout(e);
  std::function<asio::awaitable<shop::receipt>(context&, shop::order)> v2_body =
      [](context&, shop::order o) -> asio::awaitable<shop::receipt> {
    co_return shop::receipt{o.item, -1};
  };
  const auto v2 = e.register_workflow<shop::order, shop::receipt>("checkout", 2, v2_body);
  BOOST_REQUIRE(e.start_blocking());
  auto old = on_engine(e, e.start(v1, shop::order{"tea", 1}));
  auto newest = on_engine(e, e.start(v2, shop::order{"tea", 1}));
  BOOST_REQUIRE(old);
  BOOST_REQUIRE(newest);
  BOOST_TEST(on_engine(e, old->result(10s)).value().total_cents == 250);
  BOOST_TEST(on_engine(e, newest->result(10s)).value().total_cents == -1);
  BOOST_TEST(on_engine(e, old->info()).value().version == 1);
  // An untyped start takes the newest registered version, as enqueue does.
  auto untyped = on_engine(e, e.start("checkout", json::value{{"item", "tea"}, {"quantity", 1}}));
  BOOST_REQUIRE(untyped);
  BOOST_TEST(on_engine(e, untyped->info()).value().version == 2);
}

BOOST_AUTO_TEST_CASE(a_run_that_did_not_complete_gives_its_own_error, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "refuses", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto refuse = []() -> asio::awaitable<int> {
      throw non_retriable_error("card declined");
      co_return 0;
    };
    co_await ctx.step("charge", refuse);
    co_return nullptr;
  });
  add_workflow(e, "throws", [](context&, json::value) -> asio::awaitable<json::value> {
    throw std::runtime_error("not an engine error");
    co_return nullptr;
  });
  add_workflow(e, "waits", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto go = co_await ctx.wait_for_event("go");
    co_return go ? *go : json::value(nullptr);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto refused = on_engine(e, e.start("refuses", json::object{}));
  BOOST_REQUIRE(refused);
  auto r = on_engine(e, refused->output(10s));
  BOOST_REQUIRE(!r);
  BOOST_TEST((r.error() == errc::step_failed));
  // The record holds the message.
  auto info = on_engine(e, refused->info()).value();
  BOOST_TEST(json::serialize(info.error).find("card declined") != std::string::npos);

  auto thrown = on_engine(e, e.start("throws", json::object{}));
  BOOST_REQUIRE(thrown);
  auto t = on_engine(e, thrown->result<json::value>(10s));
  BOOST_REQUIRE(!t);
  BOOST_TEST((t.error() == errc::run_failed), t.error().message());

  auto waiting = on_engine(e, e.start("waits", json::object{}));
  BOOST_REQUIRE(waiting);
  auto w = on_engine(e, waiting->output(300ms));
  BOOST_REQUIRE(!w);
  BOOST_TEST((w.error() == errc::wait_timeout));
  BOOST_REQUIRE(e.cancel_blocking(waiting->id()));
  auto c = on_engine(e, waiting->output(10s));
  BOOST_REQUIRE(!c);
  BOOST_TEST((c.error() == errc::cancelled));

  auto nobody = e.handle(new_run_id());
  auto n = on_engine(e, nobody.status());
  BOOST_REQUIRE(!n);
  BOOST_TEST((n.error() == errc::run_not_found));
  auto bad = on_engine(e, e.handle("not-a-uuid").output(1s));
  BOOST_REQUIRE(!bad);
  BOOST_TEST((bad.error() == errc::invalid_run_id));
}

BOOST_AUTO_TEST_CASE(a_handle_follows_its_runs_events_and_output_streams, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "writer", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    auto out = ctx.stream("tokens");
    co_await ctx.wait_for_event("go");
    auto write = [&]() -> asio::awaitable<int> {
      for (int i = 0; i < 3; ++i)
        co_await out.write(json::value("t" + std::to_string(i)));
      co_return 3;
    };
    const int n = co_await ctx.step("write", write);
    co_await out.close();
    co_return json::value(n);
  });
  BOOST_REQUIRE(e.start_blocking());
  auto h = on_engine(e, e.start("writer", json::object{}));
  auto other = on_engine(e, e.start("writer", json::object{}));
  BOOST_REQUIRE(h);
  BOOST_REQUIRE(other);
  BOOST_REQUIRE(wait_until([&] { return status_of(e, h->id()) == "waiting"; }, 10s));
  auto events = on_engine(e, h->events());
  BOOST_REQUIRE(events);
  BOOST_REQUIRE(e.send_event_blocking(other->id(), "go", json::value(true)));
  BOOST_REQUIRE(e.send_event_blocking(h->id(), "go", json::value(true)));
  // Its own events only, up to its completion.
  std::vector<std::string> kinds;
  bool foreign = false;
  auto consume = [&]() -> asio::awaitable<void> {
    while (auto ev = co_await events->next()) {
      if (ev->run != h->id()) foreign = true;
      kinds.emplace_back(ev->kind());
      if (ev->as<events::run_completed>()) break;
    }
  };
  on_engine(e, consume());
  BOOST_TEST(!foreign);
  BOOST_REQUIRE(!kinds.empty());
  BOOST_TEST(kinds.back() == "run_completed");
  BOOST_TEST(std::count(kinds.begin(), kinds.end(), "step_completed") >= 1);
  // Its output stream, from any index.
  auto reader = on_engine(e, h->stream("tokens", 1));
  BOOST_REQUIRE(reader);
  std::vector<std::string> chunks;
  auto read = [&]() -> asio::awaitable<void> {
    while (auto c = co_await reader->next())
      chunks.push_back(json::serialize(c->data));
  };
  on_engine(e, read());
  BOOST_TEST(chunks == (std::vector<std::string>{"\"t1\"", "\"t2\""}), boost::test_tools::per_element());
  BOOST_TEST(on_engine(e, h->result<int>(10s)).value() == 3);
}

BOOST_AUTO_TEST_CASE(an_input_that_does_not_convert_fails_the_run_naming_where, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  register_checkout(e);
  BOOST_REQUIRE(e.start_blocking());
  // Through the untyped API, as a tool or the HTTP API would start it.
  auto h = on_engine(e, e.start("checkout", json::value{{"item", "tea"}, {"quantity", "three"}}));
  BOOST_REQUIRE(h);
  auto r = on_engine(e, h->result<shop::receipt>(10s));
  BOOST_REQUIRE(!r);
  BOOST_TEST((r.error() == errc::invalid_input));
  const auto error = on_engine(e, h->info()).value().error;
  BOOST_TEST(error.at("code") == json::value("invalid_input"));
  const std::string message(error.at("message").as_string());
  BOOST_TEST(message.find("at /quantity: ") != std::string::npos, message);
}

BOOST_AUTO_TEST_CASE(the_main_operations_take_any_asio_completion_token, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  const auto checkout = register_checkout(e);
  BOOST_REQUIRE(e.start_blocking());
  // A future.
  auto started = async_start(e, checkout, shop::order{"tea", 2}, enqueue_options{}, asio::use_future).get();
  BOOST_REQUIRE(started);
  auto receipt = async_result<shop::receipt>(e, *started, 10s, asio::use_future).get();
  BOOST_REQUIRE(receipt);
  BOOST_TEST(receipt->total_cents == 500);
  // A callback, on the engine's executor.
  std::promise<std::string> status;
  async_get(e, started->id(), [&status](std::exception_ptr ex, result<run_info> run) {
    status.set_value(ex    ? "threw"
                     : run ? std::string(storage::to_string(run->status))
                           : run.error().message());
  });
  BOOST_TEST(status.get_future().get() == "completed");
  // Deferred: nothing happens until it is launched, and the strings it was given may be gone by then.
  auto deferred = [&] {
    std::string name = "checkout";
    return async_enqueue(e, name, json::value{{"item", "mug"}, {"quantity", 1}}, enqueue_options{},
                         asio::deferred);
  }();
  auto id = std::move(deferred)(asio::use_future).get();
  BOOST_REQUIRE(id);
  auto done = async_wait(e, *id, 10s, asio::use_future).get();
  BOOST_REQUIRE(done);
  BOOST_TEST(done->output.at("total_cents") == json::value(250));
  // Errors come as results (a future would rethrow an exception, had there been one).
  auto missing = async_get(e, new_run_id(), asio::use_future).get();
  BOOST_REQUIRE(!missing);
  BOOST_TEST((missing.error() == errc::run_not_found));
  // And awaitable, for coroutines on other executors.
  auto cancelled = on_engine(e, async_cancel(e, *id, cancel_options{}, asio::use_awaitable));
  BOOST_REQUIRE(cancelled);
  BOOST_TEST((*cancelled == storage::run_status::completed));  // it finished before: nothing to cancel
}

BOOST_AUTO_TEST_CASE(the_callers_trace_goes_on_with_the_run_its_steps_and_its_children, *utf::timeout(60)) {
  auto db = fresh_database();
  engine e(options_for(db));
  add_workflow(e, "child", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    const auto t = ctx.trace();
    co_return t ? json::value(t->trace_id) : json::value(nullptr);
  });
  add_workflow(e, "parent", [](context& ctx, json::value) -> asio::awaitable<json::value> {
    // What a step would send on a call it makes.
    auto outgoing = [&ctx]() -> asio::awaitable<std::string> {
      const auto t = ctx.trace();
      co_return t ? t->traceparent() : std::string();
    };
    const std::string sent = co_await ctx.step("call", outgoing);
    const std::string child = "child";
    const json::value none;
    auto child_trace = co_await ctx.child(child, none);
    co_return json::value{{"sent", sent}, {"child", child_trace}};
  });
  BOOST_REQUIRE(e.start_blocking());
  // Each step's end is logged with the run's trace id (at debug; failures at info).
  std::mutex lines_mutex;
  std::vector<std::string> lines;
  log::set_level(log::level::debug);
  log::set_sink([&](log::level, std::string_view, std::string_view m) {
    const std::lock_guard lock(lines_mutex);
    lines.emplace_back(m);
  });
  enqueue_options traced;
  traced.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  auto h = on_engine(e, e.start("parent", json::object{}, traced));
  BOOST_REQUIRE(h);
  auto out = on_engine(e, h->output(10s));
  log::set_sink({});
  log::set_level(log::level::info);
  BOOST_REQUIRE(out);
  const auto logged = std::count_if(lines.begin(), lines.end(), [&](const std::string& l) {
    return l.find("run " + h->id() +
                  " (parent) step 'call' step_completed, attempt 1, trace_id "
                  "4bf92f3577b34da6a3ce929d0e0e4736") != std::string::npos;
  });
  BOOST_TEST(logged == 1);
  const std::string sent(out->at("sent").as_string());
  BOOST_TEST(sent.rfind("00-4bf92f3577b34da6a3ce929d0e0e4736-", 0) == 0u, sent);
  BOOST_TEST(sent.find("00f067aa0ba902b7") == std::string::npos, "a span of its own, not the caller's");
  BOOST_TEST(sent.substr(sent.size() - 3) == "-01");
  BOOST_TEST(out->at("child") == json::value("4bf92f3577b34da6a3ce929d0e0e4736"));
  BOOST_TEST((on_engine(e, h->info()).value().traceparent == traced.traceparent));
  // None given: none anywhere; a malformed one is refused before anything is stored.
  auto plain = on_engine(e, e.start("child", json::object{}));
  BOOST_REQUIRE(plain);
  BOOST_TEST(on_engine(e, plain->output(10s)).value().is_null());
  enqueue_options bad;
  bad.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
  auto refused = on_engine(e, e.start("child", json::object{}, bad));
  BOOST_REQUIRE(!refused);
  BOOST_TEST((refused.error() == storage::errc::invalid_argument));
}
