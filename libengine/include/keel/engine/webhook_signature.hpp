// Signed webhooks: the Keel-Signature header a hook with a signature key demands (Stripe's scheme).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace keel {

/// The Keel-Signature header value for `body` signed with `secret` at `unix_seconds`:
/// `t=<unix_seconds>,v1=<lowercase hex HMAC-SHA256(secret, "<unix_seconds>.<body>")>`. For senders, and
/// for tests. A sender rotating its secret may send several v1 values, one per secret.
[[nodiscard]] std::string webhook_signature(std::string_view secret, std::string_view body,
                                            std::int64_t unix_seconds);

}  // namespace keel
