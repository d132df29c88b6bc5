// Hook tokens: derived from a secret, the run and the step position (so that a replay hands the workflow the
// same URL again), and never stored: only their SHA-256 reaches the database.
#pragma once

#include <string>
#include <string_view>

namespace keel::detail {

/// 256 bits, base64url without padding (43 characters): HMAC-SHA256(secret, run_id "/" seq "/" name), with
/// "/g" generation after the run id from the run's first continue_as_new on (an earlier generation's link
/// never matches a later one's hook at the same position).
std::string hook_token(std::string_view secret, std::string_view run_id, int generation, int seq,
                       std::string_view name);

/// SHA-256 of `token`, lowercase hex: how the database knows it.
std::string hook_token_hash(std::string_view token);

}  // namespace keel::detail
