/* xmlsvc: a small service on the system's libexpat (Debian's libexpat1),
 * for the stock-binary test of hotpatch. One request a line on stdin, one
 * reply a line on stdout:
 *   parse <xml>  ->  "<n> ok elements=<count>" or "<n> error <code> <text>"
 *   stop         ->  "<n> stop status=<s> error=<code>": XML_StopParser on a
 *                    parser that never started (CVE-2024-50602: before the
 *                    fix it succeeds, and a later XML_ResumeParser crashes;
 *                    after it, it fails with XML_ERROR_NOT_STARTED, 44).
 * <n> counts requests, so a test can see the process kept its state. */
#include <expat.h>
#include <stdio.h>
#include <string.h>

static unsigned long requests;

static void XMLCALL start(void *data, const XML_Char *name, const XML_Char **attrs) {
	(void)name;
	(void)attrs;
	++*(unsigned long *)data;
}

int main(void) {
	char line[4096];
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		requests++;
		if (strncmp(line, "parse ", 6) == 0) {
			unsigned long count = 0;
			XML_Parser p = XML_ParserCreate(NULL);
			XML_SetUserData(p, &count);
			XML_SetStartElementHandler(p, start);
			if (XML_Parse(p, line + 6, (int)strlen(line + 6), 1) == XML_STATUS_OK)
				printf("%lu ok elements=%lu\n", requests, count);
			else
				printf("%lu error %d %s\n", requests, (int)XML_GetErrorCode(p), XML_ErrorString(XML_GetErrorCode(p)));
			XML_ParserFree(p);
		} else if (strcmp(line, "stop") == 0) {
			XML_Parser p = XML_ParserCreate(NULL);
			enum XML_Status s = XML_StopParser(p, XML_TRUE);
			printf("%lu stop status=%d error=%d\n", requests, (int)s, (int)XML_GetErrorCode(p));
			XML_ParserFree(p);
		} else {
			printf("%lu unknown\n", requests);
		}
	}
	return 0;
}
