// An engine on a fresh database with an HTTP server for it on a free loopback port: what the HTTP tests
// talk to with a real client.
#pragma once

#include <boost/test/unit_test.hpp>
#include <functional>
#include <optional>

#include "engine_fixture.hpp"
#include "keel/http/server.hpp"

namespace keel::test {

/// Registers the test's workflows with `setup`, starts the engine and the server (a test failure if either
/// does not start); the destructor stops both.
struct served_engine {
  served_engine(const std::function<void(engine&)>& setup, http::server_options o,
                engine_options eo = options_for(fresh_database()))
      : e(std::move(eo)) {
    setup(e);
    BOOST_REQUIRE(e.start_blocking());
    o.address = "127.0.0.1";
    o.port = 0;
    s.emplace(e, o);
    BOOST_REQUIRE(s->start());
  }
  ~served_engine() {
    s->stop_blocking();
    e.stop_blocking();
  }
  served_engine(const served_engine&) = delete;
  served_engine& operator=(const served_engine&) = delete;

  engine e;
  std::optional<http::server> s;
};

}  // namespace keel::test
