// Where a JSON document fails to convert to a C++ type, as a JSON pointer: "/items/2/quantity: value is not
// an integer". Boost.JSON says what failed but not where; this walks the document beside the type (described
// structs, optionals, sequences, string-keyed maps) to the first part that does not convert.
#pragma once

#include <boost/describe/members.hpp>
#include <boost/describe/modifiers.hpp>
#include <boost/json/value.hpp>
#include <boost/json/value_to.hpp>
#include <boost/mp11/algorithm.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "keel/engine/json_types.hpp"

namespace keel::detail {

/// Appends "/token" to a JSON pointer, escaping '~' and '/'.
inline void append_pointer_token(std::string& pointer, std::string_view token) {
  pointer.push_back('/');
  for (const char c : token) {
    if (c == '~') {
      pointer += "~0";
    } else if (c == '/') {
      pointer += "~1";
    } else {
      pointer.push_back(c);
    }
  }
}

template <class T>
struct is_std_optional : std::false_type {};
template <class T>
struct is_std_optional<std::optional<T>> : std::true_type {};

template <class T>
concept json_sequence = !std::is_convertible_v<T, std::string_view> && requires(const T& t) {
  typename T::value_type;
  t.begin();
  t.end();
}
&&!requires {
  typename T::mapped_type;
};

template <class T>
concept json_string_map = requires {
  typename T::key_type;
  typename T::mapped_type;
}
&&std::is_convertible_v<typename T::key_type, std::string_view>;

/// Whether `v` fails to convert to T; if so, `pointer` ends where it fails and `what` says how. Types with
/// their own conversion (json_types.hpp, user tag_invoke) are checked as a whole.
template <class T>
bool find_conversion_error(const boost::json::value& v, std::string& pointer, std::string& what) {
  using U = std::remove_cvref_t<T>;
  if constexpr (is_std_optional<U>::value) {
    if (v.is_null()) return false;
    return find_conversion_error<typename U::value_type>(v, pointer, what);
  } else if constexpr (boost::describe::has_describe_members<U>::value) {
    const auto* object = v.if_object();
    if (object == nullptr) {
      what = "an object is expected";
      return true;
    }
    using members =
        boost::describe::describe_members<U, boost::describe::mod_public | boost::describe::mod_inherited>;
    bool found = false;
    std::size_t known = 0;
    boost::mp11::mp_for_each<members>([&](auto d) {
      if (found) return;
      using member = std::remove_cvref_t<decltype(std::declval<U&>().*d.pointer)>;
      const auto size = pointer.size();
      append_pointer_token(pointer, d.name);
      const auto* m = object->if_contains(d.name);
      if (m == nullptr) {
        what = "missing";
        found = true;
        return;
      }
      ++known;
      if (find_conversion_error<member>(*m, pointer, what)) {
        found = true;
        return;
      }
      pointer.resize(size);
    });
    if (found) return true;
    if (object->size() != known) {
      // Every member is there and converts: what is left is a key the type does not have.
      for (const auto& kv : *object) {
        bool member_name = false;
        boost::mp11::mp_for_each<members>([&](auto d) { member_name = member_name || kv.key() == d.name; });
        if (!member_name) {
          append_pointer_token(pointer, kv.key());
          what = "not a member of the type";
          return true;
        }
      }
    }
    return false;
  } else if constexpr (json_string_map<U>) {
    const auto* object = v.if_object();
    if (object == nullptr) {
      what = "an object is expected";
      return true;
    }
    for (const auto& kv : *object) {
      const auto size = pointer.size();
      append_pointer_token(pointer, kv.key());
      if (find_conversion_error<typename U::mapped_type>(kv.value(), pointer, what)) return true;
      pointer.resize(size);
    }
    return false;
  } else if constexpr (json_sequence<U> && !std::is_same_v<U, std::vector<std::byte>>) {
    const auto* array = v.if_array();
    if (array == nullptr) {
      what = "an array is expected";
      return true;
    }
    for (std::size_t i = 0; i < array->size(); ++i) {
      const auto size = pointer.size();
      append_pointer_token(pointer, std::to_string(i));
      if (find_conversion_error<typename U::value_type>((*array)[i], pointer, what)) return true;
      pointer.resize(size);
    }
    return false;
  } else {
    auto converted = boost::json::try_value_to<U>(v);
    if (converted) return false;
    what = converted.error().message();
    return true;
  }
}

/// "at /items/2/quantity: value is not an integer" for the first part of `v` that does not convert to T;
/// nullopt if it converts.
template <class T>
std::optional<std::string> conversion_error(const boost::json::value& v) {
  std::string pointer, what;
  if (!find_conversion_error<T>(v, pointer, what)) {
    // The parts convert one by one; the whole may still not (a tuple's size, a type's own rules).
    auto whole = boost::json::try_value_to<T>(v);
    if (whole) return std::nullopt;
    what = whole.error().message();
  }
  return "at " + (pointer.empty() ? std::string("the top") : pointer) + ": " + what;
}

}  // namespace keel::detail
