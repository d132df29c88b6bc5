#include "row_text.hpp"

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serializer.hpp>
#include <charconv>

#include "keel/common/log.hpp"

namespace keel::storage::detail {

void append_quoted(std::string& out, std::string_view s) {
  static constexpr char k_hex[] = "0123456789abcdef";
  out.push_back('"');
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (c < 0x20) {
      out += "\\u00";
      out.push_back(k_hex[c >> 4]);
      out.push_back(k_hex[c & 0xF]);
    } else {
      out.push_back(ch);
    }
  }
  out.push_back('"');
}

void row_text::key(std::string_view k) {
  if (text_.size() > 1) text_.push_back(',');
  text_.push_back('"');
  text_ += k;
  text_ += "\":";
}

row_text& row_text::str(std::string_view k, std::string_view value) {
  key(k);
  append_quoted(text_, value);
  return *this;
}

row_text& row_text::num(std::string_view k, std::int64_t value) {
  key(k);
  char buf[24];
  text_.append(buf, std::to_chars(buf, buf + sizeof buf, value).ptr);
  return *this;
}

row_text& row_text::null(std::string_view k) {
  key(k);
  text_ += "null";
  return *this;
}

void row_text::serialize(const boost::json::value& v) {
  // Serialized in place, without an intermediate string.
  boost::json::serializer sr;
  sr.reset(&v);
  while (!sr.done()) {
    const std::size_t at = text_.size();
    text_.resize(at + std::max<std::size_t>(256, text_.capacity() - at));
    const auto chunk = sr.read(text_.data() + at, text_.size() - at);
    text_.resize(at + chunk.size());
  }
}

row_text& row_text::value(std::string_view k, const boost::json::value& v) {
  key(k);
  serialize(v);
  return *this;
}

row_text& row_text::values(std::string_view k, const std::vector<boost::json::value>& vs) {
  key(k);
  text_.push_back('[');
  for (std::size_t i = 0; i < vs.size(); ++i) {
    if (i != 0) text_.push_back(',');
    serialize(vs[i]);
  }
  text_.push_back(']');
  return *this;
}

std::string row_text::finish() && {
  text_.push_back('}');
  return std::move(text_);
}

std::string_view row_field(std::string_view row, std::string_view key) {
  std::string pattern = "\"";
  pattern += key;
  pattern += "\":\"";
  const auto at = row.find(pattern);
  if (at == std::string_view::npos) return {};
  const auto start = at + pattern.size();
  const auto end = row.find('"', start);
  return row.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
}

boost::json::value parse_stored_json(std::string_view text) {
  boost::json::parse_options opt;
  opt.max_depth = 100'000;  // boost.json's default (32) is far below what a payload may nest (json_limits)
  boost::system::error_code ec;
  auto v = boost::json::parse(boost::json::string_view(text.data(), text.size()), ec, {}, opt);
  if (ec) {
    log::error("storage", "cannot parse stored JSON (" + ec.message() + "); reading it as null");
    return nullptr;
  }
  return v;
}

int to_int(std::string_view s) {
  int v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

std::int64_t to_int64(std::string_view s) {
  std::int64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

}  // namespace keel::storage::detail
