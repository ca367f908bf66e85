/*
 * clock.c - monotonic and wall-clock time (see clock.h).
 */
#include "common/clock.h"

#include <errno.h>
#include <time.h>

#include "common/banned.h"

uint64_t
clock_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
clock_now_ms(void)
{
	return clock_now_ns() / 1000000u;
}

int64_t
clock_wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
clock_deadline(struct timespec *ts, uint64_t ns)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += (time_t)(ns / 1000000000u);
	ts->tv_nsec += (long)(ns % 1000000000u);
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

void
clock_sleep_ms(uint32_t ms)
{
	struct timespec req = { ms / 1000, (long)(ms % 1000) * 1000000L };
	struct timespec rem;

	while (nanosleep(&req, &rem) == -1 && errno == EINTR)
		req = rem;
}
