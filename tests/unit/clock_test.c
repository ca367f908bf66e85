/*
 * clock_test.c - monotonic time moves forward; sleep sleeps.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "common/clock.h"

Test(clock, monotonic_never_goes_back)
{
	uint64_t prev = clock_now_ns();

	for (int i = 0; i < 10000; i++) {
		uint64_t now = clock_now_ns();

		cr_assert(ge(i64, now, prev));
		prev = now;
	}
}

Test(clock, sleep_waits_at_least_the_time_asked)
{
	uint64_t t0 = clock_now_ms();

	clock_sleep_ms(30);
	cr_assert(ge(i64, clock_now_ms() - t0, 30));
}

Test(clock, wall_clock_is_after_2024)
{
	cr_assert(lt(i64, 1704067200LL * 1000000LL, clock_wall_us()));
}
