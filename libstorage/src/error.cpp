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
  if (s == "40001" || s == "40P01") return errc::retryable;
  if (s == "23505") return errc::unique_violation;
  if (s.starts_with("22") || s.starts_with("23")) return errc::data_rejected;
  // Class 08 (connection exception), 57P01..57P03 (admin shutdown, crash shutdown, cannot connect now).
  if (s.starts_with("08") || s == "57P01" || s == "57P02" || s == "57P03") return errc::connection_lost;
  return errc::query_failed;
}

}  // namespace keel::storage
