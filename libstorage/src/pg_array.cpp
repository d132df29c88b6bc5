#include "pg_array.hpp"

namespace keel::storage::detail {

std::optional<std::vector<std::optional<std::string>>> parse_text_array(std::string_view text) {
  // A lower bound other than 1 is printed first ("[0:2]={...}"); the elements are what they are.
  if (!text.empty() && text.front() == '[') {
    const auto eq = text.find("]={");
    if (eq == std::string_view::npos || text.find('[', 1) < eq) return std::nullopt;  // one dimension only
    text.remove_prefix(eq + 2);
  }
  if (text.size() < 2 || text.front() != '{' || text.back() != '}') return std::nullopt;
  std::vector<std::optional<std::string>> out;
  std::size_t i = 1;
  const std::size_t end = text.size() - 1;
  if (i == end) return out;  // {}
  for (;;) {
    if (i >= end) return std::nullopt;  // an element was expected
    if (text[i] == '"') {
      std::string element;
      ++i;
      for (;;) {
        if (i >= end) return std::nullopt;
        const char c = text[i++];
        if (c == '"') break;
        if (c == '\\') {
          if (i >= end) return std::nullopt;
          element.push_back(text[i++]);
        } else {
          element.push_back(c);
        }
      }
      out.emplace_back(std::move(element));
    } else {
      const auto comma = text.find(',', i);
      const auto stop = comma == std::string_view::npos || comma > end ? end : comma;
      const auto token = text.substr(i, stop - i);
      // Unquoted elements hold no quote, brace or backslash; NULL unquoted is the null element.
      if (token.empty() || token.find_first_of("{}\"\\") != std::string_view::npos) return std::nullopt;
      if (token == "NULL") {
        out.emplace_back(std::nullopt);
      } else {
        out.emplace_back(std::string(token));
      }
      i = stop;
    }
    if (i == end) return out;
    if (text[i] != ',') return std::nullopt;
    ++i;
  }
}

}  // namespace keel::storage::detail
