/* crashy, with a good fix (stacked under the bad one in
 * TestAgentCrashStacked): answers each line on stdin.
 *   "hello" -> "safe hello" */
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) void handle(const char *line, char *out, size_t n)
{
	snprintf(out, n, "safe %s", line);
}

int main(void)
{
	char line[128], out[160];
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		handle(line, out, sizeof out);
		printf("%s\n", out);
		fflush(stdout);
	}
	return 0;
}
