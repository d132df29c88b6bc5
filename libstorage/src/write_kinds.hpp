// The kinds of write the store makes through the group writer: enqueues, claims, checkpoints, finishes,
// releases and waits.
#pragma once

#include <variant>

#include "keel/storage/records.hpp"
#include "write_kind.hpp"

namespace keel::storage::detail {

/// What a fenced write returns when applied.
using applied = std::monostate;

/// A claim waiting for a transaction; its parameters are positional (no row).
class claim_write final : public typed_write<claim_outcome> {
 public:
  claim_write(const write_kind& kind, std::vector<std::optional<std::string>> params,
              std::function<void(result<claim_outcome>)> done)
      : typed_write(kind, {}, std::chrono::steady_clock::time_point::max(), std::move(done)),
        params_(std::move(params)) {}
  /// The parameters for the next attempt: the last one ($7) says whether an earlier attempt was sent (and
  /// may have committed), so that the claim adopts what that attempt took.
  [[nodiscard]] const std::vector<std::optional<std::string>>& next_attempt() {
    params_.back() = sent_ ? "true" : "false";
    sent_ = true;
    return params_;
  }

 private:
  std::vector<std::optional<std::string>> params_;
  bool sent_ = false;
};

/// The kinds, in transaction order.
const write_kind& enqueue_kind();
const write_kind& claim_kind();
/// A claim of one parked run by id, its history loaded in the same transaction (store::claim_parked).
const write_kind& claim_parked_kind();
/// Chunks of durable output streams (store::write_output).
const write_kind& output_kind();
/// Events of a held run that change nothing else (store::append_log).
const write_kind& append_log_kind();
const write_kind& checkpoint_kind();
const write_kind& finish_kind();
const write_kind& release_kind();
/// Durable waits (sleep, event): completes with wait_outcome, or fails with fenced.
const write_kind& wait_kind();
/// Waits for the first of several alternatives (wait_kind::any): like wait_kind.
const write_kind& wait_any_kind();
/// Child runs started by held runs (store::start_child): like wait_kind.
const write_kind& child_kind();

}  // namespace keel::storage::detail
