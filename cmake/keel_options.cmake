# Compile flags shared by every project target: warnings, sanitizers.
add_library(keel_project_options INTERFACE)
target_compile_options(keel_project_options INTERFACE -Wall -Wextra -Wpedantic
  # GCC 12 misreports Asio's coroutine frame allocator (operator new/delete pair) as mismatched.
  -Wno-mismatched-new-delete)
if(KEEL_WERROR)
  target_compile_options(keel_project_options INTERFACE -Werror)
endif()

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
