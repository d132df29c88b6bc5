// Webhooks that receive whole requests (ctx.create_webhook): what a request delivers to the workflow, and
// how its sender is answered.
#pragma once

#include <boost/json/fwd.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "keel/common/run_id.hpp"
#include "keel/engine/fetch.hpp"

namespace keel {

/// A request a webhook received, as the workflow sees it (webhook::wait): everything a third party's
/// signature may cover, so that the workflow verifies it itself (Stripe, GitHub, Slack).
struct webhook_request {
  std::string method;
  /// What followed the token in the URL path ("" for `/v1/webhooks/<token>`, "/x" for `.../<token>/x`):
  /// the token itself is never stored.
  std::string path;
  /// The query string, undecoded, without its `?`.
  std::string query;
  http_fields headers;
  /// The body's bytes, exactly as received (a signature covers these).
  std::string body;

  /// The first header named `name` (case-insensitive), if any.
  [[nodiscard]] std::optional<std::string_view> header(std::string_view name) const;
  /// The body parsed as JSON; nullopt when it does not parse.
  [[nodiscard]] std::optional<boost::json::value> json() const;
};

/// How a webhook's request is answered.
struct webhook_response {
  unsigned status = 200;  ///< 200 to 599
  /// Not Content-Length, Transfer-Encoding or Connection (the server sets those).
  http_fields headers;
  std::string body;
};

/// Options of ctx.create_webhook.
struct webhook_options {
  /// Every request is answered with this at once, once the run has it. None: the workflow answers from a
  /// step (webhook::respond), and a request waits for that answer up to `response_timeout`, then gets
  /// `202 Accepted` (the request is kept: the run goes on).
  std::optional<webhook_response> respond_with;
  std::chrono::milliseconds response_timeout{10'000};
  /// After this long (from the first execution that created it) requests are refused (hook_expired) and
  /// webhook::wait() returns nullopt. None: it lasts as long as its run.
  std::optional<std::chrono::milliseconds> ttl;
  /// Stored with the webhook, for whoever lists its run.
  boost::json::value metadata;
};

/// What engine::deliver_webhook did.
struct webhook_delivery {
  run_id run;
  /// The same request was delivered before (a sender's retry): nothing changed.
  bool repeated = false;
  /// The answer for the sender; none: the run did not answer in time (keeld answers 202).
  std::optional<webhook_response> response;
};

// Boost.JSON conversions: a webhook_request is a webhook's payload (the body as text, or `body_base64` when
// it is not UTF-8); a webhook_response its answer.
void tag_invoke(boost::json::value_from_tag, boost::json::value& v, const webhook_request& r);
webhook_request tag_invoke(boost::json::value_to_tag<webhook_request>, const boost::json::value& v);
void tag_invoke(boost::json::value_from_tag, boost::json::value& v, const webhook_response& r);
webhook_response tag_invoke(boost::json::value_to_tag<webhook_response>, const boost::json::value& v);

}  // namespace keel
