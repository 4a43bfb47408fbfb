# The Rust crate (client/rust) under ctest: tests/rust_test.cc runs `cargo
# test` against a real PostgreSQL and tenantcached, with abi_probe (the
# header's view of the ABI, compared with the crate's sys module) and both
# libraries built first. Included from tests/CMakeLists.txt.
add_executable(rust_abi_probe ${CMAKE_CURRENT_LIST_DIR}/abi_probe.c)
target_include_directories(rust_abi_probe PRIVATE ${PROJECT_SOURCE_DIR}/client/include)
set_target_properties(rust_abi_probe PROPERTIES C_EXTENSIONS OFF)

tc_test(rust_test LABELS postgres)
target_compile_definitions(rust_test PRIVATE TC_LIBRARY="$<TARGET_FILE:tenantcache>"
                                             TC_STATIC_LIBRARY="$<TARGET_FILE:tenantcache_static>"
                                             TC_ABI_PROBE="$<TARGET_FILE:rust_abi_probe>"
                                             TC_CARGO_TARGET_DIR="${CMAKE_BINARY_DIR}/rust-target")
add_dependencies(rust_test tenantcache tenantcache_static rust_abi_probe)
# Two cargo builds of the crate and its tests, on a machine others share.
set_tests_properties(rust_test PROPERTIES TIMEOUT 900)
