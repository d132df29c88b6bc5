#include "render.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <sstream>
#include <vector>

#include "keel/common/time_text.hpp"
#include "sse_follow.hpp"

namespace keel::cli {
namespace {

namespace json = boost::json;

std::string text_of(const json::value* v, std::string_view otherwise = "-") {
  if (v == nullptr || v->is_null()) return std::string(otherwise);
  if (v->is_string()) return std::string(v->get_string());
  return json::serialize(*v);
}

const json::value* field(const json::value& v, std::string_view key) {
  return v.is_object() ? v.get_object().if_contains(key) : nullptr;
}

std::string text_field(const json::value& v, std::string_view key, std::string_view otherwise = "-") {
  return text_of(field(v, key), otherwise);
}

/// "2026-11-25T13:57:04.123456Z" → "2026-11-25 13:57:04.123Z": milliseconds are enough to read.
std::string readable_time(std::string t) {
  if (t.size() > 10 && t[10] == 'T') t[10] = ' ';
  if (const auto dot = t.find('.'); dot != std::string::npos) {
    auto end = dot + 1;
    while (end < t.size() && t[end] >= '0' && t[end] <= '9')
      ++end;
    t.erase(std::min(dot + 4, end), end - std::min(dot + 4, end));
  }
  return t;
}

std::string time_field(const json::value& v, std::string_view key) {
  const auto* f = field(v, key);
  return f != nullptr && f->is_string() ? readable_time(std::string(f->get_string())) : "-";
}

/// The time of day of an event: a tail is read as it happens, the date is rarely news.
std::string time_of_day(const json::value& v, std::string_view key) {
  auto t = time_field(v, key);
  if (const auto space = t.find(' '); space != std::string::npos) t.erase(0, space + 1);
  return t;
}

std::string duration_text(std::int64_t us) {
  std::ostringstream out;
  out.precision(3);
  if (us < 1000) {
    out << us << " µs";
  } else if (us < 1'000'000) {
    out << std::fixed << static_cast<double>(us) / 1e3 << " ms";
  } else {
    out << std::fixed << static_cast<double>(us) / 1e6 << " s";
  }
  return out.str();
}

std::int64_t number_field(const json::value& v, std::string_view key) {
  const auto* f = field(v, key);
  if (f == nullptr) return 0;
  if (f->is_int64()) return f->get_int64();
  if (f->is_uint64()) return static_cast<std::int64_t>(f->get_uint64());
  if (f->is_double()) return static_cast<std::int64_t>(f->get_double());
  return 0;
}

/// Rows as columns padded to their widest cell (the last column is not padded).
std::string table(const std::vector<std::vector<std::string>>& rows, std::string_view indent = "") {
  std::vector<std::size_t> width;
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], r[i].size());
    }
  std::string out;
  for (const auto& r : rows) {
    std::string line(indent);
    for (std::size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ')
      line.pop_back();
    out += line + '\n';
  }
  return out;
}

/// What a run waits for ({"kind", "hook"?, "event"?, "until"? (RFC 3339), …}), as a phrase.
std::string waiting_text(const json::value& w) {
  const auto* kind = field(w, "kind");
  if (kind == nullptr || !kind->is_string()) return compact(w);
  std::string out(kind->get_string());
  for (const auto* key : {"hook", "event", "child"})
    if (const auto* v = field(w, key); v != nullptr && v->is_string())
      out += " '" + std::string(v->get_string()) + "'";
  if (const auto* until = field(w, "until"); until != nullptr && until->is_string())
    out += " until " + readable_time(std::string(until->get_string()));
  return out;
}

