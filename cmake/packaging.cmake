# Debian packages of the two install components (cmake/install.cmake), built by `cpack` in a build tree or by
# `cmake --build build --target package` (which builds everything first):
#   keel      keeld, keel, their man pages, keeld's systemd unit, the CLI's bash completion
#   keel-dev  the static libraries, their headers, find_package(keel)
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME keel)
set(CPACK_PACKAGE_VENDOR Keel)
# dpkg-deb insists on a maintainer.
set(CPACK_PACKAGE_CONTACT "Keel maintainers <keel@localhost>")
# Debian ships executables stripped and archives without debug sections (install.cmake strips those).
set(CPACK_STRIP_FILES ON)
# keel_0.1.0_amd64.deb, keel-dev_0.1.0_amd64.deb
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)

set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL runtime development)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME keel)
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_NAME keel-dev)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION net)
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_SECTION libdevel)

# keel: the shared libraries keeld and keel load, as dpkg-shlibdeps reads them off the binaries (libpq5,
# libboost-{json,url,program-options}1.81.0, libssl3, libdate-tz3, libstdc++6 ...), and besides them: the
# PostgreSQL server keeld embeds by default (it runs initdb and pg_ctl), tzdata for cron schedules' time zones
# (date-tz reads /usr/share/zoneinfo), adduser for the postinst that creates the service's user.
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_DEPENDS "postgresql-15, tzdata, adduser")
# A description's first line is its synopsis (so no CPACK_PACKAGE_DESCRIPTION_SUMMARY, which CPack would put
# above both packages' own); CPack indents the others as a control file wants.
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION "Keel durable workflow engine: server and command-line client
keeld serves Keel's HTTP API and web dashboard, on an embedded PostgreSQL by
default or on one of yours; keel drives it from the command line. Includes a
systemd unit for keeld (as the system user keel, data in /var/lib/keel), man
pages, and bash completion for keel.")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_EXTRA
  ${PROJECT_SOURCE_DIR}/packaging/debian/postinst ${PROJECT_SOURCE_DIR}/packaging/debian/prerm
  ${PROJECT_SOURCE_DIR}/packaging/debian/postrm)
# Maintainer scripts 0755 whatever the checkout's modes.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

# keel-dev: what keelConfig.cmake finds. The static libraries link libpq, libssl, libcrypto, date-tz and
# Boost.JSON and URL into the consumer, and the headers include Boost (Asio, JSON, System).
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_DEPENDS
  "libboost1.81-dev, libboost-json1.81-dev, libboost-url1.81-dev, libpq-dev, libssl-dev, libhowardhinnant-date-dev")
set(CPACK_DEBIAN_DEVELOPMENT_DESCRIPTION "Keel durable workflow engine: libraries and headers
Workflows as C++20 coroutines whose steps are checkpointed in PostgreSQL. The
static libraries keel::common, keel::storage, keel::engine, keel::http and
keel::testing with their headers, and the CMake package: find_package(keel).")
# keel-dev depends on keel of the same version (CPack writes the Depends entry from the component's DEPENDS).
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)

# `package_source`: the checkout, without build trees and what tests fetch into them.
set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build[^/]*/" "/node_modules/")

include(CPack)
cpack_add_component(runtime DISPLAY_NAME "keeld and keel")
cpack_add_component(development DISPLAY_NAME "libraries and headers" DEPENDS runtime)
