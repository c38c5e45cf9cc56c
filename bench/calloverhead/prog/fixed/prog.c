/* prog: the target of the call-overhead benchmark (bench/calloverhead).
 * checksum() is the function the fix changes; run_direct() and run_pointer()
 * call it in a tight loop and time the loop. Commands, one per line on
 * stdin, each answered with one line on stdout:
 *
 *	run N LEN  call checksum on LEN bytes N times, directly;
 *	           reply: nanoseconds per call
 *	ptr N LEN  the same through a function pointer
 *	check      reply with checksum() of an input longer than MAX_LEN
 *
 * checksum and the loops are noipa (no inlining, no cloning, and the callers
 * assume nothing about the callee's body or the registers it clobbers), and
 * every result goes to a volatile sink, so each iteration makes a real call. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#define MAX_LEN 4096 /* the longest input callers may pass; the fix enforces it */

static unsigned char buf[2 * MAX_LEN];
static volatile unsigned sink;
static unsigned (*volatile fp)(const unsigned char *, size_t);

__attribute__((noipa)) unsigned checksum(const unsigned char *p, size_t n)
{
	unsigned a = 1, b = 0;
	if (n > MAX_LEN) /* the fix: refuse an over-long input */
		return 0;
	for (size_t i = 0; i < n; i++) {
		a += p[i];
		b += a;
	}
	return b << 16 | (a & 0xffff);
}

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

__attribute__((noipa)) double run_direct(long n, size_t len)
{
	double start = now_ns();
	for (long i = 0; i < n; i++)
		sink = checksum(buf, len);
	return (now_ns() - start) / (double)n;
}

__attribute__((noipa)) double run_pointer(long n, size_t len)
{
	double start = now_ns();
	for (long i = 0; i < n; i++)
		sink = fp(buf, len);
	return (now_ns() - start) / (double)n;
}

int main(void)
{
	char line[128];
	long n;
	size_t len;
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (unsigned char)(i * 31 + 7);
	fp = checksum;
	while (fgets(line, sizeof line, stdin)) {
		if (sscanf(line, "run %ld %zu", &n, &len) == 2 && n > 0 && len <= MAX_LEN)
			printf("%.4f\n", run_direct(n, len));
		else if (sscanf(line, "ptr %ld %zu", &n, &len) == 2 && n > 0 && len <= MAX_LEN)
			printf("%.4f\n", run_pointer(n, len));
		else if (strcmp(line, "check\n") == 0)
			printf("%u\n", checksum(buf, sizeof buf));
		else
			printf("error: unknown command\n");
		fflush(stdout);
	}
	return 0;
}
