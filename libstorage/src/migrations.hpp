// The numbered SQL migrations compiled into the library (from libstorage/sql/).
#pragma once

#include <string_view>
#include <vector>

namespace keel::storage::detail {

struct migration {
  int version;
  std::string_view name;
  std::string_view sql;
};

/// All migrations, ascending by version.
const std::vector<migration>& migrations();

}  // namespace keel::storage::detail
