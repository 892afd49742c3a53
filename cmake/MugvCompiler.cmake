# Compiler settings shared by every target: warnings, ccache, sanitizers.
if(MUGV_USE_CCACHE)
  find_program(MUGV_CCACHE ccache)
  if(MUGV_CCACHE)
    set(CMAKE_C_COMPILER_LAUNCHER   "${MUGV_CCACHE}")
    set(CMAKE_CXX_COMPILER_LAUNCHER "${MUGV_CCACHE}")
    set(CMAKE_CUDA_COMPILER_LAUNCHER "${MUGV_CCACHE}")
  endif()
endif()

# RelWithDebInfo (the default build type) keeps line tables only (-g1): backtraces, profiles and sanitizer
# reports still name files and lines, while full debug info for LibTorch's templates made objects 25 times larger
# and their compiles a quarter slower. A Debug build has full debug info.
foreach(lang C CXX)
  if(CMAKE_${lang}_FLAGS_RELWITHDEBINFO STREQUAL "-O2 -g -DNDEBUG")
    set(CMAKE_${lang}_FLAGS_RELWITHDEBINFO "-O2 -g1 -DNDEBUG")
  endif()
endforeach()

add_library(mugv_warnings INTERFACE)
add_library(mugv::warnings ALIAS mugv_warnings)
target_compile_options(mugv_warnings INTERFACE -Wall -Wextra -Wno-unused-parameter)

if(MUGV_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# The programs a user runs (mugv, mugv-worker, mugv-studio, ...) land together in <build>/bin, so each can
# find the others beside itself, as it does when installed.
function(mugv_program target)
  set_target_properties(${target} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bin)
  install(TARGETS ${target} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endfunction()
