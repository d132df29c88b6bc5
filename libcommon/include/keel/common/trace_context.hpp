// W3C Trace Context (https://www.w3.org/TR/trace-context/): the `traceparent` a run was started with, and the
// one it passes on, so that a run can be followed across the services it calls.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace keel {

struct trace_context {
  std::string trace_id;    ///< 32 lowercase hex digits, not all zero
  std::string parent_id;   ///< 16 lowercase hex digits, not all zero: the caller's span
  std::uint8_t flags = 0;  ///< bit 0: sampled

  /// "00-<trace_id>-<parent_id>-<flags>".
  [[nodiscard]] std::string traceparent() const;
  /// The same trace, with `span_id` (16 hex digits) as the parent: what a call made from that span sends.
  [[nodiscard]] std::string traceparent_from(std::string_view span_id) const;
};

/// A `traceparent` header value by the W3C rules: version 00 exactly as specified; a later version (not ff)
/// read by its first four fields; nullopt for anything else (the header is then not a trace to continue).
[[nodiscard]] std::optional<trace_context> parse_traceparent(std::string_view text);

/// A span id (16 lowercase hex digits, never all zero) derived from `seed`: the same seed (say, a run, its
/// execution and a step's position) gives the same span on every replay.
[[nodiscard]] std::string span_id_for(std::string_view seed);

}  // namespace keel
