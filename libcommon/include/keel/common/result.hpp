// keel::result<T>: the value-or-error type every Keel API returns for expected failures.
#pragma once

#include <boost/system/result.hpp>

namespace keel {

/// A value, or the `boost::system::error_code` saying why there is none (GCC 12 has no usable std::expected).
template <class T>
using result = boost::system::result<T>;

using boost::system::error_code;

}  // namespace keel