/// Columns of a tail line line up for the common kinds and step names; longer ones just push the rest.
std::string padded(std::string s, std::size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

/// What an event adds to its type and step.
std::string event_detail(std::string_view kind, const json::value& data) {
  std::string seq = "#";  // appended: "#" + std::string trips GCC 12's false -Wrestrict at -O3
  seq += std::to_string(number_field(data, "seq"));
  if (kind == "step_completed")
    return seq + " attempts " + std::to_string(number_field(data, "attempts")) + ", " +
           duration_text(number_field(data, "duration_us")) + ", output " + compact(*field(data, "output"));
  if (kind == "step_started") return seq + " attempt " + std::to_string(number_field(data, "attempt"));
  if (kind == "step_retrying")
    return seq + " attempt " + std::to_string(number_field(data, "attempt")) +
           " failed: " + text_field(data, "error") + "; next in " +
           std::to_string(number_field(data, "next_delay_ms")) + " ms";
  if (kind == "step_failed")
    return seq + " attempts " + std::to_string(number_field(data, "attempts")) + ": " +
           error_text(field(data, "error") != nullptr ? *field(data, "error") : json::value());
  if (kind == "run_enqueued") {
    auto out = "version " + std::to_string(number_field(data, "version")) + ", priority " +
               std::to_string(number_field(data, "priority"));
    if (const auto* at = field(data, "run_at"); at != nullptr && at->is_string())
      out += ", runs at " + readable_time(std::string(at->get_string()));
    return out;
  }
  if (kind == "run_started") {
    auto out = "execution " + std::to_string(number_field(data, "execution"));
    if (const auto* r = field(data, "recovery"); r != nullptr && r->is_bool() && r->get_bool())
      out += " (recovery)";
    return out;
  }
  if (kind == "run_sleeping") return "until " + time_field(data, "until");
  if (kind == "run_waiting")
    return "for " + compact(field(data, "what") ? *field(data, "what") : json::value());
  if (kind == "run_resumed") return "by " + text_field(data, "by");
  if (kind == "run_completed")
    return "output " + compact(field(data, "output") ? *field(data, "output") : json::value());
  if (kind == "run_failed" || kind == "run_cancelled" || kind == "run_dead_lettered")
    return error_text(field(data, "error") ? *field(data, "error") : json::value());
  return data.is_object() && data.get_object().empty() ? std::string() : compact(data);
}

}  // namespace

std::string compact(const json::value& v, std::size_t max) {
  auto s = json::serialize(v);
  if (s.size() > max) s = s.substr(0, max) + "…";
  return s;
}

std::string error_text(const json::value& error) {
  if (error.is_null()) return "-";
  const auto* code = field(error, "code");
  const auto* message = field(error, "message");
  if (code != nullptr && code->is_string()) {
    std::string out(code->get_string());
    if (message != nullptr && message->is_string() && !message->get_string().empty())
      out += ": " + std::string(message->get_string());
    return out;
  }
  return compact(error);
}

