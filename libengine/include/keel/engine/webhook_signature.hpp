// Signed webhooks: the Keel-Signature header a hook with a signature key demands (Stripe's scheme).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "keel/common/result.hpp"

namespace keel {

/// The Keel-Signature header value for `body` signed with `secret` at `unix_seconds`:
/// `t=<unix_seconds>,v1=<lowercase hex HMAC-SHA256(secret, "<unix_seconds>.<body>")>`. For senders, and
/// for tests. A sender rotating its secret may send several v1 values, one per secret.
[[nodiscard]] std::string webhook_signature(std::string_view secret, std::string_view body,
                                            std::int64_t unix_seconds);

/// Verifies a signature header in that scheme — Keel-Signature, or Stripe's Stripe-Signature — over the
/// request's exact `body` with `secret`, for a workflow checking what its webhook received (keel::webhook):
/// a v1 must match (compared in constant time) and `t` be within `tolerance` of now. Errors:
/// invalid_signature (malformed, or no v1 matches), signature_expired.
[[nodiscard]] result<void> verify_webhook_signature(
    std::string_view header, std::string_view body, std::string_view secret,
    std::chrono::seconds tolerance = std::chrono::seconds(300));

/// Lowercase hex of HMAC-SHA256(`secret`, `message`): what GitHub (`X-Hub-Signature-256: sha256=<hex>` over
/// the body) and Slack (`v0=<hex>` over "v0:<timestamp>:<body>") sign with. Compare it with
/// keel::constant_time_equal.
[[nodiscard]] std::string hmac_sha256_hex(std::string_view secret, std::string_view message);

/// Whether `a` equals `b`, in a time that does not depend on where they differ.
[[nodiscard]] bool constant_time_equal(std::string_view a, std::string_view b) noexcept;

}  // namespace keel
