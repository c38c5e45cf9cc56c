/* A service built the way distributions build (no -ffunction-sections).
 * Its compile unit is the same in the installed binary and the rebuild;
 * features.c, linked before it, is not. The fix changes check(), which
 * refers to a static counter (.bss), a global limit (.data), a string
 * (.rodata), a static function of this file (a call without relocation),
 * a function of another unit and libc. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef AS_LIBRARY
/* Built as a shared library (libsvc.so) that driver.c runs. */
#define main svc_main
#endif

extern int feature_count(void);

static unsigned long requests;
static unsigned long refusals;
long limit = 1000;

/* Shipped with one more member when the build found zstd
 * (-DSTATS_COMPRESSED): the old code touches only "served", at the same
 * offset either way; the fix also counts "refused", which moves. */
struct stats {
	long served;
#ifdef STATS_COMPRESSED
	long compressed;
#endif
	long refused;
} stats;

__attribute__((noinline)) static void note(const char *what, long v)
{
	refusals++;
	fprintf(stderr, "%s %ld\n", what, v);
}

__attribute__((noinline)) static int check(long v)
{
	if (v >= limit) {
		note("too large", v);
		return 0;
	}
	return 1;
}

__attribute__((noinline)) static void handle(const char *line)
{
	long v = strtol(line, NULL, 10);
	requests++;
	stats.served++;
	if (check(v))
		printf("%lu ok %ld f%d r%lu\n", requests, v * 3, feature_count(), refusals);
	else
		printf("%lu refused r%lu\n", requests, refusals);
}

int main(void)
{
	char line[256];
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		handle(line);
	}
	return 0;
}
