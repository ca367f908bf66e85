#!/usr/bin/env bash
# install_test.sh BUILD_DIR CC "SANITIZER FLAGS"
#
# `cmake --install` into a scratch prefix must give an app everything it
# needs: headers, the shared and static library, and a pkg-config file that
# builds and links a program against each; the shared library must export
# only the public weft_* API.
set -euo pipefail

BUILD=$1
CC=$2
SAN=${3:-}
PREFIX=$(mktemp -d)
trap 'rm -rf "$PREFIX"' EXIT
SRC=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)/install_example.c
fail=0

check() { # name, command...
	local name=$1
	shift
	if "$@"; then
		echo "ok - $name"
	else
		echo "not ok - $name"
		fail=1
	fi
}

cmake --install "$BUILD" --prefix "$PREFIX" >/dev/null
LIBDIR=$(dirname "$(find "$PREFIX" -name weft.pc -print -quit)")/..
export PKG_CONFIG_PATH=$LIBDIR/pkgconfig

check "header installed" test -f "$PREFIX/include/weft/weft.h"
check "error header installed" test -f "$PREFIX/include/weft/error.h"
check "shared library installed" test -e "$LIBDIR/libweft.so"
check "static library installed" test -f "$LIBDIR/libweft.a"
check "pkg-config knows weft" pkg-config --exists weft

# shellcheck disable=SC2046,SC2086
check "app builds against the shared library" \
	$CC $SAN -o "$PREFIX/app" "$SRC" $(pkg-config --cflags --libs weft) \
	-Wl,-rpath,"$LIBDIR"
check "app runs" "$PREFIX/app"
# shellcheck disable=SC2046,SC2086
check "app builds against the static library" \
	$CC $SAN -o "$PREFIX/app_static" "$SRC" \
	$(pkg-config --cflags weft) "$LIBDIR/libweft.a" \
	$(pkg-config --static --libs-only-l msgpack jansson sqlite3) -lnng -lm -lpthread
check "static app runs" "$PREFIX/app_static"

leaked=$(nm -D --defined-only "$LIBDIR/libweft.so" |
	awk '$2 ~ /^[TDBR]$/ && $3 !~ /^weft_/ && $3 !~ /^_/ {print $3}')
if [[ -z $leaked ]]; then
	echo "ok - libweft.so exports only weft_* symbols"
else
	echo "not ok - libweft.so exports internal symbols:" $leaked
	fail=1
fi
leaked=$(nm -g --defined-only "$LIBDIR/libweft.a" 2>/dev/null |
	awk 'NF == 3 && $3 !~ /^weft_/ {print $3}')
if [[ -z $leaked ]]; then
	echo "ok - libweft.a exports only weft_* symbols"
else
	echo "not ok - libweft.a exports internal symbols:" $leaked
	fail=1
fi
exit $fail
