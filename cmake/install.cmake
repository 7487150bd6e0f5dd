# `cmake --install BUILD --prefix P`: the public headers (P/include/moepp), libmoepp_c.so and
# libmoepp (P/lib...), the `moepp` CLI (P/bin), the CMake package moepp (P/lib.../cmake/moepp:
# find_package(moepp CONFIG) gives moepp::moepp, moepp::engine and moepp::cli) and the Python
# package (P/${MOEPP_PYTHON_INSTALL_DIR}/moepp). docs/library.md explains the pieces.
include(CMakePackageConfigHelpers)
set(MOEPP_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/moepp)
set_target_properties(moepp-cli PROPERTIES EXPORT_NAME cli)

install(TARGETS moepp moepp_c moepp-cli EXPORT moeppTargets
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY include/moepp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT moeppTargets NAMESPACE moepp:: DESTINATION ${MOEPP_CMAKE_DIR})

# moeppConfig.cmake finds the static engine's dependencies only when it needs them.
if(MOEPP_SHARED)
  set(MOEPP_ENGINE_STATIC OFF)
else()
  set(MOEPP_ENGINE_STATIC ON)
endif()
set(MOEPP_ENGINE_NEEDS_DNNL OFF)
if(MOEPP_GEMM_PROVIDER STREQUAL "onednn")
  set(MOEPP_ENGINE_NEEDS_DNNL ON)
endif()
configure_package_config_file(cmake/moeppConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/moeppConfig.cmake
                              INSTALL_DESTINATION ${MOEPP_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/moeppConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/moeppConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/moeppConfigVersion.cmake
        DESTINATION ${MOEPP_CMAKE_DIR})

# The Python package, with _libdir.py telling it where libmoepp_c.so lies relative to it.
file(RELATIVE_PATH MOEPP_PY_TO_LIB "/prefix/${MOEPP_PYTHON_INSTALL_DIR}/moepp" "/prefix/${CMAKE_INSTALL_LIBDIR}")
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/python/_libdir.py
     "# Written by cmake/install.cmake: libmoepp_c.so relative to this package.\nLIBDIR = \"${MOEPP_PY_TO_LIB}\"\n")
install(DIRECTORY python/moepp DESTINATION ${MOEPP_PYTHON_INSTALL_DIR} FILES_MATCHING PATTERN "*.py"
        PATTERN "__pycache__" EXCLUDE)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/python/_libdir.py DESTINATION ${MOEPP_PYTHON_INSTALL_DIR}/moepp)
