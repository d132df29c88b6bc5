// Each command: arguments checked locally first (a bad one costs no request), then the request, then the
// answer printed as people read it, or as the API's JSON with --json.
#include "commands.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <iostream>

#include "errors.hpp"
#include "interrupt.hpp"
#include "keel/common/time_text.hpp"
#include "render.hpp"
#include "sse_follow.hpp"

namespace keel::cli {
namespace {

namespace json = boost::json;

constexpr std::string_view k_statuses[] = {"queued", "running",   "sleeping",      "waiting",    "completed",
                                           "failed", "cancelled", "dead_lettered", "unclaimable"};

/// A JSON argument, parsed here so that a typo is a usage error rather than a round trip.
json::value json_argument(std::string_view text, std::string_view what, std::string_view command) {
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec)
    throw usage_error(
        "invalid JSON for " + std::string(what) + ": " + ec.message() + " in '" + std::string(text) + "'",
        std::string(command));
  return v;
}

std::int64_t integer_option(const invocation& inv, std::string_view name, std::int64_t min, std::int64_t max,
                            std::string_view command) {
  const auto& text = *inv.value(name);
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || v < min || v > max)
    throw usage_error(std::string(name) + " must be an integer from " + std::to_string(min) + " to " +
                          std::to_string(max) + ", not '" + text + "'",
                      std::string(command));
  return v;
}

/// Appends key=value to a target's query. (Appends, not "?" + std::string: GCC 12 at -O3 warns inside
/// that operator+ with -Wrestrict, falsely.)
void add_query(std::string& target, std::string_view key, std::string_view value) {
  target += target.find('?') == std::string::npos ? '?' : '&';
  target += key;
  target += '=';
  target += query_value(value);
}

json::value parse_answer(const http_reply& r) {
  throw_unless_success(r);
  boost::system::error_code ec;
  auto v = json::parse(r.body, ec);
  if (ec) throw unreachable("the server's answer is not JSON: " + r.body.substr(0, 200));
  return v;
}

/// The answer, printed as --json asks (the server's own compact JSON, one document per line).
void print_json(const json::value& v) {
  std::cout << json::serialize(v) << '\n';
}

std::string run_path(std::string_view id) {
  return "/v1/runs/" + path_segment(id);
}

std::string string_field(const json::value& v, std::string_view key) {
  const auto* f = v.is_object() ? v.get_object().if_contains(key) : nullptr;
  return f != nullptr && f->is_string() ? std::string(f->get_string()) : std::string();
}

/// A listing's items (under `key` in each page) and the cursor of the page after them (null: none).
struct listing {
  json::array items;
  json::value next;
};

/// GET `target` (its query included) from --cursor on: one page, or with --all every page.
listing fetch_pages(http_client& client, const invocation& inv, const std::string& target,
                    std::string_view key) {
  std::optional<std::string> cursor;
  if (const auto* c = inv.value("--cursor")) cursor = *c;
  listing out;
  for (;;) {
    auto page_target = target;
    if (cursor) add_query(page_target, "cursor", *cursor);
    auto page = parse_answer(client.request_blocking("GET", page_target));
    for (auto& item : page.at(key).as_array())
      out.items.push_back(std::move(item));
    out.next = page.at("next_cursor");
    if (!inv.flag("--all") || !out.next.is_string()) break;
    cursor = std::string(out.next.get_string());
  }
  return out;
}

/// Prints a listing: `{key: […], "next_cursor"}` with --json, else its table and, on stderr, how to get the
/// next page when there is one.
int print_listing(const global_options& g, listing l, std::string_view key,
                  std::string (*table)(const json::array&)) {
  if (g.json) {
    print_json(json::object{{key, std::move(l.items)}, {"next_cursor", l.next}});
    return 0;
  }
  std::cout << table(l.items);
  if (l.next.is_string())
    std::cerr << "keel: more " << key << " follow: add --cursor " << l.next.get_string()
              << " for the next page, or --all for every page\n";
  return 0;
}

// ---- commands ----

