# The warning set of CONVENTIONS.md, as errors, on every weft target.
set(WEFT_WARNINGS
	-Wall -Wextra -Wpedantic -Werror -Wshadow -Wvla -Wformat=2
	-Wcast-qual -Wwrite-strings -Wpointer-arith -Wundef
	-Wstrict-prototypes -Wmissing-prototypes -Wold-style-definition
	-Wimplicit-fallthrough -fno-common)

set(WEFT_SAN_FLAGS "")
if(WEFT_SANITIZE STREQUAL "address,undefined")
	set(WEFT_SAN_FLAGS -fsanitize=address,undefined
		-fno-sanitize-recover=undefined -fno-omit-frame-pointer)
elseif(WEFT_SANITIZE STREQUAL "thread")
	set(WEFT_SAN_FLAGS -fsanitize=thread -fno-omit-frame-pointer)
elseif(NOT WEFT_SANITIZE STREQUAL "")
	message(FATAL_ERROR "WEFT_SANITIZE must be '', 'address,undefined' or 'thread'")
endif()
if(WEFT_SAN_FLAGS)
	add_compile_options(${WEFT_SAN_FLAGS})
	add_link_options(${WEFT_SAN_FLAGS})
endif()

# weft_target_defaults(<target>): warnings and include paths for our own code.
function(weft_target_defaults tgt)
	target_compile_options(${tgt} PRIVATE ${WEFT_WARNINGS})
	target_include_directories(${tgt} PRIVATE ${WEFT_INCLUDE_DIRS})
	target_compile_definitions(${tgt} PRIVATE _POSIX_C_SOURCE=200809L)
endfunction()
