# Finds the third-party libraries. Each is required only by the layers that use it, so a build
# with some options off needs fewer packages.
#
# The compute-only build (MUGV_COMPUTE_ONLY, README "Building for a GPU machine") needs LibTorch, nlohmann/json,
# toml++, libsodium and SentencePiece only. A GPU machine may lack the last few: scripts/device-deps.sh copies them
# from a machine that has them into .device-deps/ (include/, lib/), which is searched when pkg-config does not
# find a package. Every dependency is then named by one target, mugv::<name>, whichever way it was found.
set(MUGV_DEVICE_DEPS_DIR "${PROJECT_SOURCE_DIR}/.device-deps" CACHE PATH
    "Headers and libraries carried to a machine that lacks them (scripts/device-deps.sh)")
if(MUGV_COMPUTE_ONLY)
  find_package(PkgConfig)
else()
  find_package(PkgConfig REQUIRED)
endif()
find_package(Threads REQUIRED)

# mugv_dependency(NAME PKG <pkg-config name> HEADER <file> [LIBS <library names>]): defines mugv::NAME from
# pkg-config when it finds PKG, else from the header (and libraries) under MUGV_DEVICE_DEPS_DIR or the system.
function(mugv_dependency name)
  cmake_parse_arguments(dep "" "PKG;HEADER" "LIBS" ${ARGN})
  add_library(mugv_dep_${name} INTERFACE IMPORTED GLOBAL)
  add_library(mugv::${name} ALIAS mugv_dep_${name})
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(MUGV_PC_${name} QUIET IMPORTED_TARGET GLOBAL ${dep_PKG})
    if(MUGV_PC_${name}_FOUND)
      target_link_libraries(mugv_dep_${name} INTERFACE PkgConfig::MUGV_PC_${name})
      return()
    endif()
  endif()
  find_path(MUGV_${name}_INCLUDE_DIR ${dep_HEADER} HINTS ${MUGV_DEVICE_DEPS_DIR}/include)
  if(NOT MUGV_${name}_INCLUDE_DIR)
    message(FATAL_ERROR "${name}: ${dep_HEADER} not found by pkg-config (${dep_PKG}) nor in ${MUGV_DEVICE_DEPS_DIR}/include; "
                        "install it, or run scripts/device-deps.sh on a machine that has it and carry .device-deps/")
  endif()
  target_include_directories(mugv_dep_${name} SYSTEM INTERFACE ${MUGV_${name}_INCLUDE_DIR})
  foreach(lib ${dep_LIBS})
    find_library(MUGV_${name}_${lib}_LIBRARY NAMES ${lib} HINTS ${MUGV_DEVICE_DEPS_DIR}/lib)
    if(NOT MUGV_${name}_${lib}_LIBRARY)
      message(FATAL_ERROR "${name}: library ${lib} not found by pkg-config (${dep_PKG}) nor in ${MUGV_DEVICE_DEPS_DIR}/lib")
    endif()
    target_link_libraries(mugv_dep_${name} INTERFACE ${MUGV_${name}_${lib}_LIBRARY})
  endforeach()
  message(STATUS "${name}: ${MUGV_${name}_INCLUDE_DIR}")
endfunction()

find_package(nlohmann_json 3.10 QUIET)
if(NOT TARGET nlohmann_json::nlohmann_json)
  # Header-only; some machines have the headers without the CMake package files.
  find_path(MUGV_NLOHMANN_INCLUDE_DIR nlohmann/json.hpp HINTS ${MUGV_DEVICE_DEPS_DIR}/include REQUIRED)
  add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED GLOBAL)
  target_include_directories(nlohmann_json::nlohmann_json SYSTEM INTERFACE ${MUGV_NLOHMANN_INCLUDE_DIR})
endif()
mugv_dependency(tomlpp PKG tomlplusplus HEADER toml++/toml.h)
mugv_dependency(sodium PKG libsodium HEADER sodium.h LIBS sodium)

if(NOT MUGV_COMPUTE_ONLY)
  find_package(SQLite3 REQUIRED)
  pkg_check_modules(FFMPEG REQUIRED IMPORTED_TARGET libavformat libavcodec libavutil libswscale libswresample libavfilter)
endif()

set(MUGV_HAVE_CUDA OFF)
set(MUGV_TORCH_VERSION "none")
if(MUGV_WITH_TORCH)
  find_package(Torch REQUIRED)
  if(DEFINED Torch_VERSION)
    set(MUGV_TORCH_VERSION "${Torch_VERSION}")
  endif()
  # CUDA is used when the LibTorch found was built with it; every CUDA path is also guarded at run time.
  if(TORCH_CUDA_LIBRARIES OR CUDA_FOUND)
    set(MUGV_HAVE_CUDA ON)
  endif()
  mugv_dependency(sentencepiece PKG sentencepiece HEADER sentencepiece_processor.h
                  LIBS sentencepiece sentencepiece_train)
endif()

# The fused CUDA kernels (backend/model/kernels) are built wherever nvcc is found, with a CPU LibTorch too
# (CI compiles and links them, and tests that they fail cleanly without a GPU); the model runs them when
# LibTorch has CUDA. The language is enabled here, at the top level, because every program that links the
# model links them.
option(MUGV_CUDA_KERNELS "Build the fused CUDA kernels when nvcc is found" ON)
set(MUGV_CUDA_ARCHITECTURES "80-real;90" CACHE STRING
    "GPU architectures of the fused CUDA kernels (CMake CUDA_ARCHITECTURES: A100 code, H100/H200 code + PTX)")
set(MUGV_BUILD_CUDA_KERNELS OFF)
if(MUGV_WITH_TORCH AND MUGV_CUDA_KERNELS AND NOT MUGV_SANITIZE)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit)
    if(CUDAToolkit_FOUND)
      set(MUGV_BUILD_CUDA_KERNELS ON)
    endif()
  endif()
endif()

if(MUGV_BUILD_TESTS)
  find_package(Catch2 2 REQUIRED)
  include(Catch)
endif()
