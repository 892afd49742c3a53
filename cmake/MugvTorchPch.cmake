# One precompiled <torch/torch.h> for every LibTorch translation unit of the build.
#
# Parsing LibTorch's headers costs about 25 s per translation unit on a two-core machine and building a
# precompiled header about a minute, so one header per target (there were nine) cost minutes of every clean
# build. GCC accepts a precompiled header only when the code-model flags match the ones it was built with, so
# programs compile their units -fPIC like the libraries (PIC objects link into a PIE program unchanged); a
# mismatch would not fail, GCC would silently parse the headers again (-Winvalid-pch warns).
if(MUGV_WITH_TORCH)
  add_library(mugv_torch_pch OBJECT ${CMAKE_CURRENT_LIST_DIR}/torch_pch.cpp)
  target_include_directories(mugv_torch_pch SYSTEM PRIVATE ${TORCH_INCLUDE_DIRS})
  target_link_libraries(mugv_torch_pch PRIVATE ${TORCH_LIBRARIES})
  target_precompile_headers(mugv_torch_pch PRIVATE <torch/torch.h>)
endif()

# mugv_torch_pch(target [SKIP source ...]): `target`'s units include the shared LibTorch header first; the
# sources after SKIP (units that do not use LibTorch) are compiled without it.
function(mugv_torch_pch target)
  if(NOT TARGET mugv_torch_pch)
    return()
  endif()
  cmake_parse_arguments(P "" "" "SKIP" ${ARGN})
  target_precompile_headers(${target} REUSE_FROM mugv_torch_pch)
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "EXECUTABLE")
    target_compile_options(${target} PRIVATE -fPIC)
  endif()
  if(P_SKIP)
    set_source_files_properties(${P_SKIP} TARGET_DIRECTORY ${target} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
  endif()
endfunction()
