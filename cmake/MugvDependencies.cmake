# Finds the third-party libraries. Each is required only by the layers that use it, so a build
# with some options off needs fewer packages.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(SQLite3 REQUIRED)
pkg_check_modules(FFMPEG REQUIRED IMPORTED_TARGET libavformat libavcodec libavutil libswscale libswresample libavfilter)
pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)
pkg_check_modules(TOMLPP REQUIRED IMPORTED_TARGET tomlplusplus)

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
endif()

if(MUGV_BUILD_TESTS)
  find_package(Catch2 2 REQUIRED)
  include(Catch)
endif()
