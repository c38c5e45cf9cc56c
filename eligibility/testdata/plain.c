/* A small service for the eligibility tests: answers one line per line read. */
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) int answer(const char *line) { return (int)strlen(line); }

int main(void)
{
	char line[256];
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof line, stdin))
		printf("%d\n", answer(line));
	return 0;
}
