#include "metrics.hpp"

#include <boost/beast/http/field.hpp>
#include <charconv>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "keel/engine.hpp"
#include "within.hpp"

namespace keel::http::detail {
namespace {

namespace beast_http = boost::beast::http;

/// A scrape waits this long for the run counts: Prometheus gives up after 10 s by default.
constexpr std::chrono::milliseconds k_counts_within{2000};

/// The statuses keel_runs reports: the ones a run is in before it finishes.
constexpr storage::run_status k_unfinished[] = {storage::run_status::queued, storage::run_status::running,
                                                storage::run_status::sleeping, storage::run_status::waiting};

/// `fixed`: no exponent (bucket bounds read 0.0001, not 1e-04).
std::string number(double v, bool fixed = false) {
  char buf[64];
  const auto [end, ec] = fixed ? std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed)
                               : std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : std::string("NaN");
}

/// A label value, escaped as the text format wants (backslash, double quote, line feed).
std::string label(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (const char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

class exposition {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  /// `labels`: already formatted (`a="x",b="y"`), or empty.
  void sample(std::string_view name, std::string_view labels, std::string_view value) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      out_ += labels;
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }
  void histogram(std::string_view name, const std::string& labels, const histogram_snapshot& h) {
    const std::string sep = labels.empty() ? "" : ",";
    for (std::size_t i = 0; i < h.bounds.size(); ++i)
      sample(std::string(name) + "_bucket", labels + sep + "le=\"" + number(h.bounds[i], true) + "\"",
             std::to_string(h.counts[i]));
    sample(std::string(name) + "_bucket", labels + sep + "le=\"+Inf\"", std::to_string(h.count));
    sample(std::string(name) + "_sum", labels, number(h.sum));
    sample(std::string(name) + "_count", labels, std::to_string(h.count));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace

bool is_metrics(const request& req) {
  const auto t = req.target();
  return t == "/metrics" || t.starts_with("/metrics?");
}

boost::asio::awaitable<response> metrics(engine& e, const request& req, server_stats http) {
  if (req.method() != beast_http::verb::get && req.method() != beast_http::verb::head)
    co_return method_not_allowed(beast_http::verb::get);
  const auto measured = e.metrics();
  auto count = [e = &e] { return e->store().count_unfinished_runs(); };
  auto counts = co_await answer_within<result<std::vector<storage::run_count>>>(k_counts_within, count);
  const bool database_up = counts && *counts;

  exposition x;
  x.family("keel_database_up", "gauge", "Whether the database answered this scrape's run count within 2 s.");
  x.sample("keel_database_up", "", database_up ? "1" : "0");
  if (database_up) {
    // Every registered workflow in every unfinished status, zeros included (a series that vanishes at zero
    // breaks alerts), and whatever other workflows the database holds.
    std::map<std::pair<std::string, storage::run_status>, std::int64_t> runs;
    std::map<std::string, std::int64_t> due;
    for (const auto& w : measured.workflows) {
      for (const auto s : k_unfinished)
        runs[{w.workflow, s}] = 0;
      due[w.workflow] = 0;
    }
    for (const auto& c : **counts) {
      runs[{c.workflow, c.status}] = c.runs;
      if (c.status == storage::run_status::queued) due[c.workflow] += c.due;
    }
    x.family("keel_runs", "gauge", "Runs not finished, by workflow and status, in the whole database.");
    for (const auto& [key, n] : runs)
      x.sample("keel_runs",
               "workflow=\"" + label(key.first) + "\",status=\"" + std::string(to_string(key.second)) + "\"",
               std::to_string(n));
    x.family("keel_queue_depth", "gauge", "Queued runs due now, waiting for a worker, by workflow.");
    for (const auto& [workflow, n] : due)
      x.sample("keel_queue_depth", "workflow=\"" + label(workflow) + "\"", std::to_string(n));
  }
  x.family("keel_runs_finished_total", "counter",
           "Runs that finished on this worker, by workflow and outcome.");
  for (const auto& w : measured.workflows) {
    const auto l = "workflow=\"" + label(w.workflow) + "\",status=\"";
    x.sample("keel_runs_finished_total", l + "completed\"", std::to_string(w.completed));
    x.sample("keel_runs_finished_total", l + "failed\"", std::to_string(w.failed));
    x.sample("keel_runs_finished_total", l + "cancelled\"", std::to_string(w.cancelled));
  }
  x.family("keel_step_duration_seconds", "histogram", "Step attempts run on this worker, by workflow.");
  for (const auto& w : measured.workflows)
    x.histogram("keel_step_duration_seconds", "workflow=\"" + label(w.workflow) + "\"", w.step_seconds);
  x.family("keel_claim_duration_seconds", "histogram", "Claims, from submission to commit.");
  x.histogram("keel_claim_duration_seconds", "", measured.store.claim_seconds);
  x.family("keel_commit_duration_seconds", "histogram",
           "Group-committed write transactions, from sending to the COMMIT's answer.");
  x.histogram("keel_commit_duration_seconds", "", measured.store.commit_seconds);
  x.family("keel_commit_batch_writes", "histogram", "Writes per group-committed transaction.");
  x.histogram("keel_commit_batch_writes", "", measured.store.batch_writes);
  x.family("keel_retention_runs_removed_total", "counter",
           "Finished runs deleted by retention on this worker (engine_options::retention).");
  x.sample("keel_retention_runs_removed_total", "", std::to_string(measured.retention_runs_removed));
  x.family(
      "keel_retention_rows_removed_total", "counter",
      "Rows deleted by retention on this worker: the runs and their steps, events, hooks, history and run "
      "log events.");
  x.sample("keel_retention_rows_removed_total", "", std::to_string(measured.retention_rows_removed));
  x.family("keel_sse_clients", "gauge", "Event stream (SSE) clients connected now.");
  x.sample("keel_sse_clients", "", std::to_string(http.event_streams));
  x.family("keel_sse_dropped_frames_total", "counter",
           "Progress frames event stream clients were too slow for (lifecycle events are never dropped).");
  x.sample("keel_sse_dropped_frames_total", "", std::to_string(http.dropped_frames));

  response res{beast_http::status::ok, req.version()};
  res.set(beast_http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
  res.set(beast_http::field::cache_control, "no-store");
  res.body() = x.take();
  co_return res;
}

}  // namespace keel::http::detail
