# The Debian packages, as a user gets them (packaging/run.sh): cpack makes them from this build tree, they are
# unpacked into an empty directory and checked, and tests/consumer is built against them and run. Once, in the
# default configuration: what it checks does not change with sanitizers or the build type.
if(KEEL_CONFIG_INDEPENDENT_TESTS)
  # keel_installed_libraries: the library targets cmake/install.cmake installs.
  add_test(NAME packaging_test
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/packaging/run.sh ${CMAKE_BINARY_DIR} ${CMAKE_INSTALL_LIBDIR}
                   ${keel_installed_libraries})
  set_tests_properties(packaging_test PROPERTIES TIMEOUT 600)
endif()
