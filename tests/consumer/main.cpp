// keel_consumer DATA_DIR: a program built against an installed Keel. On an embedded PostgreSQL in DATA_DIR it
// runs a one-step workflow to completion and asks the HTTP front end, serving beside the engine, for
// /healthz. Prints what went wrong and exits 1 otherwise.
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <iostream>
#include <string>

#include "keel/engine.hpp"
#include "keel/http/server.hpp"
#include "keel/storage/embedded_postgres.hpp"

namespace asio = boost::asio;
namespace json = boost::json;

namespace {

int fail(const std::string& what) {
  std::cerr << "keel_consumer: " << what << '\n';
  return 1;
}

/// The whole answer to a GET of `path` (HTTP/1.0: the server closes the connection after it).
std::string http_get(unsigned short port, const std::string& path) {
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  socket.connect({asio::ip::make_address("127.0.0.1"), port});
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  asio::write(socket, asio::buffer(request));
  std::string answer;
  boost::system::error_code ec;  // eof ends the answer
  asio::read(socket, asio::dynamic_buffer(answer), ec);
  return answer;
}

/// Runs one workflow to completion on the database `conninfo` and asks the HTTP front end for /healthz. The
/// server and the engine stop as they go out of scope (the server first), before the caller stops PostgreSQL.
int run_greeting(const std::string& conninfo) {
  keel::engine_options options;
  options.store.conninfo = conninfo;
  options.threads = 2;
  keel::engine engine(options);
  engine.register_workflow<std::string, std::string>(
      "greet", 1, [](keel::context& ctx, std::string name) -> asio::awaitable<std::string> {
        auto hello = [&] {
          std::string text = "hello, ";
          text += name;
          return text;
        };
        co_return co_await ctx.step("hello", hello);
      });
  if (auto r = engine.start_blocking(); !r) return fail("engine start: " + r.error().message());

  keel::http::server http(engine, {.port = 0});
  if (auto r = http.start(); !r) return fail("http start: " + r.error().message());

  auto id = engine.enqueue_blocking("greet", json::value("keel"));
  if (!id) return fail("enqueue: " + id.error().message());
  auto run = engine.wait_blocking(*id, std::chrono::seconds(60));
  if (!run) return fail("wait: " + run.error().message());
  if (run->status != keel::storage::run_status::completed || run->output != json::value("hello, keel")) {
    return fail("run " + *id + " ended " + std::string(keel::storage::to_string(run->status)) + " with " +
                json::serialize(run->output) + json::serialize(run->error));
  }
  const auto answer = http_get(http.port(), "/healthz");
  if (answer.rfind("HTTP/1.0 200", 0) != 0 && answer.rfind("HTTP/1.1 200", 0) != 0)
    return fail("GET /healthz answered: " + answer);
  std::cout << "keel_consumer: run " << *id << " completed: " << json::serialize(run->output) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return fail("usage: keel_consumer DATA_DIR");
  // As root (CI), the server runs as the user `postgres`, which must be able to reach DATA_DIR.
  keel::storage::embedded_postgres pg({.data_dir = argv[1], .durable = false});
  if (auto r = pg.start_blocking(); !r) return fail("embedded PostgreSQL: " + r.error().message());
  if (auto r = pg.create_database_blocking("consumer"); !r)
    return fail("create database: " + r.error().message());
  const int status = run_greeting(pg.connection_string("consumer"));
  if (auto r = pg.stop_blocking(); !r) return fail("embedded PostgreSQL stop: " + r.error().message());
  return status;
}
