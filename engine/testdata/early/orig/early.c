/* early: says at start, before it reads any input, what compute() gives
 * (101; fixed: 1100); a patch applied after the program started cannot
 * change that first line.
 *   "step" -> "step N": compute() again */
#include <stdio.h>
#include <string.h>

static volatile long base = 100;

__attribute__((noipa)) long compute(void)
{
	return base + 1;
}

int main(void)
{
	char line[256];

	printf("early %ld\n", compute());
	fflush(stdout);
	while (fgets(line, sizeof line, stdin)) {
		if (strncmp(line, "step", 4) == 0)
			printf("step %ld\n", compute());
		else
			printf("unknown\n");
		fflush(stdout);
	}
	return 0;
}
