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

# Even with the shared header a LibTorch unit costs about 22 s here: 7 s to load the 580 MB header and most of
# the rest instantiating the same LibTorch templates (modules, tensor operators) that every unit instantiates
# again. Compiling a target's units MUGV_TORCH_UNITY_BATCH at a time (a unity build) pays both once per batch:
# the LibTorch units of a clean build went from about 26 to 12 CPU-minutes (docs/BENCHMARKS.md "Test suite").
# The price is that changing one file recompiles its batch; -DMUGV_TORCH_UNITY_BATCH=1 compiles each unit
# alone. Sources of a batch share one unit, so names in their anonymous namespaces must differ.
#
# mugv_torch_pch(target [SKIP source ...]): `target`'s units include the shared LibTorch header first and are
# batched; the sources after SKIP (units that do not use LibTorch) are compiled alone without it.
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
  if(MUGV_TORCH_UNITY_BATCH GREATER 1)
    set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE ${MUGV_TORCH_UNITY_BATCH})
  endif()
  if(P_SKIP)
    set_source_files_properties(${P_SKIP} TARGET_DIRECTORY ${target}
      PROPERTIES SKIP_PRECOMPILE_HEADERS ON SKIP_UNITY_BUILD_INCLUSION ON)
  endif()
endfunction()
