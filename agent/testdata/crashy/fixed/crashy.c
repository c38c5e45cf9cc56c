/* crashy: answers each line on stdin. Its "fix" is bad: it crashes (a
 * write through a null pointer, inside the patched function) on "boom".
 *   "hello" -> "orig hello" (the fix: "fixed hello") */
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) void handle(const char *line, char *out, size_t n)
{
	if (strcmp(line, "boom") == 0)
		*(volatile int *)0 = 1;
	snprintf(out, n, "fixed %s", line);
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
