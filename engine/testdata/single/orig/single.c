/* single: one thread, busy most of the time in slow_step, a loop with no
 * call in it (about a tenth of a second), between which it answers a line
 * from stdin if one is there.
 *   "step" -> "step N": what one more call of slow_step returns (101;
 *             fixed: 1100) */
#include <poll.h>
#include <stdio.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

static volatile unsigned long sink;

NOINLINE long slow_step(long x)
{
	for (unsigned long i = 0; i < 50000000UL; i++)
		sink += i;
	return x + 1;
}

int main(void)
{
	char line[256];

	for (;;) {
		slow_step(100);
		struct pollfd p = {.fd = 0, .events = POLLIN};
		if (poll(&p, 1, 0) <= 0)
			continue;
		if (!fgets(line, sizeof line, stdin))
			return 0;
		if (strncmp(line, "step", 4) == 0)
			printf("step %ld\n", slow_step(100));
		else
			printf("unknown\n");
		fflush(stdout);
	}
}
