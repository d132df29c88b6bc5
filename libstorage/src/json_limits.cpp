#include "keel/storage/json_limits.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/string.hpp>
#include <charconv>
#include <vector>

#include "keel/storage/error.hpp"

namespace keel::storage {
namespace {

namespace json = boost::json;

/// Length of the valid UTF-8 sequence (not NUL) starting at `s[i]`, or 0 when it is invalid.
std::size_t utf8_sequence(std::string_view s, std::size_t i) noexcept {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c == 0) return 0;
  if (c < 0x80) return 1;
  std::size_t n = 0;
  char32_t cp = 0;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3F);
  }
  // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are invalid too.
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000)) return 0;
  if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return 0;
  return n;
}

/// Serialized size of a string: quotes, and escapes for quotes, backslashes and control characters.
std::size_t quoted_size(std::string_view s) noexcept {
  std::size_t n = s.size() + 2;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      n += 1;
    } else if (c < 0x20) {
      n += 5;  // \u00XX (a few have two-character escapes; the bound is what matters)
    }
  }
  return n;
}

std::size_t scalar_size(const json::value& v) noexcept {
  char buf[32];
  switch (v.kind()) {
    case json::kind::null:
      return 4;
    case json::kind::bool_:
      return v.get_bool() ? 4 : 5;
    case json::kind::int64:
      return static_cast<std::size_t>(std::to_chars(buf, buf + sizeof buf, v.get_int64()).ptr - buf);
    case json::kind::uint64:
      return static_cast<std::size_t>(std::to_chars(buf, buf + sizeof buf, v.get_uint64()).ptr - buf);
    case json::kind::double_:
      return 25;  // at most
    case json::kind::string:
      return quoted_size(v.get_string());
    default:
      return 0;
  }
}

/// A JSON pointer token: "~" and "/" escaped as RFC 6901 says.
void append_token(std::string& out, std::string_view key) {
  out.push_back('/');
  for (char c : key) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out.push_back(c);
    }
  }
}

struct frame {
  const json::value* v;
  std::size_t depth;
  std::size_t parent;  ///< index of the parent frame in `visited`, for the path of an error
  std::string key;     ///< this value's key or index in its parent
};

/// The JSON pointer of frame `i` (rebuilt only when there is an error to report).
std::string pointer_of(const std::vector<frame>& visited, std::size_t i) {
  std::vector<const std::string*> keys;
  for (std::size_t k = i; k != 0; k = visited[k].parent)
    keys.push_back(&visited[k].key);
  std::string out;
  for (auto it = keys.rbegin(); it != keys.rend(); ++it)
    append_token(out, valid_utf8(**it));
  return out.empty() ? std::string("(the root)") : out;
}

}  // namespace

bool is_valid_utf8(std::string_view text) noexcept {
  for (std::size_t i = 0; i < text.size();) {
    const auto n = utf8_sequence(text, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string valid_utf8(std::string_view text) {
  if (is_valid_utf8(text)) return std::string(text);
  std::string out;
  out.reserve(text.size() + 8);
  for (std::size_t i = 0; i < text.size();) {
    const auto n = utf8_sequence(text, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
      ++i;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  return out;
}

result<void> check_json(const json::value& v, const json_limits& limits, std::string* why) {
  // Depth-first with an explicit stack. Frames are kept (not popped) only so that an error can name its path;
  // keys are recorded lazily in the same pass, which costs a string per container element.
  std::vector<frame> visited;
  std::vector<std::size_t> pending{0};
  visited.push_back({&v, 0, 0, {}});
  std::size_t bytes = 0;
  auto fail = [&](errc code, std::size_t at, std::string what) -> result<void> {
    if (why) *why = std::move(what) + " at " + pointer_of(visited, at);
    return code;
  };
  while (!pending.empty()) {
    const std::size_t at = pending.back();
    pending.pop_back();
    const json::value& cur = *visited[at].v;
    const std::size_t depth = visited[at].depth;
    if (cur.is_array()) {
      const auto& a = cur.get_array();
      if (depth + 1 > limits.max_depth)
        return fail(errc::payload_too_deep, at, "nesting deeper than " + std::to_string(limits.max_depth));
      bytes += 2 + (a.empty() ? 0 : a.size() - 1);
      for (std::size_t i = a.size(); i-- > 0;) {
        if (a[i].is_structured()) {
          pending.push_back(visited.size());
          visited.push_back({&a[i], depth + 1, at, std::to_string(i)});
        } else {
          bytes += scalar_size(a[i]);
          if (a[i].is_string() && !is_valid_utf8(a[i].get_string())) {
            visited.push_back({&a[i], depth + 1, at, std::to_string(i)});
            return fail(errc::invalid_argument, visited.size() - 1, "invalid UTF-8 or a NUL character");
          }
        }
      }
    } else if (cur.is_object()) {
      const auto& o = cur.get_object();
      if (depth + 1 > limits.max_depth)
        return fail(errc::payload_too_deep, at, "nesting deeper than " + std::to_string(limits.max_depth));
      bytes += 2 + (o.empty() ? 0 : o.size() - 1);
      for (const auto& kv : o) {
        bytes += quoted_size(kv.key()) + 1;
        if (!is_valid_utf8(kv.key())) {
          visited.push_back({&kv.value(), depth + 1, at, std::string(kv.key())});
          return fail(errc::invalid_argument, visited.size() - 1,
                      "a key with invalid UTF-8 or a NUL character");
        }
        if (kv.value().is_structured()) {
          pending.push_back(visited.size());
          visited.push_back({&kv.value(), depth + 1, at, std::string(kv.key())});
        } else {
          bytes += scalar_size(kv.value());
          if (kv.value().is_string() && !is_valid_utf8(kv.value().get_string())) {
            visited.push_back({&kv.value(), depth + 1, at, std::string(kv.key())});
            return fail(errc::invalid_argument, visited.size() - 1, "invalid UTF-8 or a NUL character");
          }
        }
      }
    } else {
      bytes += scalar_size(cur);
      if (cur.is_string() && !is_valid_utf8(cur.get_string()))
        return fail(errc::invalid_argument, at, "invalid UTF-8 or a NUL character");
    }
    if (bytes > limits.max_bytes) {
      if (why) {
        *why = "larger than " + std::to_string(limits.max_bytes) + " bytes serialized";
      }
      return errc::payload_too_large;
    }
  }
  return {};
}

void destroy_deep(json::value&& v) noexcept {
  // Children are moved out before their parent dies, so no destructor ever recurses more than one level.
  std::vector<json::value> stack;
  stack.push_back(std::move(v));
  while (!stack.empty()) {
    json::value cur = std::move(stack.back());
    stack.pop_back();
    if (cur.is_array()) {
      for (auto& e : cur.get_array()) {
        if (e.is_structured()) stack.push_back(std::move(e));
      }
    } else if (cur.is_object()) {
      for (auto& kv : cur.get_object()) {
        if (kv.value().is_structured()) stack.push_back(std::move(kv.value()));
      }
    }
  }
}

}  // namespace keel::storage
