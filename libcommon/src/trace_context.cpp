#include "keel/common/trace_context.hpp"

namespace keel {
namespace {

bool lower_hex(std::string_view s) {
  for (const char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool all_zero(std::string_view s) {
  return s.find_first_not_of('0') == std::string_view::npos;
}

int hex_value(char c) {
  return c <= '9' ? c - '0' : c - 'a' + 10;
}

std::string hex_byte(std::uint8_t b) {
  constexpr std::string_view k_digits = "0123456789abcdef";
  return {k_digits[b >> 4], k_digits[b & 15]};
}

}  // namespace

std::string trace_context::traceparent() const {
  return traceparent_from(parent_id);
}

std::string trace_context::traceparent_from(std::string_view span_id) const {
  return std::string("00-").append(trace_id).append("-").append(span_id).append("-").append(hex_byte(flags));
}

std::optional<trace_context> parse_traceparent(std::string_view text) {
  // version "-" trace-id "-" parent-id "-" flags: 2 + 1 + 32 + 1 + 16 + 1 + 2 = 55 characters.
  constexpr std::size_t k_length = 55;
  if (text.size() < k_length || text[2] != '-' || text[35] != '-' || text[52] != '-') return std::nullopt;
  const auto version = text.substr(0, 2), trace = text.substr(3, 32), parent = text.substr(36, 16),
             flags = text.substr(53, 2);
  if (!lower_hex(version) || version == "ff" || !lower_hex(trace) || !lower_hex(parent) || !lower_hex(flags))
    return std::nullopt;
  if (all_zero(trace) || all_zero(parent)) return std::nullopt;
  // Version 00 has exactly these fields; a later one may add more, after a '-'.
  if (version == "00" ? text.size() != k_length : (text.size() > k_length && text[k_length] != '-'))
    return std::nullopt;
  trace_context out;
  out.trace_id = std::string(trace);
  out.parent_id = std::string(parent);
  out.flags = static_cast<std::uint8_t>(hex_value(flags[0]) * 16 + hex_value(flags[1]));
  return out;
}

std::string span_id_for(std::string_view seed) {
  // FNV-1a, 64 bits: stable across builds and platforms, which std::hash is not.
  std::uint64_t h = 14695981039346656037ull;
  for (const char c : seed) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  if (h == 0) h = 1;
  std::string out;
  for (int shift = 56; shift >= 0; shift -= 8)
    out += hex_byte(static_cast<std::uint8_t>(h >> shift));
  return out;
}

}  // namespace keel