int start(http_client& client, const global_options& g, const invocation& inv) {
  json::object body;
  body["input"] =
      inv.value("--input") ? json_argument(*inv.value("--input"), "--input", "start") : json::value();
  if (const auto* key = inv.value("--key")) body["idempotency_key"] = *key;
  if (inv.value("--priority"))
    body["priority"] = integer_option(inv, "--priority", INT32_MIN, INT32_MAX, "start");
  if (const auto* at = inv.value("--run-at")) {
    if (!parse_rfc3339(*at))
      throw usage_error("--run-at must be an RFC 3339 time, e.g. 2026-11-26T09:00:00Z", "start");
    body["run_at"] = *at;
  }
  if (const auto* key = inv.value("--debounce-key")) body["debounce_key"] = *key;
  if (inv.value("--debounce-ms"))
    body["debounce_ms"] = integer_option(inv, "--debounce-ms", 1, 30LL * 24 * 3600 * 1000, "start");
  if (const auto* key = inv.value("--concurrency-key")) body["concurrency_key"] = *key;
  if (inv.value("--concurrency-limit"))
    body["concurrency_limit"] = integer_option(inv, "--concurrency-limit", 1, 10'000, "start");
  if (const auto* key = inv.value("--throttle-key")) body["throttle_key"] = *key;
  if (inv.value("--throttle-limit"))
    body["throttle_limit"] = integer_option(inv, "--throttle-limit", 1, 10'000, "start");
  if (inv.value("--throttle-ms"))
    body["throttle_window_ms"] = integer_option(inv, "--throttle-ms", 1, 366LL * 24 * 3600 * 1000, "start");
  if (const auto* key = inv.value("--fairness-key")) body["fairness_key"] = *key;
  if (inv.value("--fairness-weight"))
    body["fairness_weight"] = integer_option(inv, "--fairness-weight", 1, 1'000, "start");
  const auto reply = client.request_blocking("POST", "/v1/workflows/" + path_segment(inv.args[0]) + "/runs",
                                             json::serialize(body));
  const auto run = parse_answer(reply);
  if (g.json) {
    print_json(run);
  } else {
    std::cout << string_field(run, "id") << '\n';
    if (reply.status == 200 && (inv.value("--debounce-key") || string_field(run, "idempotency_key").empty()))
      std::cerr << "keel: collapsed into the queued run of its debounce key (it takes this input)\n";
    else if (reply.status == 200)
      std::cerr << "keel: the key '" << string_field(run, "idempotency_key")
                << "' had started this run already (status " << string_field(run, "status") << ")\n";
  }
  return 0;
}

int get(http_client& client, const global_options& g, const invocation& inv) {
  const auto run = parse_answer(client.request_blocking("GET", run_path(inv.args[0])));
  if (g.json)
    print_json(run);
  else
    std::cout << render_run(run);
  return 0;
}

int list(http_client& client, const global_options& g, const invocation& inv) {
  std::string query;
  auto add = [&](std::string_view key, const std::string& value) { add_query(query, key, value); };
  if (const auto* s = inv.value("--status")) {
    if (std::find(std::begin(k_statuses), std::end(k_statuses), *s) == std::end(k_statuses))
      throw usage_error(
          "--status must be one of queued, running, sleeping, waiting, completed, failed, "
          "cancelled, dead_lettered, unclaimable; not '" +
              *s + "'",
          "list");
    add("status", *s);
  }
  if (const auto* w = inv.value("--workflow")) add("workflow", *w);
  if (inv.value("--limit")) add("limit", std::to_string(integer_option(inv, "--limit", 1, 1000, "list")));
  auto runs = fetch_pages(client, inv, "/v1/runs" + query, "runs");
  return print_listing(g, std::move(runs), "runs", render_run_table);
}

int cancel(http_client& client, const global_options& g, const invocation& inv) {
  const auto answer = parse_answer(client.request_blocking("POST", run_path(inv.args[0]) + "/cancel"));
  if (g.json)
    print_json(answer);
  else
    std::cout << string_field(answer, "run_id") << ": " << string_field(answer, "status") << '\n';
  return 0;
}

int retry(http_client& client, const global_options& g, const invocation& inv) {
  const auto answer = parse_answer(client.request_blocking("POST", run_path(inv.args[0]) + "/retry"));
  if (g.json)
    print_json(answer);
  else
    std::cout << string_field(answer, "run_id") << ": retrying\n";
  return 0;
}

int send(http_client& client, const global_options& g, const invocation& inv) {
  const auto payload =
      inv.args.size() > 2 ? json_argument(inv.args[2], "the payload", "send") : json::value();
  const auto answer = parse_answer(client.request_blocking(
      "POST", run_path(inv.args[0]) + "/events/" + path_segment(inv.args[1]), json::serialize(payload)));
  if (g.json)
    print_json(answer);
  else
    std::cout << "sent " << string_field(answer, "event") << " to " << string_field(answer, "run_id") << '\n';
  return 0;
}

int publish(http_client& client, const global_options& g, const invocation& inv) {
  const auto payload =
      inv.args.size() > 1 ? json_argument(inv.args[1], "the payload", "publish") : json::value();
  std::vector<http_header> headers;
  if (const auto* key = inv.value("--key")) headers.push_back({"Idempotency-Key", *key});
  const auto answer = parse_answer(client.request_blocking("POST", "/v1/events/" + path_segment(inv.args[0]),
                                                           json::serialize(payload), headers));
  if (g.json) {
    print_json(answer);
    return 0;
  }
  const auto* started = answer.is_object() ? answer.get_object().if_contains("started") : nullptr;
  const auto* cancelled = answer.is_object() ? answer.get_object().if_contains("cancelled") : nullptr;
  std::size_t n = 0;
  if (started != nullptr && started->is_array()) {
    for (const auto& s : started->get_array()) {
      const bool created = s.is_object() && s.get_object().if_contains("created") != nullptr &&
                           s.get_object().at("created") == true;
      std::cout << (created ? "started " : "already started ") << string_field(s, "workflow") << ' '
                << string_field(s, "run_id") << '\n';
      ++n;
    }
  }
  if (cancelled != nullptr && cancelled->is_array()) {
    for (const auto& id : cancelled->get_array()) {
      std::cout << "cancelled " << (id.is_string() ? std::string(id.get_string()) : json::serialize(id))
                << '\n';
      ++n;
    }
  }
  if (n == 0) std::cout << "no workflow starts on " << inv.args[0] << " and no run cancels on it\n";
  return 0;
}

int resume(http_client& client, const global_options& g, const invocation& inv) {
  // The hook's path as `keel get` shows it (or a whole URL ending in it) works as well as its token.
  std::string token = inv.args[0];
  if (const auto at = token.rfind("/v1/hooks/"); at != std::string::npos) token.erase(0, at + 10);
  const auto payload =
      inv.args.size() > 1 ? json_argument(inv.args[1], "the payload", "resume") : json::value();
  const auto reply =
      client.request_blocking("POST", "/v1/hooks/" + path_segment(token), json::serialize(payload));
  const auto answer = parse_answer(reply);
  if (g.json)
    print_json(answer);
  else if (reply.status == 200)
    std::cout << string_field(answer, "run_id") << ": resumed already, with this payload\n";
  else
    std::cout << string_field(answer, "run_id") << ": resumed\n";
  return 0;
}

int workflows(http_client& client, const global_options& g, const invocation&) {
  const auto answer = parse_answer(client.request_blocking("GET", "/v1/workflows"));
  if (g.json)
    print_json(answer);
  else
    std::cout << render_workflows(answer);
  return 0;
}

std::int64_t micros(std::string_view rfc3339_text) {
  const auto t = parse_rfc3339(rfc3339_text);
  return t ? std::chrono::duration_cast<std::chrono::microseconds>(t->time_since_epoch()).count() : 0;
}

/// Whether the end event `event` of the followed run is its last. A run's stream replays its whole log, in
/// which a failure may be followed by a retry (and a rewind reruns even a completed run): the run as it is
/// now says whether anything came after this end.
bool is_final_end(http_client& client, const std::string& id, const json::value& event) {
  int wait_ms = 200;
  for (;;) {
    try {
      const auto run = parse_answer(client.request_blocking("GET", run_path(id)));
      const auto status = string_field(run, "status");
      if (status != "completed" && status != "failed" && status != "cancelled") return false;
      const auto ended_at = micros(string_field(event, "at"));
      const auto* history = run.as_object().if_contains("history");
      if (history == nullptr || !history->is_array()) return true;
      for (const auto& h : history->get_array()) {
        const auto* at = h.is_object() ? h.get_object().if_contains("at") : nullptr;
        if (at != nullptr && at->is_number() && at->to_number<std::int64_t>() > ended_at) return false;
      }
      return true;
    } catch (const unreachable& e) {
      if (interrupted()) return true;
      // The server went away just now: ask again once it is back rather than guess.
      std::cerr << "keel: " << e.what() << "; asking again in " << wait_ms << " ms\n";
      sleep_unless_interrupted(wait_ms);
      wait_ms = std::min(wait_ms * 2, 5000);
    }
  }
}

int tail(http_client& client, const global_options& g, const invocation& inv) {
  std::optional<std::string> run;
  if (!inv.args.empty()) run = inv.args[0];
  if (run && inv.value("--workflow"))
    throw usage_error("--workflow filters the stream of every run; not with a run id", "tail");
  follow_options options;
  std::string query;
  auto add = [&](std::string_view key, const std::string& value) { add_query(query, key, value); };
  if (const auto* w = inv.value("--workflow")) add("workflow", *w);
  if (inv.flag("--no-frames")) add("frames", "false");
  if (inv.value("--after"))
    options.last_event_id = std::to_string(integer_option(inv, "--after", 0, INT64_MAX - 1, "tail"));
  options.target = (run ? run_path(*run) + "/events" : std::string("/v1/events")) + query;
  catch_interrupts();
  follow_blocking(client, options, [&](const sse_message& m) {
    if (g.json)
      std::cout << m.data << std::endl;  // flushed: a tail is read as it happens, often through a pipe
    else
      std::cout << render_event(m) << std::endl;
    if (!run || !m.event.empty()) return false;
    boost::system::error_code ec;
    const auto ev = json::parse(m.data, ec);
    if (ec || string_field(ev, "run_id") != *run) return false;  // a child's end is not the run's
    const auto kind = string_field(ev, "kind");
    const bool end = kind == "run_completed" || kind == "run_failed" || kind == "run_cancelled" ||
                     kind == "run_dead_lettered";
    return end && is_final_end(client, *run, ev);
  });
  return 0;
}

std::string schedule_path(std::string_view name) {
  return "/v1/schedules/" + path_segment(name);
}

int schedules(http_client& client, const global_options& g, const invocation& inv) {
  std::string query;
  if (const auto* w = inv.value("--workflow")) add_query(query, "workflow", *w);
  if (inv.value("--limit"))
    add_query(query, "limit", std::to_string(integer_option(inv, "--limit", 1, 1000, "schedules")));
  auto schedules = fetch_pages(client, inv, "/v1/schedules" + query, "schedules");
  return print_listing(g, std::move(schedules), "schedules", render_schedule_table);
}

/// `schedule put`'s options, which the other subcommands refuse.
constexpr std::string_view k_put_options[] = {"--workflow", "--cron",     "--tz",     "--input",
                                              "--catch-up", "--priority", "--version"};

int schedule_put(http_client& client, const global_options& g, const invocation& inv) {
  const auto& name = inv.args[1];
  if (!inv.value("--workflow") || !inv.value("--cron"))
    throw usage_error("schedule put needs --workflow and --cron", "schedule");
  json::object body;
  body["workflow"] = *inv.value("--workflow");
  body["cron"] = *inv.value("--cron");
  if (const auto* tz = inv.value("--tz")) body["time_zone"] = *tz;
  if (const auto* input = inv.value("--input")) body["input"] = json_argument(*input, "--input", "schedule");
  if (inv.value("--catch-up")) body["catch_up"] = integer_option(inv, "--catch-up", 0, 1000, "schedule");
  if (inv.value("--priority"))
    body["priority"] = integer_option(inv, "--priority", INT32_MIN, INT32_MAX, "schedule");
  if (inv.value("--version")) body["version"] = integer_option(inv, "--version", 1, INT32_MAX, "schedule");
  const auto reply = client.request_blocking("PUT", schedule_path(name), json::serialize(body));
  const auto s = parse_answer(reply);
  if (g.json) {
    print_json(s);
    return 0;
  }
  const auto* changed = s.is_object() ? s.get_object().if_contains("changed") : nullptr;
  const bool did_change = changed != nullptr && changed->is_bool() && changed->get_bool();
  std::cout << string_field(s, "name") << ": "
            << (reply.status == 201 ? "created"
                : did_change        ? "updated"
                                    : "unchanged")
            << "; " << schedule_next_text(s) << '\n';
  return 0;
}

int schedule(http_client& client, const global_options& g, const invocation& inv) {
  const auto& sub = inv.args[0];
  if (sub != "show" && sub != "put" && sub != "pause" && sub != "resume" && sub != "delete")
    throw usage_error("unknown schedule subcommand '" + sub + "' (show, put, pause, resume, delete)",
                      "schedule");
  if (sub == "put") return schedule_put(client, g, inv);
  for (const auto option : k_put_options)
    if (inv.value(option)) throw usage_error(std::string(option) + " is for `schedule put` only", "schedule");
  const auto& name = inv.args[1];
  if (sub == "delete") {
    const auto reply = client.request_blocking("DELETE", schedule_path(name));
    throw_unless_success(reply);  // 204: no body
    if (g.json)
      print_json(json::object{{"name", name}, {"deleted", true}});
    else
      std::cout << name << ": deleted\n";
    return 0;
  }
  const auto s = sub == "show"
                     ? parse_answer(client.request_blocking("GET", schedule_path(name)))
                     : parse_answer(client.request_blocking("POST", schedule_path(name) + "/" + sub));
  if (g.json)
    print_json(s);
  else if (sub == "show")
    std::cout << render_schedule(s);
  else if (sub == "pause")
    std::cout << string_field(s, "name") << ": paused\n";
  else
    std::cout << string_field(s, "name") << ": resumed; " << schedule_next_text(s) << '\n';
  return 0;
}

}  // namespace

const std::vector<command_spec>& commands() {
  static const std::vector<command_spec> all{
      {"start",
       "start WORKFLOW [--input JSON] [--key KEY] [--priority N] [--run-at TIME] [--debounce-key K "
       "--debounce-ms N] [--concurrency-key K --concurrency-limit N] [--throttle-key K --throttle-limit N "
       "--throttle-ms N] [--fairness-key K [--fairness-weight N]]",
       "start a run of WORKFLOW; prints its id",
       "  --input JSON       the run's input (default null); checked to be JSON before anything is sent\n"
       "  --key KEY          idempotency key: the same key and input again give the run it started\n"
       "  --priority N       a 32-bit integer; higher runs first\n"
       "  --run-at TIME      start it later (RFC 3339, e.g. 2026-11-26T09:00:00Z)\n"
       "  --debounce-key K   collapse into the queued run of WORKFLOW with this key, if any (it takes this\n"
       "                     input and starts the window after this start)\n"
       "  --debounce-ms N    the debounce window, in milliseconds (or the workflow's own)\n"
       "  --concurrency-key K\n"
       "                     at most --concurrency-limit runs of WORKFLOW with this key run at once (or the\n"
       "                     workflow's own limit); the others wait queued, in order\n"
       "  --concurrency-limit N\n"
       "                     that limit, 1 to 10000 (alone: for the workflow's own key)\n"
       "  --throttle-key K   at most --throttle-limit runs of WORKFLOW with this key start per "
       "--throttle-ms\n"
       "                     (or the workflow's own throttle); the others wait queued, in order\n"
       "  --throttle-limit N, --throttle-ms N\n"
       "                     that limit (1 to 10000) and window (ms)\n"
       "  --fairness-key K   while runs of several keys are queued, claims take them in turn (keys are\n"
       "                     shared by every workflow: a tenant is one key)\n"
       "  --fairness-weight N\n"
       "                     the key's weight, 1 to 1000 (default 1): N runs claimed for one of weight 1\n"
       "  --json             print the run as JSON instead of its id\n",
       1,
       1,
       {"--input", "--key", "--priority", "--run-at", "--debounce-key", "--debounce-ms", "--concurrency-key",
        "--concurrency-limit", "--throttle-key", "--throttle-limit", "--throttle-ms", "--fairness-key",
        "--fairness-weight"},
       {},
       start},
      {"get",
       "get ID",
       "show a run: status, times, output or error, what it waits for, its steps",
       "  Shows the hooks that take a resume now with the path to POST the answer to (see `keel resume`).\n"
       "  --json  print the run as the API gives it\n",
       1,
       1,
       {},
       {},
       get},
      {"list",
       "list [--status S] [--workflow W] [--limit N] [--cursor C] [--all]",
       "list runs, newest first",
       "  --status S     queued, running, sleeping, waiting, completed, failed or cancelled; or\n"
       "                 dead_lettered (failed: lost its worker too often) or unclaimable (queued:\n"
       "                 no live worker has its version)\n"
       "  --workflow W   only runs of W\n"
       "  --limit N      runs per page, 1 to 1000 (the server's default: 50)\n"
       "  --cursor C     the page after the one that gave this next_cursor\n"
       "  --all          follow next_cursor to the last page (otherwise a hint says there is more)\n"
       "  --json         {\"runs\":[…], \"next_cursor\"} (with --all, every page's runs together)\n",
       0,
       0,
       {"--status", "--workflow", "--limit", "--cursor"},
       {"--all"},
       list},
      {"cancel", "cancel ID", "cancel a run; prints its status after the call", "", 1, 1, {}, {}, cancel},
      {"retry",
       "retry ID",
       "continue a failed run from its failed step (the steps before it are not run again)",
       "",
       1,
       1,
       {},
       {},
       retry},
      {"send",
       "send ID EVENT [JSON]",
       "send the event EVENT to a run, with an optional JSON payload",
       "  The payload is checked to be JSON before it is sent (default null).\n",
       2,
       3,
       {},
       {},
       send},
      {"publish",
       "publish EVENT [JSON] [--key KEY]",
       "publish EVENT: start each workflow that declares it, cancel the runs it matches",
       "  The payload is checked to be JSON before it is sent (default null). Prints each run started or\n"
       "  cancelled.\n"
       "  --key KEY   idempotency key: publishing again with it starts nothing more\n"
       "  --json      print the answer as the API gives it\n",
       1,
       2,
       {"--key"},
       {},
       publish},
      {"resume",
       "resume TOKEN [JSON]",
       "answer a hook (TOKEN, or its path as `keel get` shows it)",
       "  The payload is checked to be JSON before it is sent (default null). Resuming again with the\n"
       "  same payload changes nothing and says so.\n",
       1,
       2,
       {},
       {},
       resume},
      {"tail",
       "tail [ID] [--workflow W] [--no-frames] [--after N]",
       "follow events: of run ID (and the runs it started), or of every run",
       "  One line per event: time (UTC), run, type, step, detail; progress frames as type `frame`.\n"
       "  With ID, the run's history first, then live events, until the run ends; without it, live events\n"
       "  of every run (or of --workflow W) until SIGINT. A dropped connection is resumed with\n"
       "  Last-Event-ID (backoff 0.2 s doubling to 5 s): no event is missed or shown twice.\n"
       "  --after N     start after event N (a log position, the `id` of an event)\n"
       "  --no-frames   leave out progress frames\n"
       "  --json        each event's JSON, one per line\n",
       0,
       1,
       {"--workflow", "--after"},
       {"--no-frames"},
       tail},
      {"schedules",
       "schedules [--workflow W] [--limit N] [--cursor C] [--all]",
       "list cron schedules by name: workflow, expression, time zone, paused, next firing",
       "  --workflow W   only schedules of W\n"
       "  --limit N      schedules per page, 1 to 1000 (the server's default: 100)\n"
       "  --cursor C     the page after the one that gave this next_cursor\n"
       "  --all          follow next_cursor to the last page (otherwise a hint says there is more)\n"
       "  --json         {\"schedules\":[…], \"next_cursor\"} (with --all, every page's together)\n",
       0,
       0,
       {"--workflow", "--limit", "--cursor"},
       {"--all"},
       schedules},
      {"schedule",
       "schedule show|put|pause|resume|delete NAME [put's options]",
       "show, create or change, pause, resume or delete the cron schedule NAME",
       "  show NAME      its definition, state, last firing and next five firings\n"
       "  put NAME --workflow W --cron EXPR [--tz ZONE] [--input JSON] [--catch-up N] [--priority P]\n"
       "                 [--version V]\n"
       "                 create it, or replace its definition (paused stays as it was); prints whether it\n"
       "                 was created, updated or unchanged, and its next firing\n"
       "    --workflow W   the workflow each firing starts a run of\n"
       "    --cron EXPR    5 fields (minute hour day-of-month month day-of-week, e.g. '0 9 * * mon-fri')\n"
       "                   or an alias (@hourly, @daily, @weekly, @monthly, @yearly); the server checks it\n"
       "    --tz ZONE      the IANA time zone the fields are read in (default UTC), e.g. Europe/Paris\n"
       "    --input JSON   each run's input (default null); checked to be JSON before anything is sent\n"
       "    --catch-up N   after an outage, run the newest N occurrences it missed (0 to 1000; default 0)\n"
       "    --priority P   its runs' priority, a 32-bit integer (default 0)\n"
       "    --version V    the workflow version its runs run (default: the newest the firing worker has)\n"
       "  pause NAME     it fires nothing until resumed\n"
       "  resume NAME    it fires again from its next occurrence (what it missed while paused is skipped)\n"
       "  delete NAME    remove it (the runs it started stay)\n"
       "  --json         the schedule as the API gives it (delete: {\"name\", \"deleted\": true})\n",
       2,
       2,
       {"--workflow", "--cron", "--tz", "--input", "--catch-up", "--priority", "--version"},
       {},
       schedule},
      {"workflows",
       "workflows",
       "list the workflows the server runs, with their versions",
       "",
       0,
       0,
       {},
       {},
       workflows},
  };
  return all;
}

const command_spec* find_command(std::string_view name) {
  for (const auto& c : commands())
    if (c.name == name) return &c;
  return nullptr;
}

}  // namespace keel::cli
