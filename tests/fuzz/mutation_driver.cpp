// A seeded mutation fuzzer for builds without libFuzzer (g++, CI): replays every corpus file through
// LLVMFuzzerTestOneInput, then mutates corpus entries for a time or iteration budget. It is not guided by
// coverage: the corpus and the dictionary carry it to the deep paths, and the ASan+UBSan configuration
// (scripts/test.sh --sanitize address) lets it see what a plain build would not. On a finding it prints the
// seed, the iteration and the input (hex), and saves the input, which `fuzz_http FILE` replays.
//
// Usage: fuzz_http [--seconds S] [--iterations N] [--seed N] [--max-len BYTES] [--dict FILE] PATH...
// (PATH: corpus directories or files; with neither budget, the inputs are replayed only.)
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
// Present when linked with a sanitizer runtime (GCC's and clang's): called before a sanitizer's report ends
// the process, which no signal handler would see.
extern "C" void __sanitizer_set_death_callback(void (*callback)()) __attribute__((weak));

namespace {

using bytes = std::vector<std::uint8_t>;
namespace fs = std::filesystem;

constexpr const char* k_finding_file = "fuzz_http-finding.bin";

// The input being run, for the reports below (read from signal handlers: plain globals, written before each
// run).
const std::uint8_t* g_input = nullptr;
std::size_t g_input_size = 0;
std::uint64_t g_seed = 0;
std::uint64_t g_iteration = 0;
volatile std::sig_atomic_t g_reported = 0;

// Async-signal-safe output: write(2) only.
void put(std::string_view s) {
  while (!s.empty()) {
    const auto n = ::write(STDERR_FILENO, s.data(), s.size());
    if (n <= 0) return;
    s.remove_prefix(static_cast<std::size_t>(n));
  }
}
void put_number(std::uint64_t v) {
  char text[24];
  char* p = text + sizeof text;
  do {
    *--p = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  put({p, static_cast<std::size_t>(text + sizeof text - p)});
}

/// Says which input failed and saves it; once, from whichever of a signal or a sanitizer's death comes first.
void report_input() {
  if (g_reported != 0 || g_input == nullptr) return;
  g_reported = 1;
  put("fuzz_http: the failing input: seed ");
  put_number(g_seed);
  put(", iteration ");
  put_number(g_iteration);
  put(" (0: the corpus replay), ");
  put_number(g_input_size);
  put(" bytes, hex:\n");
  static constexpr char k_hex[] = "0123456789abcdef";
  char line[2 * 40 + 1];
  for (std::size_t i = 0; i < g_input_size; i += 40) {
    std::size_t n = 0;
    for (std::size_t j = i; j < g_input_size && j < i + 40; ++j) {
      line[n++] = k_hex[g_input[j] >> 4];
      line[n++] = k_hex[g_input[j] & 15];
    }
    line[n++] = '\n';
    put({line, n});
  }
  const int fd = ::open(k_finding_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    std::size_t done = 0;
    while (done < g_input_size) {
      const auto n = ::write(fd, g_input + done, g_input_size - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    ::close(fd);
    put("fuzz_http: saved as ");
    put(k_finding_file);
    put(" (replay: fuzz_http ");
    put(k_finding_file);
    put(")\n");
  }
}

void on_fatal_signal(int sig) {
  report_input();
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void run(const bytes& input, std::uint64_t iteration) {
  g_input = input.data();
  g_input_size = input.size();
  g_iteration = iteration;
  LLVMFuzzerTestOneInput(input.data(), input.size());
}

/// One dictionary line (libFuzzer/AFL format: `name="value"` or `"value"`, escapes \\ \" \xNN).
std::optional<bytes> dict_entry(std::string_view line) {
  const auto open = line.find('"');
  const auto close = line.rfind('"');
  if (line.empty() || line[0] == '#' || open == std::string_view::npos || close <= open) return std::nullopt;
  bytes out;
  for (std::size_t i = open + 1; i < close; ++i) {
    if (line[i] != '\\' || i + 1 >= close) {
      out.push_back(static_cast<std::uint8_t>(line[i]));
    } else if (line[i + 1] == 'x' && i + 3 < close) {
      out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(line.substr(i + 2, 2)), nullptr, 16)));
      i += 3;
    } else {
      out.push_back(static_cast<std::uint8_t>(line[++i]));
    }
  }
  return out;
}

bytes read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bytes text(std::string_view s) {
  return bytes(s.begin(), s.end());
}

/// Mutations of HTTP requests: blind byte edits, splices, and the values parsers get wrong (huge lengths
/// and chunk sizes, %00, overlong UTF-8, deep nesting), from a seeded PRNG so that a run repeats exactly.
class mutator {
 public:
  mutator(std::uint64_t seed, std::vector<bytes> dict, std::size_t max_len)
      : rng_(seed), dict_(std::move(dict)), max_len_(max_len) {
    for (std::string_view s :
         {"0", "-1", "1", "2147483647", "2147483648", "4294967296", "9223372036854775807",
          "9223372036854775808", "18446744073709551615", "18446744073709551616", "99999999999999999999999999",
          "1e999", "-0", "0x10", "ffffffffffffffff", "fffffffffffffffff", "00000000000000000000001", " 1",
          "+1"})
      numbers_.push_back(text(s));
  }

  bytes mutate(const bytes& in, const bytes& other) {
    bytes b = in;
    const auto edits = 1 + below(4);
    for (std::size_t e = 0; e < edits; ++e)
      edit(b, other);
    if (b.size() > max_len_) b.resize(max_len_);
    return b;
  }

  std::size_t below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(rng_() % n); }

 private:
  void edit(bytes& b, const bytes& other) {
    static constexpr std::uint8_t k_bytes[] = {0,   0xff, 0x7f, 0x80, 0xc0, '\r', '\n', ' ', '\t', ':', '%',
                                               '"', '{',  '}',  '[',  ']',  ',',  '0',  '9', 'f',  '/', '?'};
    const auto at = below(b.size() + 1);
    switch (below(12)) {
      case 0:  // a bit
        if (!b.empty()) b[below(b.size())] ^= static_cast<std::uint8_t>(1u << below(8));
        break;
      case 1:  // a byte
        if (!b.empty()) b[below(b.size())] = k_bytes[below(sizeof k_bytes)];
        break;
      case 2: {  // random bytes in
        const auto n = 1 + below(8);
        for (std::size_t i = 0; i < n; ++i)
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), static_cast<std::uint8_t>(rng_()));
        break;
      }
      case 3: {  // a range out
        const auto n = std::min(b.size() - std::min(at, b.size()), 1 + below(16));
        b.erase(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(at + n));
        break;
      }
      case 4: {  // a range repeated (a header twice, a pipelined request)
        if (b.empty()) break;
        const auto from = below(b.size());
        const auto n = 1 + below(std::min<std::size_t>(b.size() - from, 256));
        const bytes piece(b.begin() + static_cast<std::ptrdiff_t>(from),
                          b.begin() + static_cast<std::ptrdiff_t>(from + n));
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), piece.begin(), piece.end());
        break;
      }
      case 5: {  // another entry's tail after this one's head
        const auto from = below(other.size() + 1);
        b.resize(at);
        b.insert(b.end(), other.begin() + static_cast<std::ptrdiff_t>(from), other.end());
        break;
      }
      case 6:
      case 7: {  // a dictionary token, inserted or written over
        if (dict_.empty()) break;
        const auto& t = dict_[below(dict_.size())];
        if (below(2) == 0) {
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), t.begin(), t.end());
        } else {
          b.resize(std::max(b.size(), at + t.size()));
          std::copy(t.begin(), t.end(), b.begin() + static_cast<std::ptrdiff_t>(at));
        }
        break;
      }
      case 8: {  // a number (Content-Length, a chunk size, a limit, a priority) made interesting
        const auto digit = std::find_if(b.begin() + static_cast<std::ptrdiff_t>(std::min(at, b.size())),
                                        b.end(), [](std::uint8_t c) { return std::isxdigit(c) != 0; });
        if (digit == b.end()) break;
        const auto end = std::find_if(digit, b.end(), [](std::uint8_t c) { return std::isxdigit(c) == 0; });
        const auto& n = numbers_[below(numbers_.size())];
        const auto pos = b.erase(digit, end);
        b.insert(pos, n.begin(), n.end());
        break;
      }
      case 9: {  // deep nesting
        static constexpr std::string_view k_open[] = {"[", "{\"a\":", "[{\"input\":"};
        const auto open = k_open[below(std::size(k_open))];
        const auto depth = 1 + below(below(2) == 0 ? 200 : 5000);
        bytes nest;
        for (std::size_t i = 0; i < depth; ++i)
          nest.insert(nest.end(), open.begin(), open.end());
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), nest.begin(), nest.end());
        break;
      }
      case 10:  // cut short
        b.resize(at);
        break;
      default: {  // a byte's overlong UTF-8 or percent-encoded form
        static constexpr std::string_view k_tricks[] = {
            "%00",          "%2F",          "%2f",     "%2E%2E",  "%C0%AF",    "%FF", "%", "\xC0\xAF",
            "\xE0\x80\xAF", "\xED\xA0\x80", "\\u0000", "\\ud800", "%E2%80%AE", "..",  "//"};
        const auto t = k_tricks[below(std::size(k_tricks))];
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), t.begin(), t.end());
        break;
      }
    }
  }

  std::mt19937_64 rng_;
  std::vector<bytes> dict_;
  std::vector<bytes> numbers_;
  std::size_t max_len_;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "fuzz_http: %s\nusage: fuzz_http [--seconds S] [--iterations N] [--seed N] [--max-len BYTES] "
               "[--dict FILE] PATH...\n",
               why);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 0;
  std::uint64_t iterations = 0;
  std::optional<std::uint64_t> seed;
  std::size_t max_len = 8192;
  std::vector<bytes> dict;
  std::vector<fs::path> inputs;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage("an option without its value");
      return argv[++i];
    };
    if (a == "--seconds") {
      seconds = std::stod(value());
    } else if (a == "--iterations") {
      iterations = std::stoull(value());
    } else if (a == "--seed") {
      seed = std::stoull(value());
    } else if (a == "--max-len") {
      max_len = std::stoull(value());
    } else if (a == "--dict") {
      std::ifstream in(value());
      if (!in) usage("cannot read the dictionary");
      for (std::string line; std::getline(in, line);)
        if (auto e = dict_entry(line)) dict.push_back(std::move(*e));
    } else if (a.starts_with("--")) {
      usage("unknown option");
    } else {
      inputs.emplace_back(a);
    }
  }

  std::vector<bytes> corpus;
  for (const auto& p : inputs) {
    if (fs::is_directory(p)) {
      std::vector<fs::path> files;
      for (const auto& e : fs::recursive_directory_iterator(p))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());  // the same order on every machine: a seed means one run
      for (const auto& f : files)
        corpus.push_back(read_file(f));
    } else if (fs::is_regular_file(p)) {
      corpus.push_back(read_file(p));
    } else {
      usage(("no such file or directory: " + p.string()).c_str());
    }
  }
  if (corpus.empty()) usage("no inputs");

  g_seed =
      seed.value_or(static_cast<std::uint64_t>(std::random_device{}()) << 32 ^
                    static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()));
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL})
    std::signal(sig, on_fatal_signal);
  if (__sanitizer_set_death_callback != nullptr) __sanitizer_set_death_callback(report_input);

  for (const auto& input : corpus)
    run(input, 0);
  std::fprintf(stderr, "fuzz_http: replayed %zu inputs\n", corpus.size());
  if (seconds <= 0 && iterations == 0) return 0;

  std::fprintf(stderr, "fuzz_http: seed %llu, %zu dictionary tokens\n",
               static_cast<unsigned long long>(g_seed), dict.size());
  mutator m(g_seed, std::move(dict), max_len);
  // Some mutants join the pool, so that edits compound; the corpus itself is never displaced.
  std::vector<bytes> pool = corpus;
  constexpr std::size_t k_extra = 1024;
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                    std::chrono::duration<double>(seconds));
  std::uint64_t done = 0;
  while ((iterations == 0 || done < iterations) &&
         (seconds <= 0 || std::chrono::steady_clock::now() < deadline)) {
    const auto& a = pool[m.below(pool.size())];
    const auto& b = pool[m.below(pool.size())];
    auto mutant = m.mutate(a, b);
    run(mutant, ++done);
    if (m.below(8) == 0) {
      if (pool.size() < corpus.size() + k_extra) {
        pool.push_back(std::move(mutant));
      } else {
        pool[corpus.size() + m.below(k_extra)] = std::move(mutant);
      }
    }
  }
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  std::fprintf(stderr, "fuzz_http: %llu mutated inputs in %.1f s (%.0f/s), no finding; seed %llu\n",
               static_cast<unsigned long long>(done), took.count(), static_cast<double>(done) / took.count(),
               static_cast<unsigned long long>(g_seed));
  return 0;
}
