#include "keel/storage/error.hpp"

#include <string>

namespace keel::storage {
namespace {

class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "keel.storage"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::connection_lost:
        return "database connection lost";
      case errc::retryable:
        return "retryable transaction conflict";
      case errc::unique_violation:
        return "unique constraint violated";
      case errc::data_rejected:
        return "the database rejected the data";
      case errc::query_failed:
        return "query failed";
      case errc::fenced:
        return "lease lost: write fenced off";
      case errc::not_found:
        return "not found";
      case errc::server_failed:
        return "embedded PostgreSQL server failed";
      case errc::shut_down:
        return "storage shut down";
      case errc::payload_too_large:
        return "payload too large";
      case errc::payload_too_deep:
        return "payload nested too deeply";
      case errc::invalid_argument:
        return "invalid argument";
      case errc::run_finished:
        return "the run has finished";
    }
    return "unknown storage error";
  }
};

}  // namespace

const boost::system::error_category& storage_category() noexcept {
  static const category c;
  return c;
}

errc errc_from_sqlstate(std::string_view s) noexcept {
  // Transient by nature: only these are retried. Class 08 (connection exception), 57P01..57P05 (admin or
  // crash shutdown, cannot connect now, database dropped, idle session timeout) break the session.
  if (s.starts_with("08") || (s.starts_with("57P") && s != "57P04")) return errc::connection_lost;
  if (s == "40001" || s == "40P01" || s.starts_with("53")) return errc::retryable;
  if (s == "23505") return errc::unique_violation;
  // Class 22 (data exception: bad UTF-8, "\u0000" in jsonb), 23 (integrity), 54 (program limit: an index
  // row or a jsonb value too large or deep): the data itself is refused.
  if (s.starts_with("22") || s.starts_with("23") || s.starts_with("54")) return errc::data_rejected;
  return errc::query_failed;
}

bool is_transient(boost::system::error_code ec) noexcept {
  return ec == errc::connection_lost || ec == errc::retryable;
}

}  // namespace keel::storage
