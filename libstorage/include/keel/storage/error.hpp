// Storage error codes (a boost::system category, after Beast's http/error.hpp).
#pragma once

#include <boost/system/error_code.hpp>
#include <string_view>
#include <type_traits>

namespace keel::storage {

/// Why a storage operation failed.
enum class errc {
  /// The database could not be reached or the connection broke; the operation may be retried.
  connection_lost = 1,
  /// A failure that is transient by nature: serialization failure or deadlock (40001 / 40P01), insufficient
  /// resources (class 53); retrying the transaction is safe.
  retryable,
  /// A unique constraint rejected the write (SQLSTATE 23505).
  unique_violation,
  /// The server refused the data itself (SQLSTATE class 22 data exception or 23 integrity violation, e.g. a
  /// "\u0000" in jsonb): retrying the same write cannot succeed.
  data_rejected,
  /// The statement failed for another reason that retrying cannot cure (a statement or lock timeout, a
  /// read-only server, an index row too large, bad SQL); see the log. Fails only the write that caused it.
  query_failed,
  /// The worker no longer holds the run's lease (owner or epoch changed): the write was not applied.
  fenced,
  /// No row with that id.
  not_found,
  /// An external tool (initdb, pg_ctl) failed or the embedded server could not start.
  server_failed,
  /// Storage is shutting down.
  shut_down,
  /// A JSON payload (input, output, error) is larger than the configured limit (store_options::limits).
  payload_too_large,
  /// A JSON payload nests deeper than the configured limit.
  payload_too_deep,
  /// An argument is malformed or out of bounds: an over-long idempotency key or name, invalid UTF-8 or a NUL
  /// character in a payload.
  invalid_argument,
  /// The run has finished (completed, failed or cancelled): it takes no more events.
  run_finished,
};

/// True for errors that retrying the same write can cure (connection loss, serialization failure, deadlock,
/// admin shutdown, insufficient resources); every other error fails the write for good.
[[nodiscard]] bool is_transient(boost::system::error_code ec) noexcept;

/// The category of keel::storage::errc values.
const boost::system::error_category& storage_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), storage_category()};
}

/// Maps a SQLSTATE (5 characters) to an errc; the one place this mapping lives.
errc errc_from_sqlstate(std::string_view sqlstate) noexcept;

}  // namespace keel::storage

template <>
struct boost::system::is_error_code_enum<keel::storage::errc> : std::true_type {};
