#include "http_message_json.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>
#include <cctype>
#include <cstddef>
#include <vector>

#include "keel/engine/json_types.hpp"
#include "keel/storage/json_limits.hpp"

namespace keel::detail {

namespace json = boost::json;

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

std::optional<std::string_view> find_field(const http_fields& fields, std::string_view name) {
  for (const auto& [n, v] : fields) {
    if (iequals(n, name)) return std::string_view(v);
  }
  return std::nullopt;
}

json::array fields_json(const http_fields& fields) {
  json::array out;
  out.reserve(fields.size());
  for (const auto& [name, value] : fields) {
    json::array field;
    field.emplace_back(storage::valid_utf8(name));
    field.emplace_back(storage::valid_utf8(value));
    out.emplace_back(std::move(field));
  }
  return out;
}

http_fields fields_of(const json::value& v) {
  http_fields out;
  for (const auto& f : v.as_array()) {
    const auto& pair = f.as_array();
    out.emplace_back(std::string(pair.at(0).as_string()), std::string(pair.at(1).as_string()));
  }
  return out;
}

void put_body(json::object& o, const std::string& body) {
  if (storage::is_valid_utf8(body)) {
    o["body"] = body;
  } else {
    const auto* first = reinterpret_cast<const std::byte*>(body.data());
    o["body_base64"] = json::value_from(std::vector<std::byte>(first, first + body.size()));
  }
}

std::string body_of(const json::object& o) {
  if (const auto* text = o.if_contains("body")) return std::string(text->as_string());
  if (const auto* encoded = o.if_contains("body_base64")) {
    const auto bytes = json::value_to<std::vector<std::byte>>(*encoded);
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
  }
  return {};
}

std::optional<json::value> parse_json_body(const std::string& body) {
  boost::system::error_code ec;
  auto v = json::parse(body, ec);
  if (ec) return std::nullopt;
  return v;
}

}  // namespace keel::detail
