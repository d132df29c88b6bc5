// The embedded server's port: picking a free one, and the unix socket path it implies.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "keel/common/result.hpp"

namespace keel::storage::detail {

/// The socket the server creates in `socket_dir` for `port`.
std::filesystem::path socket_file(const std::filesystem::path& socket_dir, unsigned short port);

/// Why the socket path is too long for a unix socket address, if it is.
std::optional<std::string> socket_path_problem(const std::filesystem::path& socket_dir, unsigned short port);

/// A TCP port free on 127.0.0.1 right now. Errors (logged): none could be bound.
result<unsigned short> pick_free_port();

/// True when a server's log says its port was taken before it could bind it.
bool port_was_taken(std::string_view server_log);

}  // namespace keel::storage::detail
