#include "keel/storage/conninfo.hpp"

#include <libpq-fe.h>

#include <stdexcept>

namespace keel::storage {

std::string quote_conninfo_value(std::string_view v) {
  const bool needs = v.empty() || v.find_first_of(" \t\n\r\f\v'\\") != std::string_view::npos;
  if (!needs) return std::string(v);
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('\'');
  return out;
}

std::string conninfo_with_database(const std::string& conninfo, const std::string& dbname) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
  if (options == nullptr) {
    std::string message = error != nullptr ? error : "out of memory";
    PQfreemem(error);
    while (!message.empty() && (message.back() == '\n' || message.back() == ' '))
      message.pop_back();
    throw std::invalid_argument("cannot parse connection string: " + message);
  }
  std::string out;
  for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr || std::string_view(o->keyword) == "dbname") continue;
    out += std::string(o->keyword) + "=" + quote_conninfo_value(o->val) + " ";
  }
  PQconninfoFree(options);
  return out + "dbname=" + quote_conninfo_value(dbname);
}

}  // namespace keel::storage
