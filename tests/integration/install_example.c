/*
 * install_example.c - a program built the way an app would build against
 * an installed libweft: `cc app.c $(pkg-config --cflags --libs weft)`.
 */
#include <stdio.h>
#include <string.h>
#include <weft/weft.h>

int
main(void)
{
	char want[32];

	snprintf(want, sizeof(want), "%d.%d.%d", WEFT_VERSION_MAJOR,
		 WEFT_VERSION_MINOR, WEFT_VERSION_PATCH);
	if (strcmp(weft_version(), want) != 0) {
		fprintf(stderr, "header %s, library %s\n", want,
			weft_version());
		return 1;
	}
	printf("libweft %s, protocol %u, %s: %s\n", weft_version(),
	       weft_protocol_version(), weft_errname(WEFT_EPERM),
	       weft_strerror(WEFT_EPERM));
	return weft_protocol_version() >= 1 ? 0 : 1;
}
