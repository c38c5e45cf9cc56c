/* dlopen: loads a library only when told to, as a plugin host does.
 *   "load PATH"  -> "loaded" once dlopen(PATH) succeeded
 *   "listen N"   -> what the library's svc_parse_port makes of N: "port P"
 *                   (-1 for an invalid port; "no library" before load) */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
	char line[4096];
	int (*parse)(const char *) = NULL;
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		if (strncmp(line, "load ", 5) == 0) {
			void *h = dlopen(line + 5, RTLD_NOW);
			if (h)
				parse = (int (*)(const char *))dlsym(h, "svc_parse_port");
			printf("%s\n", h && parse ? "loaded" : dlerror());
		} else if (strncmp(line, "listen ", 7) == 0) {
			if (!parse)
				printf("no library\n");
			else
				printf("port %d\n", parse(line + 7));
		} else {
			printf("?\n");
		}
		fflush(stdout);
	}
	return 0;
}
