// `/v1/webhooks/<token>[/...]`, any method: the whole request goes to the webhook's run (ctx.create_webhook),
// and its sender gets the answer the run gives (or 202 once the webhook's response timeout passed).
#include <boost/beast/http/field.hpp>
#include <boost/json/value.hpp>

#include "api.hpp"
#include "keel/engine.hpp"
#include "webhook_endpoint.hpp"

namespace keel::http::detail {

namespace beast_http = boost::beast::http;
namespace json = boost::json;

boost::asio::awaitable<response> deliver_webhook(engine& e, const request& req, const std::string& token) {
  webhook_request delivered;
  delivered.method = std::string(req.method_string());
  // The raw target, as the sender signed it (Twilio signs the URL): the path after the token, and the query.
  const std::string_view raw = req.target();
  const auto question = raw.find('?');
  const std::string_view path = raw.substr(0, question);
  const std::string prefix = "/v1/webhooks/" + token;
  if (path.size() > prefix.size() && path.substr(0, prefix.size()) == prefix)
    delivered.path = path.substr(prefix.size());
  if (question != std::string_view::npos) delivered.query = raw.substr(question + 1);
  for (const auto& field : req)
    delivered.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  delivered.body = req.body();
  auto r = co_await e.deliver_webhook(token, delivered);
  if (!r) co_return from_error(r.error());
  if (!r->response) {
    // The run has the request and goes on; it did not answer within the webhook's response timeout.
    co_return json_response(beast_http::status::accepted,
                            json::object{{"run_id", r->run}, {"status", "accepted"}});
  }
  response res;
  res.version(11);
  res.result(r->response->status);
  for (const auto& [name, value] : r->response->headers)
    res.insert(name, value);
  // The run's content is served from keeld's origin: never sniffed into something runnable there.
  if (res.find("X-Content-Type-Options") == res.end()) res.set("X-Content-Type-Options", "nosniff");
  // (The engine refuses a body on these; an answer that carries one anyway must not break the connection.)
  const auto status = r->response->status;
  if (status != 204 && status != 304) res.body() = std::move(r->response->body);
  co_return res;
}

}  // namespace keel::http::detail
