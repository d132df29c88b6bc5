# What `cmake --install` puts where, in two components that cmake/packaging.cmake turns into Debian packages:
#   runtime      keeld, the keel CLI, their man pages, keeld's systemd unit, the CLI's bash completion
#   development  the static libraries, their public headers and the CMake package behind find_package(keel)
# `cmake --install build --component runtime` installs one of them.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# --- runtime ---------------------------------------------------------------------------------------------------
install(TARGETS keeld keel RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
include(${CMAKE_CURRENT_LIST_DIR}/man_pages.cmake)
keel_add_man_page(keeld "the Keel durable workflow server")
keel_add_man_page(keel "drive a Keel server from the command line")
install(FILES ${PROJECT_SOURCE_DIR}/packaging/keel.bash-completion
  DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME keel COMPONENT runtime)
# The unit names keeld by its installed path, which is known only at install time: cpack installs under /usr
# (the Debian packages' prefix) from a tree configured for /usr/local.
install(CODE "
  set(KEELD \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}/keeld\")
  configure_file(\"${PROJECT_SOURCE_DIR}/packaging/keeld.service.in\"
                 \"${CMAKE_CURRENT_BINARY_DIR}/packaging/keeld.service\" @ONLY)
  file(INSTALL \"${CMAKE_CURRENT_BINARY_DIR}/packaging/keeld.service\"
       DESTINATION \"\${CMAKE_INSTALL_PREFIX}/lib/systemd/system\")" COMPONENT runtime)

# --- development -----------------------------------------------------------------------------------------------
set(keel_installed_libraries keel_common keel_storage keel_engine keel_http)
set(keel_installed_headers libcommon libstorage libengine libhttp)
if(TARGET keel_testing)
  list(APPEND keel_installed_libraries keel_testing)
  list(APPEND keel_installed_headers libtesting)
endif()
foreach(lib IN LISTS keel_installed_libraries)
  string(REGEX REPLACE "^keel_" "" short ${lib})
  set_target_properties(${lib} PROPERTIES EXPORT_NAME ${short})
endforeach()
# keel_project_options is linked PRIVATE by the static libraries, so the export must name it too.
install(TARGETS ${keel_installed_libraries} keel_project_options EXPORT keelTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT development)
foreach(dir IN LISTS keel_installed_headers)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
    COMPONENT development)
endforeach()
# `--strip` (and cpack, see packaging.cmake) strips the executables; CMake leaves static archives alone, whose
# debug sections are 95% of a RelWithDebInfo build's size. --strip-debug keeps the symbols they link by.
if(CMAKE_STRIP)
  foreach(lib IN LISTS keel_installed_libraries)
    install(CODE "
      if(CMAKE_INSTALL_DO_STRIP)
        execute_process(COMMAND \"${CMAKE_STRIP}\" --strip-debug
          \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/$<TARGET_FILE_NAME:${lib}>\"
          COMMAND_ERROR_IS_FATAL ANY)
      endif()" COMPONENT development)
  endforeach()
endif()
install(EXPORT keelTargets NAMESPACE keel:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/keel COMPONENT development)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/keelConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/keelConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/keel)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/keelConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/keelConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/keelConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/keel_find_date.cmake DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/keel
  COMPONENT development)