std::string render_run(const json::value& run) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"id", text_field(run, "id")});
  rows.push_back({"workflow", text_field(run, "workflow") + " (version " + text_field(run, "version") + ")"});
  rows.push_back({"status", text_field(run, "status")});
  if (const auto* key = field(run, "idempotency_key"); key != nullptr && !key->is_null())
    rows.push_back({"key", text_of(key)});
  rows.push_back({"created", time_field(run, "created_at")});
  rows.push_back({"started", time_field(run, "started_at")});
  rows.push_back({"finished", time_field(run, "finished_at")});
  rows.push_back({"input", compact(field(run, "input") ? *field(run, "input") : json::value(), 400)});
  if (const auto* out = field(run, "output"); out != nullptr && !out->is_null())
    rows.push_back({"output", compact(*out, 400)});
  if (const auto* err = field(run, "error"); err != nullptr && !err->is_null())
    rows.push_back({"error", error_text(*err)});
  if (const auto* w = field(run, "waiting_for"); w != nullptr && !w->is_null())
    rows.push_back({"waiting for", waiting_text(*w)});
  if (const auto* hooks = field(run, "hooks"); hooks != nullptr && hooks->is_array()) {
    for (const auto& h : hooks->get_array()) {
      auto line = text_field(h, "name") + ": POST " + text_field(h, "path");
      if (const auto* exp = field(h, "expires_at"); exp != nullptr && exp->is_string())
        line += " (expires " + time_field(h, "expires_at") + ")";
      rows.push_back({"hook", line});
    }
  }
  if (const auto* history = field(run, "history"); history != nullptr && history->is_array()) {
    for (const auto& h : history->get_array())
      rows.push_back({"history", text_field(h, "what") + " " +
                                     compact(field(h, "detail") ? *field(h, "detail") : json::value())});
  }
  if (number_field(run, "recoveries") > 0) rows.push_back({"recoveries", text_field(run, "recoveries")});
  if (const auto* why = field(run, "unclaimable"); why != nullptr && why->is_string())
    rows.push_back({"unclaimable", std::string(why->get_string())});
  std::string out = table(rows);
  const auto* steps = field(run, "steps");
  if (steps == nullptr || !steps->is_array() || steps->get_array().empty()) return out + "steps       none\n";
  std::vector<std::vector<std::string>> step_rows{
      {"SEQ", "NAME", "STATUS", "ATTEMPTS", "FINISHED", "RESULT"}};
  for (const auto& s : steps->get_array()) {
    auto name = text_field(s, "name");
    if (const auto* b = field(s, "branch"); b != nullptr && b->is_string())
      name += " [" + std::string(b->get_string()) + "]";
    const bool failed = text_field(s, "status") == "failed";
    const auto* result = field(s, failed ? "error" : "output");
    step_rows.push_back({text_field(s, "seq"), name, text_field(s, "status"), text_field(s, "attempts"),
                         time_field(s, "finished_at"),
                         failed ? error_text(result ? *result : json::value())
                                : compact(result ? *result : json::value(), 80)});
  }
  return out + "steps\n" + table(step_rows, "  ");
}

namespace {

/// Why a listed run stopped or waits: its error (a dead-lettered run's as how often it lost its worker), or
/// why nothing claims it.
std::string reason_text(const json::value& run) {
  if (const auto* why = field(run, "unclaimable"); why != nullptr && why->is_string())
    return "unclaimable: " + std::string(why->get_string());
  const auto* err = field(run, "error");
  if (err == nullptr || err->is_null()) return "";
  if (text_field(*err, "code") == "dead_lettered" && number_field(*err, "recoveries") > 0)
    return "dead_lettered: lost its worker " + text_field(*err, "recoveries") + " times";
  return error_text(*err);
}

}  // namespace

std::string render_run_table(const json::array& runs) {
  std::vector<std::vector<std::string>> rows{{"ID", "WORKFLOW", "STATUS", "CREATED", "FINISHED", "REASON"}};
  for (const auto& r : runs) {
    rows.push_back({text_field(r, "id"), text_field(r, "workflow"), text_field(r, "status"),
                    time_field(r, "created_at"), time_field(r, "finished_at"), reason_text(r)});
  }
  return table(rows);
}

std::string render_workflows(const json::value& answer) {
  std::vector<std::vector<std::string>> rows{{"WORKFLOW", "VERSIONS"}};
  if (const auto* list = field(answer, "workflows"); list != nullptr && list->is_array()) {
    for (const auto& w : list->get_array()) {
      std::string versions;
      if (const auto* v = field(w, "versions"); v != nullptr && v->is_array())
        for (const auto& n : v->get_array())
          versions += (versions.empty() ? "" : ", ") + json::serialize(n);
      rows.push_back({text_field(w, "name"), versions});
    }
  }
  return table(rows);
}

namespace {

bool is_paused(const json::value& schedule) {
  const auto* p = field(schedule, "paused");
  return p != nullptr && p->is_bool() && p->get_bool();
}

/// A paused schedule keeps its next occurrence, but will not fire it: it shows "-".
std::string next_firing(const json::value& schedule) {
  return is_paused(schedule) ? "-" : time_field(schedule, "next_fire_at");
}

}  // namespace

