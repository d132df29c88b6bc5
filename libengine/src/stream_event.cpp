// Stream events: log events decoded by kind, and the consumer's handle on a stream.
#include <boost/json/value.hpp>

#include "event_hub.hpp"
#include "keel/common/time_text.hpp"
#include "keel/engine/events.hpp"

namespace keel {

namespace json = boost::json;

namespace detail {

boost::asio::awaitable<std::optional<stream_event>> next_of(std::shared_ptr<subscription> sub) {
  // An event already waiting is returned without a hop through the executor.
  if (auto e = sub->try_next()) co_return e;
  co_return co_await sub->next();
}

namespace {

std::string text(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v != nullptr && v->is_string() ? std::string(v->as_string()) : std::string();
}

std::int64_t number(const json::object& o, std::string_view key, std::int64_t otherwise = 0) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return otherwise;
  if (v->is_int64()) return v->as_int64();
  if (v->is_uint64()) return static_cast<std::int64_t>(v->as_uint64());
  if (v->is_double()) return static_cast<std::int64_t>(v->as_double());
  return otherwise;
}

std::optional<std::chrono::system_clock::time_point> micros_time(const json::object& o,
                                                                 std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || v->is_null()) return std::nullopt;
  return std::chrono::system_clock::time_point(std::chrono::microseconds(number(o, key)));
}

json::value take(json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  return v != nullptr ? std::move(*v) : json::value(nullptr);
}

std::optional<std::string> branch_of(const json::object& o) {
  auto b = text(o, "branch");
  if (b.empty()) return std::nullopt;
  return b;
}

stream_event::body_type decode(const std::string& kind, json::value data) {
  json::object o = data.is_object() ? std::move(data.as_object()) : json::object();
  if (kind == "run_enqueued") {
    return events::run_enqueued{static_cast<int>(number(o, "version", 1)),
                                static_cast<int>(number(o, "priority")), micros_time(o, "run_at")};
  }
  if (kind == "run_started") {
    const auto* rec = o.if_contains("recovery");
    return events::run_started{static_cast<int>(number(o, "execution")), text(o, "worker"),
                               number(o, "epoch"), rec != nullptr && rec->is_bool() && rec->as_bool()};
  }
  if (kind == "run_resumed") {
    auto by = text(o, "by");
    return events::run_resumed{std::move(by), json::value(std::move(o))};
  }
  if (kind == "run_sleeping") {
    auto until = micros_time(o, "until");
    return events::run_sleeping{until, json::value(std::move(o))};
  }
  if (kind == "run_waiting") return events::run_waiting{json::value(std::move(o))};
  if (kind == "run_completed") return events::run_completed{take(o, "output")};
  if (kind == "run_failed") return events::run_failed{take(o, "error")};
  if (kind == "run_cancelled") return events::run_cancelled{take(o, "error")};
  if (kind == "run_dead_lettered") return events::run_dead_lettered{take(o, "error")};
  if (kind == "step_started") {
    auto name = text(o, "name");
    auto branch = branch_of(o);
    return events::step_started{std::move(name), static_cast<int>(number(o, "seq")),
                                static_cast<int>(number(o, "attempt", 1)), std::move(branch),
                                micros_time(o, "started_at")};
  }
  if (kind == "step_retrying") {
    auto name = text(o, "name");
    auto error = text(o, "error");
    auto branch = branch_of(o);
    return events::step_retrying{std::move(name),
                                 static_cast<int>(number(o, "seq")),
                                 static_cast<int>(number(o, "attempt", 1)),
                                 std::move(error),
                                 std::chrono::milliseconds(number(o, "next_delay_ms")),
                                 std::move(branch)};
  }
  if (kind == "step_completed") {
    auto name = text(o, "name");
    auto branch = branch_of(o);
    return events::step_completed{std::move(name),
                                  static_cast<int>(number(o, "seq")),
                                  static_cast<int>(number(o, "attempts", 1)),
                                  std::chrono::microseconds(number(o, "duration_us")),
                                  take(o, "output"),
                                  std::move(branch)};
  }
  if (kind == "step_failed") {
    auto name = text(o, "name");
    auto branch = branch_of(o);
    return events::step_failed{std::move(name), static_cast<int>(number(o, "seq")),
                               static_cast<int>(number(o, "attempts", 1)), take(o, "error"),
                               std::move(branch)};
  }
  return events::run_changed{kind, json::value(std::move(o))};
}

}  // namespace

}  // namespace detail

stream_event to_stream_event(storage::log_event e) {
  stream_event out;
  out.id = e.pos;
  out.run = std::move(e.run);
  out.workflow = std::move(e.workflow);
  out.parent = std::move(e.parent);
  out.at = e.at;
  out.body = detail::decode(e.kind, std::move(e.data));
  return out;
}

