// keel — the command-line client of a Keel server's HTTP API (docs/cli.md). This file reads the command
// line and turns each way of failing into its message and exit status; commands.cpp does the work.
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>

#include "commands.hpp"
#include "errors.hpp"
#include "http_client.hpp"
#include "interrupt.hpp"

namespace {

using namespace keel::cli;

constexpr std::string_view k_default_url = "http://127.0.0.1:8080";

/// Exit statuses: 0 success, 1 the server refused or could not be reached, 2 a bad command line.
constexpr int k_failed = 1;
constexpr int k_usage = 2;

constexpr std::string_view k_global_help =
    "Options for every command:\n"
    "  --url URL        the server (env KEEL_URL; default http://127.0.0.1:8080)\n"
    "  --api-key KEY    sent as 'Authorization: Bearer KEY' (env KEEL_API_KEY)\n"
    "  --timeout SECS   how long a request may take (default 30)\n"
    "  --json           machine output: the API's JSON\n"
    "  -h, --help       this help, or a command's with `keel COMMAND --help`\n"
    "\n"
    "Exit status: 0 success; 1 the server answered with an error (stderr: 'keel: CODE: MESSAGE (HTTP\n"
    "STATUS)') or could not be reached; 2 a bad command line.\n";

void general_help(std::ostream& out) {
  out << "keel — drive a Keel server from the command line\n\nUsage: keel [OPTIONS] COMMAND [ARGS]\n\n"
         "Commands:\n";
  for (const auto& c : commands()) {
    std::string synopsis(c.synopsis);
    out << "  " << synopsis << "\n      " << c.summary << '\n';
  }
  out << "  help [COMMAND]\n      this help, or a command's\n\n" << k_global_help;
}

void command_help(std::ostream& out, const command_spec& c) {
  out << "Usage: keel " << c.synopsis << "\n\n" << c.summary << ".\n";
  if (!c.details.empty()) out << '\n' << c.details;
  out << '\n' << k_global_help;
}

bool is_option(std::string_view a) {
  // "-5" is a JSON payload, not an option; "-" alone is an argument too.
  return a.size() > 1 && a[0] == '-' && !(a[1] >= '0' && a[1] <= '9');
}

bool contains(const std::vector<std::string_view>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

struct command_line {
  const command_spec* command = nullptr;
  bool help = false;
  global_options globals;
  invocation inv;
  std::optional<std::string> url;
  std::optional<std::string> api_key;
  std::optional<std::string> timeout;
};

command_line parse(int argc, char** argv) {
  command_line cl;
  bool only_args = false;
  bool help_command = false;
  const auto where = [&] { return cl.command ? std::string(cl.command->name) : std::string(); };
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (!only_args && a == "--") {
      only_args = true;
      continue;
    }
    if (!only_args && is_option(a)) {
      const auto eq = a.find('=');
      const std::string name(a.substr(0, eq));
      const bool inline_value = eq != std::string_view::npos;
      auto value = [&]() -> std::string {
        if (inline_value) return std::string(a.substr(eq + 1));
        if (i + 1 >= argc) throw usage_error(name + " needs a value", where());
        return argv[++i];
      };
      auto no_value = [&] {
        if (inline_value) throw usage_error(name + " takes no value", where());
      };
      if (name == "--url") {
        cl.url = value();
      } else if (name == "--api-key") {
        cl.api_key = value();
      } else if (name == "--timeout") {
        cl.timeout = value();
      } else if (name == "--json") {
        no_value();
        cl.globals.json = true;
      } else if (name == "--help" || name == "-h") {
        no_value();
        cl.help = true;
      } else if (cl.command && contains(cl.command->value_options, name)) {
        if (cl.inv.values.contains(name)) throw usage_error(name + " given twice", where());
        cl.inv.values[name] = value();
      } else if (cl.command && contains(cl.command->flag_options, name)) {
        no_value();
        cl.inv.flags.insert(name);
      } else {
        throw usage_error("unknown option " + name + (cl.command ? " for " + where() : std::string()),
                          where());
      }
      continue;
    }
    if (!cl.command) {
      if (a == "help" && !help_command) {
        help_command = true;
        cl.help = true;
        continue;
      }
      cl.command = find_command(a);
      if (!cl.command) throw usage_error("unknown command '" + std::string(a) + "'");
      continue;
    }
    if (help_command) throw usage_error("help takes one command name");
    cl.inv.args.emplace_back(a);
  }
  if (cl.help) return cl;
  if (!cl.command) throw usage_error("no command given");
  const auto n = cl.inv.args.size();
  if (n < cl.command->min_args || n > cl.command->max_args)
    throw usage_error(n < cl.command->min_args ? "missing arguments" : "too many arguments", where());
  return cl;
}

std::optional<std::string> from_env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

std::chrono::milliseconds timeout_of(const std::optional<std::string>& text) {
  if (!text) return std::chrono::seconds(30);
  try {
    std::size_t used = 0;
    const double s = std::stod(*text, &used);
    if (used == text->size() && s > 0 && s <= 86400)
      return std::chrono::milliseconds(static_cast<long>(s * 1000));
  } catch (const std::exception&) {
  }
  throw usage_error("--timeout must be a number of seconds, more than 0 (at most 86400)");
}

int run(int argc, char** argv) {
  command_line cl;
  try {
    cl = parse(argc, argv);
    if (cl.help) {
      if (cl.command)
        command_help(std::cout, *cl.command);
      else
        general_help(std::cout);
      return 0;
    }
    const auto url =
        server_url::parse(cl.url ? *cl.url : from_env("KEEL_URL").value_or(std::string(k_default_url)));
    http_client client(
        url, cl.api_key ? (cl.api_key->empty() ? std::nullopt : cl.api_key) : from_env("KEEL_API_KEY"),
        timeout_of(cl.timeout));
    return cl.command->run(client, cl.globals, cl.inv);
  } catch (const usage_error& e) {
    std::cerr << "keel: " << e.what() << '\n';
    if (const auto* c = find_command(e.command()))
      std::cerr << "usage: keel " << c->synopsis << "\n(keel help " << c->name << " says more)\n";
    else
      std::cerr << "usage: keel [--url URL] [--json] COMMAND [ARGS] (keel --help lists the commands)\n";
    return k_usage;
  } catch (const api_error& e) {
    std::cerr << "keel: " << e.code() << ": " << e.what() << " (HTTP " << e.status() << ")\n";
    return k_failed;
  } catch (const unreachable& e) {
    if (interrupted()) return 0;  // the user asked a tail to stop while it was reconnecting
    std::cerr << "keel: " << e.what() << '\n';
    return k_failed;
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int status = run(argc, argv);
    std::cout.flush();
    // A closed pipe (`keel list | head`) is not worth a message: the reader has what it wanted.
    return std::cout.bad() ? k_failed : status;
  } catch (const std::exception& e) {
    std::cerr << "keel: " << e.what() << '\n';
    return k_failed;
  }
}
