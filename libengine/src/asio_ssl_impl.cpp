// The one translation unit that compiles Asio's SSL support (BOOST_ASIO_SEPARATE_COMPILATION), for ctx.fetch:
// here rather than in keel::common so that only keel::engine links OpenSSL's libssl.
#include <boost/asio/ssl/impl/src.hpp>
