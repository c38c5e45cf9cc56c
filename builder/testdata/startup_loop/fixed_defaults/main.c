/* main has a loop of its own before the calls it makes once (it counts
 * its arguments), then hands over to serve(), whose loop runs for the life
 * of the process. read_defaults() runs once, at start-up; handle() runs for
 * every request, called from serve()'s loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long limit;
static int verbose;

__attribute__((noinline)) void read_defaults(void)
{
	const char *e = getenv("SVC_LIMIT");
	limit = e ? strtol(e, NULL, 10) : 50;
}

__attribute__((noinline)) void handle(const char *line)
{
	long v = strtol(line, NULL, 10);
	printf("%s %ld\n", v <= limit ? "ok" : "too big", v);
}

__attribute__((noinline)) void serve(void)
{
	char line[256];
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		handle(line);
	}
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "-v") == 0)
			verbose++;
	read_defaults();
	setvbuf(stdout, NULL, _IOLBF, 0);
	serve();
	return verbose > 99;
}
