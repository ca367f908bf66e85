/*
 * testenv.h - what the integration harness started, for tests.
 *
 * ctest's `servers` fixture (tests/harness/servers) starts one Postgres
 * and one Redis per test run on free loopback ports and writes their
 * addresses to a KEY=value file whose path is in WEFT_TEST_ENV.
 */
#ifndef WEFT_TESTENV_H
#define WEFT_TESTENV_H

/*
 * testenv_get - the value of KEY (e.g. "WEFT_PG_URL") from that file.
 * Fails the current criterion test with a clear message if the file or
 * the key is missing.  Returns a static string.
 */
const char *testenv_get(const char *key);

#endif
