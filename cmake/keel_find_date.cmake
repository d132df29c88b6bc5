# Defines date::date-tz: Howard Hinnant's date/tz library (Debian: libhowardhinnant-date-dev), which libengine
# uses for IANA time zones (GCC 12 has no std::chrono::zoned_time). Prefers the package's CMake config and falls
# back to find_path/find_library. Either way the library must be the build that reads the system's tzdata
# (USE_OS_TZDB=1, as Debian's is): Keel never downloads a time zone database. Included by keelConfig.cmake too.
if(NOT TARGET date::date-tz)
  find_package(date CONFIG QUIET)
endif()
if(TARGET date::date-tz)
  get_target_property(_keel_date_defs date::date-tz INTERFACE_COMPILE_DEFINITIONS)
  if(NOT "USE_OS_TZDB=1" IN_LIST _keel_date_defs)
    message(FATAL_ERROR "date::date-tz is not built with USE_OS_TZDB=1 (the system tzdata); Keel needs that build "
                        "(Debian: libhowardhinnant-date-dev)")
  endif()
  unset(_keel_date_defs)
else()
  find_path(KEEL_DATE_INCLUDE_DIR date/tz.h)
  find_library(KEEL_DATE_TZ_LIBRARY NAMES date-tz)
  if(NOT KEEL_DATE_INCLUDE_DIR OR NOT KEEL_DATE_TZ_LIBRARY)
    message(FATAL_ERROR "Keel needs Howard Hinnant's date library with tz, built with USE_OS_TZDB=1 "
                        "(Debian: apt-get install libhowardhinnant-date-dev tzdata)")
  endif()
  add_library(date::date-tz UNKNOWN IMPORTED)
  set_target_properties(date::date-tz PROPERTIES
    IMPORTED_LOCATION "${KEEL_DATE_TZ_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${KEEL_DATE_INCLUDE_DIR}"
    # The library's ABI depends on these: they must be the ones it was built with (Debian's).
    INTERFACE_COMPILE_DEFINITIONS "USE_OS_TZDB=1;HAS_STRING_VIEW=1;ONLY_C_LOCALE=1"
    INTERFACE_LINK_LIBRARIES Threads::Threads)
endif()
