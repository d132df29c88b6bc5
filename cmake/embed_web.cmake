# Writes OUTPUT: a C++ source holding every file under WEB_DIR (the dashboard's HTML, CSS, JavaScript, SVG) as
# a raw string, with its content type and an ETag (a hash of its contents), so keeld serves them from memory:
# nothing to install beside the binary, and nothing fetched from elsewhere at run time.
file(GLOB_RECURSE files RELATIVE "${WEB_DIR}" "${WEB_DIR}/*")
list(SORT files)
set(body "")
set(delimiter "keelweb")
foreach(f IN LISTS files)
  if(f MATCHES "(^|/)\\.")  # editor and OS leftovers (.swp, .DS_Store)
    continue()
  endif()
  get_filename_component(ext "${f}" LAST_EXT)
  string(TOLOWER "${ext}" ext)
  if(ext STREQUAL ".html")
    set(type "text/html; charset=utf-8")
  elseif(ext STREQUAL ".js")
    set(type "text/javascript; charset=utf-8")
  elseif(ext STREQUAL ".css")
    set(type "text/css; charset=utf-8")
  elseif(ext STREQUAL ".svg")
    set(type "image/svg+xml")
  elseif(ext STREQUAL ".json")
    set(type "application/json")
  elseif(ext STREQUAL ".txt" OR ext STREQUAL ".md")
    set(type "text/plain; charset=utf-8")
  else()
    message(FATAL_ERROR "embed_web: ${f}: no content type for '${ext}' files (text assets only)")
  endif()
  file(READ "${WEB_DIR}/${f}" text)
  string(FIND "${text}" ")${delimiter}\"" clash)
  if(NOT clash EQUAL -1)
    message(FATAL_ERROR "embed_web: ${f} contains the raw-string delimiter )${delimiter}\"")
  endif()
  file(SHA256 "${WEB_DIR}/${f}" digest)
  string(SUBSTRING "${digest}" 0 20 digest)
  string(APPEND body "    {\"${f}\", \"${type}\", \"\\\"${digest}\\\"\", R\"${delimiter}(${text})${delimiter}\"},\n")
endforeach()
file(WRITE "${OUTPUT}.tmp" "// Generated from ${WEB_DIR} by cmake/embed_web.cmake. Do not edit.
#include \"web_assets.hpp\"

namespace keel::http::detail {

const web_asset* find_web_asset(std::string_view path) {
  static constexpr web_asset all[] = {
${body}  };
  for (const auto& a : all)
    if (a.path == path) return &a;
  return nullptr;
}

}  // namespace keel::http::detail
")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
