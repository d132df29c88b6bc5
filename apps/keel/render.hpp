// The human-readable forms of the API's answers (--json prints the answers themselves instead).
#pragma once

#include <boost/json/fwd.hpp>
#include <string>
#include <string_view>

namespace keel::cli {

struct sse_message;

/// A run (GET /v1/runs/{id}): its fields, what it waits for, its open hooks and a table of its steps.
std::string render_run(const boost::json::value& run);

/// Runs of a listing as a table, newest first, one line each (nothing but the header when empty).
std::string render_run_table(const boost::json::array& runs);

/// GET /v1/workflows: one line per workflow with its versions.
std::string render_workflows(const boost::json::value& answer);

/// Schedules of a listing as a table, one line each: name, workflow, cron, time zone, paused, next firing
/// (nothing but the header when empty).
std::string render_schedule_table(const boost::json::array& schedules);

/// A schedule (GET /v1/schedules/{name}): its definition, state, last firing and upcoming firings.
std::string render_schedule(const boost::json::value& schedule);

/// When a schedule fires next, as a phrase: "next firing 2026-11-27 02:00:00.000Z", "paused", "it never fires
/// again".
std::string schedule_next_text(const boost::json::value& schedule);

/// One line for an event of a stream: time, run, type, step, detail. Lines end without '\n'.
std::string render_event(const sse_message& m);

/// `v` as compact JSON, cut at `max` bytes with an ellipsis.
std::string compact(const boost::json::value& v, std::size_t max = 160);

/// An error value ({"code","message"} or anything else) as "code: message".
std::string error_text(const boost::json::value& error);

}  // namespace keel::cli
