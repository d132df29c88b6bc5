# keel_add_man_page(program description): section 1 man page of an executable target, made from its --help
# at build time and installed with the runtime component. help2man (Debian: help2man) lays it out; without
# it, the --help text goes into a plain page (help_to_man.cmake), so a build never depends on it.
find_program(KEEL_HELP2MAN help2man)

function(keel_add_man_page program description)
  # A sanitized build is for tests, not packages: its programs need not run at build time.
  if(KEEL_SANITIZE)
    return()
  endif()
  set(page ${CMAKE_CURRENT_BINARY_DIR}/man/${program}.1)
  if(KEEL_HELP2MAN)
    # --version-string: neither program has --version, and the page should carry the project's.
    set(generate ${KEEL_HELP2MAN} --no-info --section=1 "--name=${description}"
      --version-string=${PROJECT_VERSION} "--source=Keel ${PROJECT_VERSION}" --output=${page}
      $<TARGET_FILE:${program}>)
    set(script "")
  else()
    set(script ${PROJECT_SOURCE_DIR}/cmake/help_to_man.cmake)
    set(generate ${CMAKE_COMMAND} -DPROGRAM=$<TARGET_FILE:${program}> -DNAME=${program}
      "-DDESCRIPTION=${description}" -DVERSION=${PROJECT_VERSION} -DOUTPUT=${page} -P ${script})
  endif()
  add_custom_command(OUTPUT ${page}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_CURRENT_BINARY_DIR}/man
    COMMAND ${generate}
    DEPENDS ${program} ${script}
    COMMENT "Writing the man page ${program}.1 from ${program} --help"
    VERBATIM)
  add_custom_target(${program}_man_page ALL DEPENDS ${page})
  install(FILES ${page} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT runtime)
endfunction()
