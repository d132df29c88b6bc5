# keel_header_check: compiles every public header on its own, so each one includes what it uses.
function(keel_add_header_check)
  file(GLOB_RECURSE headers CONFIGURE_DEPENDS
    ${PROJECT_SOURCE_DIR}/libcommon/include/*.hpp
    ${PROJECT_SOURCE_DIR}/libstorage/include/*.hpp
    ${PROJECT_SOURCE_DIR}/libengine/include/*.hpp)
  set(sources "")
  foreach(h IN LISTS headers)
    file(RELATIVE_PATH rel ${PROJECT_SOURCE_DIR} ${h})
    string(REGEX REPLACE "[/.]" "_" stem "${rel}")
    set(src ${CMAKE_BINARY_DIR}/header_check/${stem}.cpp)
    file(CONFIGURE OUTPUT ${src} CONTENT "#include \"${h}\"\n")
    list(APPEND sources ${src})
  endforeach()
  add_library(keel_header_check OBJECT ${sources})
  target_link_libraries(keel_header_check PRIVATE keel::engine keel::storage keel::common keel_project_options)
endfunction()
