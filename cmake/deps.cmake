# Every dependency comes from a Debian package (scripts/install-deps).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
# Debian's libnng-dev ships a CMake config but no pkg-config file.
find_package(nng CONFIG REQUIRED)
pkg_check_modules(MSGPACK REQUIRED IMPORTED_TARGET msgpack)
pkg_check_modules(LIBPQ REQUIRED IMPORTED_TARGET libpq)
pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)
pkg_check_modules(SQLITE3 REQUIRED IMPORTED_TARGET sqlite3)
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
pkg_check_modules(LIBJWT REQUIRED IMPORTED_TARGET libjwt)
if(WEFT_TESTS)
	pkg_check_modules(CRITERION REQUIRED IMPORTED_TARGET criterion)
endif()
