/* A service built the way distributions build: no -ffunction-sections, so
 * every function of this file shares one .text section and the calls
 * between them carry no relocation, even with -Wl,--emit-relocs. The fix
 * changes check() alone; handle() and scale() call across the section. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long requests;

__attribute__((noinline)) static long scale(long v)
{
	return v * 3 + (long)requests % 2;
}

__attribute__((noinline)) static int check(long v)
{
	return v < 1000;
}

__attribute__((noinline)) static void handle(const char *line)
{
	long v = strtol(line, NULL, 10);
	requests++;
	if (check(v))
		printf("%lu ok %ld\n", requests, scale(v) - (long)requests % 2);
	else
		printf("%lu refused\n", requests);
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
