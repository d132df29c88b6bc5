// The dashboard's files (libhttp/web/), compiled into the binary by cmake/embed_web.cmake.
#pragma once

#include <string_view>

namespace keel::http::detail {

struct web_asset {
  std::string_view path;  ///< relative to libhttp/web/, e.g. "index.html", "js/runs.js"
  std::string_view content_type;
  std::string_view etag;  ///< quoted, as the header carries it
  std::string_view body;
};

/// The asset at `path`, or nullptr.
const web_asset* find_web_asset(std::string_view path);

}  // namespace keel::http::detail
