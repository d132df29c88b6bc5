# Writes OUTPUT: a C++ source holding every migration in SQL_DIR (NNN_name.sql) as a raw string, in order.
file(GLOB files RELATIVE "${SQL_DIR}" "${SQL_DIR}/*.sql")
list(SORT files)
set(body "")
foreach(f IN LISTS files)
  file(READ "${SQL_DIR}/${f}" sql)
  string(REGEX MATCH "^([0-9]+)_(.*)\\.sql$" _ "${f}")
  # As a decimal number: "008" written as it is would be an (invalid) octal literal, and "010" eight.
  math(EXPR version "${CMAKE_MATCH_1}" OUTPUT_FORMAT DECIMAL)
  set(body "${body}    {${version}, \"${CMAKE_MATCH_2}\", R\"keelsql(${sql})keelsql\"},\n")
endforeach()
file(WRITE "${OUTPUT}.tmp" "// Generated from ${SQL_DIR} by cmake/embed_sql.cmake. Do not edit.\n#include \"migrations.hpp\"\n\nnamespace keel::storage::detail {\n\nconst std::vector<migration>& migrations() {\n  static const std::vector<migration> all{\n${body}  };\n  return all;\n}\n\n}  // namespace keel::storage::detail\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
