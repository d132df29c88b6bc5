#include "keel/engine/json_types.hpp"

#include <array>
#include <charconv>
#include <cstdint>

#include "keel/common/time_text.hpp"

namespace keel {
namespace {

constexpr std::string_view k_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The 6-bit value of a base64 character; -1 for any other.
constexpr std::array<int, 256> k_sextets = [] {
  std::array<int, 256> t{};
  t.fill(-1);
  for (std::size_t i = 0; i < k_alphabet.size(); ++i)
    t[static_cast<unsigned char>(k_alphabet[i])] = static_cast<int>(i);
  return t;
}();

}  // namespace

std::string to_base64(const std::vector<std::byte>& bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const auto n = std::to_integer<std::uint32_t>(bytes[i]) << 16 |
                   std::to_integer<std::uint32_t>(bytes[i + 1]) << 8 |
                   std::to_integer<std::uint32_t>(bytes[i + 2]);
    for (int shift = 18; shift >= 0; shift -= 6)
      out.push_back(k_alphabet[n >> shift & 63]);
  }
  if (const auto rest = bytes.size() - i; rest > 0) {
    std::uint32_t n = std::to_integer<std::uint32_t>(bytes[i]) << 16;
    if (rest == 2) n |= std::to_integer<std::uint32_t>(bytes[i + 1]) << 8;
    out.push_back(k_alphabet[n >> 18 & 63]);
    out.push_back(k_alphabet[n >> 12 & 63]);
    out.push_back(rest == 2 ? k_alphabet[n >> 6 & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::optional<std::vector<std::byte>> from_base64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::vector<std::byte> out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    const int pad = last ? (text[i + 3] == '=') + (text[i + 2] == '=') : 0;
    if (pad == 1 && text[i + 2] == '=') return std::nullopt;  // "x=y=": padding only at the end
    std::uint32_t n = 0;
    for (int k = 0; k < 4 - pad; ++k) {
      const int v = k_sextets[static_cast<unsigned char>(text[i + k])];
      if (v < 0) return std::nullopt;
      n |= static_cast<std::uint32_t>(v) << (18 - 6 * k);
    }
    // Bits a padded group does not carry must be zero, so that each byte string has one encoding.
    if ((pad == 1 && (n & 0xff) != 0) || (pad == 2 && (n & 0xffff) != 0)) return std::nullopt;
    out.push_back(static_cast<std::byte>(n >> 16));
    if (pad < 2) out.push_back(static_cast<std::byte>(n >> 8 & 0xff));
    if (pad < 1) out.push_back(static_cast<std::byte>(n & 0xff));
  }
  return out;
}

std::string iso8601_duration(std::chrono::microseconds d) {
  // The most negative count has no positive counterpart, and would not read back: one microsecond less.
  if (d == std::chrono::microseconds::min()) d += std::chrono::microseconds(1);
  std::string out = d.count() < 0 ? "-PT" : "PT";
  // The magnitude as unsigned: the most negative count has no positive counterpart.
  const auto us =
      d.count() < 0 ? 0 - static_cast<std::uint64_t>(d.count()) : static_cast<std::uint64_t>(d.count());
  out += std::to_string(us / 1'000'000);
  if (auto fraction = us % 1'000'000; fraction != 0) {
    std::string digits = std::to_string(fraction);
    digits.insert(0, 6 - digits.size(), '0');
    digits.erase(digits.find_last_not_of('0') + 1);
    out.append(".").append(digits);
  }
  return out.append("S");
}

std::optional<std::chrono::microseconds> parse_iso8601_duration(std::string_view text) {
  bool negative = false;
  if (!text.empty() && (text.front() == '-' || text.front() == '+')) {
    negative = text.front() == '-';
    text.remove_prefix(1);
  }
  if (text.size() < 3 || text.front() != 'P') return std::nullopt;
  text.remove_prefix(1);
  bool in_time = false, any = false;
  char last_unit = 0;
  std::int64_t total = 0;  // microseconds
  // Units in their order, each at most once: D, then after T: H, M, S.
  constexpr std::string_view k_order = "DHMS";
  while (!text.empty()) {
    if (text.front() == 'T') {
      if (in_time) return std::nullopt;
      in_time = true;
      text.remove_prefix(1);
      if (text.empty()) return std::nullopt;
      continue;
    }
    std::uint64_t whole = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), whole);
    if (ec != std::errc() || end == text.data()) return std::nullopt;
    text.remove_prefix(static_cast<std::size_t>(end - text.data()));
    std::int64_t fraction_us = 0;
    if (!text.empty() && (text.front() == '.' || text.front() == ',')) {
      text.remove_prefix(1);
      std::size_t digits = 0;
      while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9')
        ++digits;
      if (digits == 0 || digits > 6) return std::nullopt;  // finer than a microsecond
      for (std::size_t k = 0; k < 6; ++k)
        fraction_us = fraction_us * 10 + (k < digits ? text[k] - '0' : 0);
      text.remove_prefix(digits);
      if (text.empty() || text.front() != 'S') return std::nullopt;  // a fraction on seconds only
    }
    if (text.empty()) return std::nullopt;
    const char unit = text.front();
    text.remove_prefix(1);
    const auto at = k_order.find(unit);
    if (at == std::string_view::npos || (unit == 'D') == in_time) return std::nullopt;
    if (last_unit != 0 && at <= k_order.find(last_unit)) return std::nullopt;
    last_unit = unit;
    constexpr std::int64_t k_per[] = {86'400'000'000, 3'600'000'000, 60'000'000, 1'000'000};
    const auto per = k_per[at];
    if (whole > static_cast<std::uint64_t>(INT64_MAX / per)) return std::nullopt;
    const auto whole_us = static_cast<std::int64_t>(whole) * per;
    if (whole_us > INT64_MAX - fraction_us) return std::nullopt;
    const auto part = whole_us + fraction_us;
    if (total > INT64_MAX - part) return std::nullopt;
    total += part;
    any = true;
  }
  if (!any) return std::nullopt;
  return std::chrono::microseconds(negative ? -total : total);
}

namespace {

class json_type_category_t final : public boost::system::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "keel.json_types"; }
  [[nodiscard]] std::string message(int ev) const override {
    switch (static_cast<json_type_error>(ev)) {
      case json_type_error::not_a_time:
        return "not an RFC 3339 time (\"2026-11-27T09:30:00Z\")";
      case json_type_error::not_a_duration:
        return "not an ISO 8601 duration (\"PT1.5S\", \"P7D\")";
      case json_type_error::not_base64:
        return "not padded base64";
    }
    return "unknown keel.json_types error";
  }
};

}  // namespace

const boost::system::error_category& json_type_category() noexcept {
  static const json_type_category_t c;
  return c;
}

namespace detail {

std::optional<std::chrono::system_clock::time_point> json_time(const boost::json::value& v) {
  const auto* s = v.if_string();
  if (s == nullptr) return std::nullopt;
  return parse_rfc3339(std::string_view(*s));
}

boost::json::value json_time_text(std::chrono::system_clock::time_point t) {
  return boost::json::value(rfc3339(t));
}

}  // namespace detail
}  // namespace keel
