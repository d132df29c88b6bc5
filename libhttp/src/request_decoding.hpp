// What the REST API reads out of a request before the engine sees it. Pure functions of the request (no
// engine, no I/O), apart from the routes so that the fuzzer (tests/fuzz) drives exactly the server's
// decoding.
#pragma once

#include <boost/json/value.hpp>

#include "api.hpp"
#include "keel/engine/engine.hpp"

namespace keel::http::detail {

/// The body as JSON (an empty body is null). Throws bad_request when it is not JSON or nests deeper than the
/// API takes.
boost::json::value body_json(const request& req);

/// What POST /v1/workflows/{name}/runs asks for.
struct start_run_request {
  boost::json::value input;
  enqueue_options options;
};
/// Decodes the body {"input":…, "idempotency_key"?:…, "priority"?:…, "run_at"?:RFC 3339} and the
/// Idempotency-Key header. Throws bad_request for anything else (an unknown field, a wrong type, a key that
/// differs between body and header).
start_run_request decode_start_run(const request& req);

/// Decodes GET /v1/runs's query (workflow, status, parent, limit, cursor). Throws bad_request for an
/// unknown, repeated or invalid parameter.
run_query decode_run_query(const target& t);

/// Decodes GET /v1/hooks's query (workflow, limit, cursor). Throws bad_request for an unknown, repeated or
/// invalid parameter.
hook_query decode_hook_query(const target& t);

/// Decodes POST /v1/runs/{id}/rewind's body {"step": position}. Throws bad_request for any other body.
int decode_rewind_step(const request& req);

/// A schedule's name from a path segment. Throws bad_request unless it is 1 to 200 ASCII letters, digits and
/// `-_.:` (storage::is_valid_schedule_name).
std::string decode_schedule_name(std::string_view segment);

/// Decodes PUT /v1/schedules/{name}: the name (as decode_schedule_name) and the body {"workflow", "cron",
/// "time_zone"?: "UTC", "input"?: null, "version"?, "priority"?, "catch_up"?}, its cron expression parsed in
/// its time zone. Throws bad_request for anything else: code invalid_cron_expression or unknown_time_zone
/// with keel::cron_error's message when the expression or the zone does not parse, invalid_request for an
/// unknown field, a missing one or a wrong type.
schedule_spec decode_schedule_put(const request& req, std::string_view name);

/// Decodes GET /v1/schedules's query (workflow, limit, cursor). Throws bad_request for an unknown, repeated
/// or invalid parameter.
schedule_query decode_schedule_query(const target& t);

}  // namespace keel::http::detail
