#include "http_load_support.hpp"

namespace keel::bench::http_load {

engine_options options_for(const latency_setup& s, run_counter& counter) {
  auto eo = engine_options_for(s);
  eo.on_event = [&counter](const run_event& ev) { counter.on_event(ev); };
  return eo;
}

std::unique_ptr<http::server> start_server_blocking(engine& e, std::size_t connections) {
  http::server_options so;
  so.address = "127.0.0.1";
  so.port = 0;
  so.max_connections = connections;
  auto srv = std::make_unique<http::server>(e, so);
  if (auto r = srv->start(); !r)
    throw std::runtime_error("the HTTP server did not start: " + r.error().message());
  return srv;
}

std::string what_of(std::exception_ptr ep) {
  if (!ep) return {};
  try {
    std::rethrow_exception(ep);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

}  // namespace keel::bench::http_load
