#include "errors.hpp"

#include "keel/engine/error.hpp"
#include "keel/storage/error.hpp"

namespace keel::http::detail {

using boost::beast::http::status;

http_error to_http(error_code ec) {
  if (ec.category() == engine_category()) {
    const auto e = static_cast<errc>(ec.value());
    auto code = code_name(e);
    switch (e) {
      case errc::unknown_workflow:
      case errc::run_not_found:
      case errc::hook_not_found:
      case errc::schedule_not_found:
        return {status::not_found, std::move(code)};
      case errc::invalid_run_id:
      case errc::invalid_input:
      case errc::invalid_cron_expression:
      case errc::unknown_time_zone:
        return {status::bad_request, std::move(code)};
      case errc::idempotency_conflict:
      case errc::run_finished:
      case errc::hook_already_resumed:
      case errc::run_not_failed:
        return {status::conflict, std::move(code)};
      case errc::hook_expired:
      case errc::hook_closed:
        return {status::gone, std::move(code)};
      case errc::signature_required:
      case errc::invalid_signature:
      case errc::signature_expired:
        return {status::unauthorized, std::move(code)};
      case errc::signature_replayed:
        return {status::conflict, std::move(code)};
      case errc::wait_timeout:
        return {status::gateway_timeout, std::move(code)};
      case errc::shutting_down:
        return {status::service_unavailable, std::move(code)};
      default:
        return {status::internal_server_error, std::move(code)};
    }
  }
  if (ec.category() == storage::storage_category()) {
    switch (static_cast<storage::errc>(ec.value())) {
      case storage::errc::payload_too_large:
        return {status::payload_too_large, "payload_too_large"};
      case storage::errc::payload_too_deep:
        return {status::bad_request, "payload_too_deep"};
      case storage::errc::invalid_argument:
      case storage::errc::data_rejected:
        return {status::bad_request, "invalid_request"};
      case storage::errc::not_found:
        return {status::not_found, "not_found"};
      case storage::errc::run_finished:
        return {status::conflict, "run_finished"};
      case storage::errc::connection_lost:
      case storage::errc::retryable:
      case storage::errc::shut_down:
        return {status::service_unavailable, "unavailable"};
      default:
        return {status::internal_server_error, "internal"};
    }
  }
  return {status::internal_server_error, "internal"};
}

}  // namespace keel::http::detail
