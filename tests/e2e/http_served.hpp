// The HTTP tests' engine: the test workflows (echo, approval, sum, waits) and a server on a free port.
#pragma once

#include "engine_fixture.hpp"
#include "http_client.hpp"
#include "served_engine.hpp"

namespace keel::test {

/// An engine with the test workflows and a server on a free port.
struct served : served_engine {
  explicit served(http::server_options o = {}) : served_engine(register_workflows, std::move(o)) {}
  static void register_workflows(engine& e) {
    add_workflow(e, "echo", [](context& ctx, json::value in) -> asio::awaitable<json::value> {
      auto step = [in] { return in; };
      co_return co_await ctx.step("echo", step);
    });
    add_workflow(e, "approval", [](context& ctx, json::value) -> asio::awaitable<json::value> {
      auto hook = co_await ctx.create_hook("decision");
      auto announce = [token = hook.token()] { return json::value(token); };
      co_await ctx.step("announce", announce);
      auto decision = co_await hook.wait();
      co_return decision ? *decision : json::value("expired");
    });
    e.register_workflow<std::vector<int>, int>("sum", 1,
                                               [](context&, std::vector<int> xs) -> asio::awaitable<int> {
                                                 int total = 0;
                                                 for (const int x : xs)
                                                   total += x;
                                                 co_return total;
                                               });
    add_workflow(e, "waits", [](context& ctx, json::value) -> asio::awaitable<json::value> {
      auto go = co_await ctx.wait_for_event("go");
      co_return go ? *go : json::value("timed out");
    });
  }
};

}  // namespace keel::test