std::string render_schedule_table(const json::array& schedules) {
  std::vector<std::vector<std::string>> rows{
      {"NAME", "WORKFLOW", "CRON", "TIME ZONE", "PAUSED", "NEXT FIRING"}};
  for (const auto& s : schedules)
    rows.push_back({text_field(s, "name"), text_field(s, "workflow"), text_field(s, "cron"),
                    text_field(s, "time_zone"), is_paused(s) ? "yes" : "no", next_firing(s)});
  return table(rows);
}

std::string schedule_next_text(const json::value& schedule) {
  if (is_paused(schedule)) return "paused";
  const auto* next = field(schedule, "next_fire_at");
  if (next == nullptr || !next->is_string()) return "it never fires again";
  return "next firing " + readable_time(std::string(next->get_string()));
}

std::string render_schedule(const json::value& s) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"name", text_field(s, "name")});
  auto workflow = text_field(s, "workflow");
  if (const auto* v = field(s, "version"); v != nullptr && !v->is_null())
    workflow += " (version " + text_of(v) + ")";
  rows.push_back({"workflow", workflow});
  rows.push_back({"cron", text_field(s, "cron") + " (" + text_field(s, "time_zone") + ")"});
  rows.push_back({"paused", is_paused(s) ? "yes" : "no"});
  rows.push_back({"input", compact(field(s, "input") ? *field(s, "input") : json::value(), 400)});
  rows.push_back({"priority", text_field(s, "priority")});
  rows.push_back({"catch up", text_field(s, "catch_up")});
  auto last = time_field(s, "last_fired_at");
  if (const auto* run = field(s, "last_run"); run != nullptr && run->is_string())
    last += " (run " + std::string(run->get_string()) + ")";
  rows.push_back({"last fired", last});
  rows.push_back({"created", time_field(s, "created_at")});
  rows.push_back({"updated", time_field(s, "updated_at")});
  std::string out = table(rows);
  const auto* upcoming = field(s, "upcoming");
  if (upcoming == nullptr || !upcoming->is_array() || upcoming->get_array().empty())
    return out + "upcoming    " + (is_paused(s) ? "none while paused" : "none") + '\n';
  out += "upcoming\n";
  for (const auto& t : upcoming->get_array())
    out += "  " + (t.is_string() ? readable_time(std::string(t.get_string())) : compact(t)) + '\n';
  return out;
}

std::string render_event(const sse_message& m) {
  boost::system::error_code ec;
  const auto v = json::parse(m.data, ec);
  if (ec) return (m.event.empty() ? "message" : m.event) + "  " + m.data;
  if (m.event == "gap")
    return "gap: the log no longer holds events up to " + text_field(v, "until") + " (removed by retention)";
  if (m.event == "frame") {
    const auto* data = field(v, "data");
    auto detail = compact(data != nullptr && field(*data, "frame") ? *field(*data, "frame") : v);
    if (data != nullptr && number_field(*data, "missed") > 0)
      detail += " (" + std::to_string(number_field(*data, "missed")) + " frames missed before it)";
    return time_of_day(v, "at") + "  " + text_field(v, "run_id") + "  " + padded("frame", 14) + "  " +
           padded("-", 12) + "  " + detail;
  }
  if (!m.event.empty()) return m.event + "  " + compact(v);
  const auto kind = text_field(v, "kind");
  const json::value data = field(v, "data") != nullptr ? *field(v, "data") : json::value();
  const bool step = kind.rfind("step_", 0) == 0;
  auto line = time_of_day(v, "at") + "  " + text_field(v, "run_id") + "  " + padded(kind, 14) + "  " +
              padded(step ? text_field(data, "name") : "-", 12);
  const auto detail = event_detail(kind, data);
  if (!detail.empty()) line += "  " + detail;
  return line;
}

}  // namespace keel::cli