namespace {

json::value time_or_null(const std::optional<std::chrono::system_clock::time_point>& t) {
  return t ? json::value(rfc3339(*t)) : json::value(nullptr);
}

json::value text_or_null(const std::optional<std::string>& s) {
  return s ? json::value(*s) : json::value(nullptr);
}

struct body_json {
  json::object operator()(const events::run_enqueued& b) const {
    return {{"version", b.version}, {"priority", b.priority}, {"run_at", time_or_null(b.run_at)}};
  }
  json::object operator()(const events::run_started& b) const {
    return {{"execution", b.execution}, {"worker", b.worker}, {"epoch", b.epoch}, {"recovery", b.recovery}};
  }
  json::object operator()(const events::run_resumed& b) const { return {{"by", b.by}, {"detail", b.detail}}; }
  json::object operator()(const events::run_sleeping& b) const {
    return {{"until", time_or_null(b.until)}, {"detail", b.detail}};
  }
  json::object operator()(const events::run_waiting& b) const { return {{"what", b.what}}; }
  json::object operator()(const events::run_completed& b) const { return {{"output", b.output}}; }
  json::object operator()(const events::run_failed& b) const { return {{"error", b.error}}; }
  json::object operator()(const events::run_cancelled& b) const { return {{"error", b.error}}; }
  json::object operator()(const events::run_dead_lettered& b) const { return {{"error", b.error}}; }
  json::object operator()(const events::step_started& b) const {
    return {{"name", b.name},
            {"seq", b.seq},
            {"attempt", b.attempt},
            {"branch", text_or_null(b.branch)},
            {"started_at", time_or_null(b.started_at)}};
  }
  json::object operator()(const events::step_retrying& b) const {
    return {{"name", b.name},
            {"seq", b.seq},
            {"attempt", b.attempt},
            {"error", b.error},
            {"next_delay_ms", b.next_delay.count()},
            {"branch", text_or_null(b.branch)}};
  }
  json::object operator()(const events::step_completed& b) const {
    return {{"name", b.name},         {"seq", b.seq},
            {"attempts", b.attempts}, {"duration_us", b.duration.count()},
            {"output", b.output},     {"branch", text_or_null(b.branch)}};
  }
  json::object operator()(const events::step_failed& b) const {
    return {{"name", b.name},
            {"seq", b.seq},
            {"attempts", b.attempts},
            {"error", b.error},
            {"branch", text_or_null(b.branch)}};
  }
  json::object operator()(const events::run_changed& b) const {
    if (b.data.is_object()) return b.data.as_object();
    return {{"value", b.data}};
  }
  json::object operator()(const events::progress& b) const {
    return {{"frame", b.frame},
            {"execution", b.execution},
            {"epoch", b.epoch},
            {"seq", b.seq},
            {"missed", b.missed}};
  }
  json::object operator()(const events::log_gap& b) const { return {{"until", b.until}}; }
};

}  // namespace

json::value to_json(const stream_event& e) {
  json::object o;
  o["id"] = e.id;
  o["run_id"] = e.run;
  o["workflow"] = e.workflow;
  if (e.parent) o["parent_id"] = *e.parent;
  o["at"] = rfc3339(e.at);
  o["kind"] = e.kind();
  o["data"] = std::visit(body_json{}, e.body);
  return o;
}

std::string_view stream_event::kind() const noexcept {
  struct namer {
    std::string_view operator()(const events::run_enqueued&) const { return "run_enqueued"; }
    std::string_view operator()(const events::run_started&) const { return "run_started"; }
    std::string_view operator()(const events::run_resumed&) const { return "run_resumed"; }
    std::string_view operator()(const events::run_sleeping&) const { return "run_sleeping"; }
    std::string_view operator()(const events::run_waiting&) const { return "run_waiting"; }
    std::string_view operator()(const events::run_completed&) const { return "run_completed"; }
    std::string_view operator()(const events::run_failed&) const { return "run_failed"; }
    std::string_view operator()(const events::run_cancelled&) const { return "run_cancelled"; }
    std::string_view operator()(const events::run_dead_lettered&) const { return "run_dead_lettered"; }
    std::string_view operator()(const events::step_started&) const { return "step_started"; }
    std::string_view operator()(const events::step_retrying&) const { return "step_retrying"; }
    std::string_view operator()(const events::step_completed&) const { return "step_completed"; }
    std::string_view operator()(const events::step_failed&) const { return "step_failed"; }
    std::string_view operator()(const events::run_changed& c) const { return c.kind; }
    std::string_view operator()(const events::progress&) const { return "progress"; }
    std::string_view operator()(const events::log_gap&) const { return "gap"; }
  };
  return std::visit(namer{}, body);
}

event_stream::event_stream(std::shared_ptr<detail::subscription> sub) : sub_(std::move(sub)) {}

event_stream::~event_stream() {
  if (sub_) sub_->close();
}

event_stream::event_stream(event_stream&&) noexcept = default;

event_stream& event_stream::operator=(event_stream&& other) noexcept {
  if (this != &other) {
    if (sub_) sub_->close();
    sub_ = std::move(other.sub_);
  }
  return *this;
}

namespace {
boost::asio::awaitable<std::optional<stream_event>> ended() {
  co_return std::nullopt;
}
}  // namespace

boost::asio::awaitable<std::optional<stream_event>> event_stream::next() {
  if (!sub_) return ended();
  return detail::next_of(sub_);
}

std::optional<stream_event> event_stream::try_next() {
  if (!sub_) return std::nullopt;
  return sub_->try_next();
}

std::size_t event_stream::buffered() const {
  return sub_ ? sub_->buffered() : 0;
}

}  // namespace keel
