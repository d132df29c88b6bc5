#include "hook_signature.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <array>
#include <charconv>
#include <stdexcept>

#include "keel/engine/error.hpp"
#include "keel/engine/webhook_signature.hpp"

namespace keel {
namespace {

/// A header longer than this is refused before any parsing: a sender signs with a handful of secrets.
constexpr std::size_t k_max_header_bytes = 4096;

using mac = std::array<unsigned char, 32>;

/// HMAC-SHA256(secret, message).
mac hmac_sha256(std::string_view secret, std::string_view message) {
  mac out{};
  unsigned int length = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), out.data(),
           &length) == nullptr ||
      length != out.size())
    throw std::runtime_error("webhook signature: HMAC-SHA256 failed");
  return out;
}

/// What a signature covers: "<t>.<body>".
std::string signed_message(std::string_view timestamp, std::string_view body) {
  std::string message;
  message.reserve(timestamp.size() + 1 + body.size());
  message.append(timestamp).append(".").append(body);
  return message;
}

std::string hex(const mac& m) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(m.size() * 2);
  for (const auto b : m) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0x0f]);
  }
  return out;
}

/// `text` as 32 bytes from 64 hex digits (either case); false otherwise.
bool unhex(std::string_view text, mac& out) {
  if (text.size() != out.size() * 2) return false;
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = digit(text[2 * i]);
    const int lo = digit(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

}  // namespace

std::string webhook_signature(std::string_view secret, std::string_view body, std::int64_t unix_seconds) {
  const auto t = std::to_string(unix_seconds);
  return "t=" + t + ",v1=" + hex(hmac_sha256(secret, signed_message(t, body)));
}

result<void> verify_webhook_signature(std::string_view header, std::string_view body, std::string_view secret,
                                      std::chrono::seconds tolerance) {
  const auto now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch());
  const std::map<std::string, std::vector<std::string>> one{{"secret", {std::string(secret)}}};
  auto verified = detail::verify_signature(header, body, one, now.count(), tolerance);
  if (!verified) return verified.error();
  return {};
}

std::string hmac_sha256_hex(std::string_view secret, std::string_view message) {
  return hex(hmac_sha256(secret, message));
}

bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

namespace detail {

result<verified_signature> verify_signature(std::string_view header, std::string_view body,
                                            const std::map<std::string, std::vector<std::string>>& secrets,
                                            std::int64_t now, std::chrono::seconds tolerance) {
  if (header.size() > k_max_header_bytes) return errc::invalid_signature;
  std::string_view timestamp;
  std::vector<mac> candidates;
  while (!header.empty()) {
    const auto comma = header.find(',');
    const auto field = trim(header.substr(0, comma));
    header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
    const auto eq = field.find('=');
    if (eq == std::string_view::npos) return errc::invalid_signature;
    const auto key = field.substr(0, eq);
    const auto value = field.substr(eq + 1);
    if (key == "t") {
      if (!timestamp.empty()) return errc::invalid_signature;  // two times: which one was signed?
      timestamp = value;
    } else if (key == "v1") {
      mac m{};
      if (!unhex(value, m)) return errc::invalid_signature;
      candidates.push_back(m);
    }  // other schemes (v0, a future v2) are not ours to judge
  }
  std::int64_t t = 0;
  const auto [end, ec] = std::from_chars(timestamp.data(), timestamp.data() + timestamp.size(), t);
  if (timestamp.empty() || timestamp.size() > 12 || ec != std::errc() ||
      end != timestamp.data() + timestamp.size() || candidates.empty())
    return errc::invalid_signature;
  if (t < now - tolerance.count() || t > now + tolerance.count()) return errc::signature_expired;

  verified_signature out;
  out.signed_at = t;
  const auto message = signed_message(timestamp, body);
  for (const auto& [key, key_secrets] : secrets) {
    bool matched = false;
    for (const auto& secret : key_secrets) {
      const auto expected = hmac_sha256(secret, message);
      for (const auto& c : candidates) {
        if (CRYPTO_memcmp(expected.data(), c.data(), c.size()) == 0) {
          matched = true;
        }
      }
    }
    if (matched) out.keys.push_back(key);
  }
  if (out.keys.empty()) return errc::invalid_signature;
  mac digest{};
  SHA256(reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest.data());
  out.message_digest = hex(digest);
  return out;
}

}  // namespace detail
}  // namespace keel
