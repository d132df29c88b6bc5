// The web dashboard's files: `/` (the page) and `/ui/…` (its scripts, styles and icons), served from memory.
#pragma once

#include "api.hpp"

namespace keel::http::detail {

/// True for `/` and `/ui/…` (any method: the answer to another than GET or HEAD is 405). They hold no
/// data, so they need no API key: the page asks for one and sends it with its API calls.
bool is_dashboard(std::string_view target_text);

/// The file, with its content type, ETag (a 304 when If-None-Match holds it), and headers that keep the
/// page from running anything but its own scripts (Content-Security-Policy) or being framed.
response dashboard(const request& req);

}  // namespace keel::http::detail
