// libpq connection strings: quoting values and pointing a connection string at another database.
#pragma once

#include <string>
#include <string_view>

#include "keel/common/result.hpp"

namespace keel::storage {

/// `v` as a key=value connection-string value: quoted (with ' and \ escaped) when empty or when it holds
/// white space, a quote or a backslash; unchanged otherwise.
[[nodiscard]] std::string quote_conninfo_value(std::string_view v);

/// The same server and settings as `conninfo` (key=value or postgresql:// URL form) but database `dbname`,
/// in key=value form. Errors: std::invalid_argument when `conninfo` does not parse.
[[nodiscard]] std::string conninfo_with_database(const std::string& conninfo, const std::string& dbname);

}  // namespace keel::storage
