// PostgreSQL's text form of one-dimensional arrays, as the server prints them (array_out).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel::storage::detail {

/// The elements of a one-dimensional array's text form (`{a,"b c",NULL}`, or `[0:2]={...}` with its bounds),
/// NULL elements as nullopt. Quoted elements are unescaped. Returns nullopt when `text` is not such an array
/// (a multi-dimensional one, unbalanced quotes).
std::optional<std::vector<std::optional<std::string>>> parse_text_array(std::string_view text);

}  // namespace keel::storage::detail
