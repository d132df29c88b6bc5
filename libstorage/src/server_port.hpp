// The embedded server's port: with no TCP listener it only names the unix socket, .s.PGSQL.<port>.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "keel/common/result.hpp"

namespace keel::storage::detail {

/// The socket the server creates in `socket_dir` for `port`; PostgreSQL locks it with "<socket>.lock".
std::filesystem::path socket_file(const std::filesystem::path& socket_dir, unsigned short port);

/// Why the socket path is too long for a unix socket address, if it is.
std::optional<std::string> socket_path_problem(const std::filesystem::path& socket_dir, unsigned short port);

/// A port whose socket and lock file do not exist in `socket_dir`. Errors (logged): none found.
result<unsigned short> pick_port(const std::filesystem::path& socket_dir);

/// True when a server's log says it could not start because another process holds its socket.
bool socket_was_taken(std::string_view server_log);

}  // namespace keel::storage::detail
