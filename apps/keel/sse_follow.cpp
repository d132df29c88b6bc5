#include "sse_follow.hpp"

#include <algorithm>
#include <iostream>

#include "errors.hpp"
#include "interrupt.hpp"

namespace keel::cli {

void sse_parser::feed(std::string_view bytes, const std::function<void(sse_message&&)>& on) {
  for (const char c : bytes) {
    // A line ends at CR, LF or CR LF: the LF of a CR LF split across reads must not end another line.
    if (after_cr_ && c == '\n') {
      after_cr_ = false;
      continue;
    }
    after_cr_ = c == '\r';
    if (c == '\r' || c == '\n') {
      line(partial_, on);
      partial_.clear();
    } else {
      partial_ += c;
    }
  }
}

void sse_parser::reset() {
  partial_.clear();
  after_cr_ = false;
  current_ = {};
  has_data_ = false;
}

void sse_parser::line(std::string_view text, const std::function<void(sse_message&&)>& on) {
  if (text.empty()) {
    // A blank line dispatches; one without data (only an id, say) is no message.
    if (has_data_) on(std::move(current_));
    current_ = {};
    has_data_ = false;
    return;
  }
  if (text.front() == ':') return;  // a comment: the keepalive
  const auto colon = text.find(':');
  const auto field = text.substr(0, colon);
  auto value = colon == std::string_view::npos ? std::string_view() : text.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field == "data") {
    if (has_data_) current_.data += '\n';
    current_.data += value;
    has_data_ = true;
  } else if (field == "event") {
    current_.event = std::string(value);
  } else if (field == "id" && value.find('\0') == std::string_view::npos) {
    current_.id = std::string(value);
  }
}

void follow_blocking(http_client& client, follow_options options,
                     const std::function<bool(const sse_message&)>& on_message) {
  auto backoff = options.initial_backoff;
  bool done = false;
  while (!done && !interrupted()) {
    std::string why;
    try {
      std::vector<http_header> headers;
      if (options.last_event_id) headers.push_back({"Last-Event-ID", *options.last_event_id});
      http_reply refused;
      auto source = client.open_stream_blocking(options.target, headers, options.idle, refused);
      if (!source) {
        // 5xx (shutting down, the database away) passes; anything else will not change by retrying.
        if (refused.status < 500) {
          throw_unless_success(refused);
          throw api_error(refused.status, "http_" + std::to_string(refused.status),
                          "the server answered the event stream request without a stream");
        }
        try {
          throw_unless_success(refused);
        } catch (const api_error& e) {
          why = "the server answered " + std::to_string(e.status()) + " " + e.code();
        }
      } else {
        backoff = options.initial_backoff;  // connected: the next drop starts over with a short wait
        sse_parser parser;
        std::string bytes;
        while (!done && source->read_some_blocking(bytes, why)) {
          parser.feed(bytes, [&](sse_message&& m) {
            if (done) return;  // what came after the end in the same read
            // Remembered before it is shown: a reconnect after this point must not send it again.
            if (m.id) options.last_event_id = m.id;
            done = on_message(m);
          });
          bytes.clear();
        }
      }
    } catch (const unreachable& e) {
      why = e.what();
    }
    if (done || interrupted()) break;
    std::cerr << "keel: event stream interrupted (" << why << "); reconnecting in " << backoff.count()
              << " ms" << (options.last_event_id ? " after event " + *options.last_event_id : std::string())
              << std::endl;
    sleep_unless_interrupted(static_cast<int>(backoff.count()));
    backoff = std::min(backoff * 2, options.max_backoff);
  }
}

}  // namespace keel::cli
