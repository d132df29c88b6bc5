// Checking a resume's Keel-Signature against the signing keys an engine is configured with.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "keel/common/result.hpp"

namespace keel::detail {

struct verified_signature {
  /// The keys (engine_options::webhook_secrets names) one of whose secrets made a v1 of the header.
  std::vector<std::string> keys;
  /// SHA-256 of the signed message "<t>.<body>" (lowercase hex): what is recorded so that it is accepted
  /// once, whichever of the header's v1 values matched.
  std::string message_digest;
  std::int64_t signed_at = 0;
};

/// Verifies `header` (`t=<unix>,v1=<hex>[,v1=<hex>...]`, other fields ignored) over `t.body`. Every secret
/// of every key is tried, each compared in constant time. Errors: invalid_signature (malformed, or no
/// secret matches), signature_expired (t further than `tolerance` from `now`).
result<verified_signature> verify_signature(std::string_view header, std::string_view body,
                                            const std::map<std::string, std::vector<std::string>>& secrets,
                                            std::int64_t now, std::chrono::seconds tolerance);

}  // namespace keel::detail
