# Compile flags shared by every project target: warnings, sanitizers.
# The static libraries link it PRIVATE, so install(EXPORT) must export it too; BUILD_INTERFACE keeps the flags
# out of that export, so a find_package(keel) consumer never gets our warnings or -Werror.
add_library(keel_project_options INTERFACE)
set(keel_warning_flags -Wall -Wextra -Wpedantic
  # GCC 12 misreports Asio's coroutine frame allocator (operator new/delete pair) as mismatched.
  -Wno-mismatched-new-delete)
if(KEEL_WERROR)
  list(APPEND keel_warning_flags -Werror)
endif()
target_compile_options(keel_project_options INTERFACE "$<BUILD_INTERFACE:${keel_warning_flags}>")

if(NOT KEEL_SANITIZE STREQUAL "")
  # -O1 (after the build type's -O2): sanitizer builds compile faster and keep usable stacks.
  add_compile_options(-O1)
endif()
if(KEEL_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(KEEL_SANITIZE STREQUAL "thread")
  # Asio uses std::atomic_thread_fence, which GCC warns TSan cannot model (-Wtsan).
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer -Wno-tsan)
  add_link_options(-fsanitize=thread)
elseif(NOT KEEL_SANITIZE STREQUAL "")
  message(FATAL_ERROR "KEEL_SANITIZE must be empty, 'address' or 'thread'")
endif()

# libFuzzer (clang only; scripts/fuzz.sh configures it in build-fuzz/ with KEEL_SANITIZE=address): coverage
# instrumentation for every target, and the fuzz targets link libFuzzer's main instead of the built-in driver.
option(KEEL_LIBFUZZER "Build the fuzz targets for libFuzzer (clang)" OFF)
if(KEEL_LIBFUZZER)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "KEEL_LIBFUZZER needs clang (CXX=clang++)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()
if(KEEL_SANITIZE STREQUAL "address" AND CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  # clang 14 cannot emit -fsanitize=function's checks in coroutines ("Cannot represent a difference across
  # sections" from its assembler); the other UBSan checks stay.
  add_compile_options(-fno-sanitize=function)
endif()
