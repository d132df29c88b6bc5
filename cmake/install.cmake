# Installs the libraries, their public headers and a CMake package, so users can find_package(keel).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set_target_properties(keel_common PROPERTIES EXPORT_NAME common)
set_target_properties(keel_storage PROPERTIES EXPORT_NAME storage)
set_target_properties(keel_engine PROPERTIES EXPORT_NAME engine)
install(TARGETS keel_common keel_storage keel_engine keel_project_options EXPORT keelTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
foreach(lib IN ITEMS libcommon libstorage libengine)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${lib}/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
endforeach()
install(EXPORT keelTargets NAMESPACE keel:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/keel)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/keelConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/keelConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/keel)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/keelConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/keelConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/keelConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/keel_find_date.cmake DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/keel)
