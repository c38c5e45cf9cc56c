/* early: says at start, before it reads any input, what compute() gives
 * (101; fixed: 1100); a patch applied after the program started cannot
 * change that first line.
 *   "step" -> "step N": compute() again
 * With an argument N it exits with status N after the first line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile long base = 100;

__attribute__((noipa)) long compute(void)
{
	return base + 1;
}

int main(int argc, char **argv)
{
	char line[256];

	printf("early %ld\n", compute());
	fflush(stdout);
	if (argc > 1)
		return atoi(argv[1]);
	while (fgets(line, sizeof line, stdin)) {
		if (strncmp(line, "step", 4) == 0)
			printf("step %ld\n", compute());
		else
			printf("unknown\n");
		fflush(stdout);
	}
	return 0;
}
