/* expat driver: B parse (a per-thread parser kept across requests, reset each
 * time, as a server keeps one per connection); P probes of the CVE fixes. */
#include <expat.h>
#include <stdio.h>
#include <string.h>

static void XMLCALL start(void *ud, const XML_Char *name, const XML_Char **atts) {
  (void)name;
  (void)atts;
  ++*(int *)ud;
}

static const char doc[] = "<?xml version='1.0'?><order id='42'><item sku='a1' n='2'/>"
                          "<item sku='b7' n='1'>gift &amp; wrap</item><note><![CDATA[x<y]]></note></order>";

int corpus_handle(const char *arg, char *out, size_t outsz) {
  if (strcmp(arg, "parse") == 0) {
    static __thread XML_Parser p;
    int n = 0;
    if (!p)
      p = XML_ParserCreate(NULL);
    else
      XML_ParserReset(p, NULL);
    XML_SetUserData(p, &n);
    XML_SetStartElementHandler(p, start);
    int st = XML_Parse(p, doc, (int)strlen(doc), XML_TRUE);
    snprintf(out, outsz, "status=%d elements=%d", st, n);
    return 0;
  }
  if (strcmp(arg, "parsebuffer-negative") == 0) { /* CVE-2024-45490 */
    XML_Parser p = XML_ParserCreate(NULL);
    void *buf = XML_GetBuffer(p, 16);
    memcpy(buf, "<a>", 3);
    int st = XML_ParseBuffer(p, -1, XML_FALSE);
    snprintf(out, outsz, "status=%d error=%d", st, (int)XML_GetErrorCode(p));
    XML_ParserFree(p);
    return 0;
  }
  if (strcmp(arg, "stop-unstarted") == 0) { /* CVE-2024-50602 */
    XML_Parser p = XML_ParserCreate(NULL);
    XML_GetBuffer(p, 1);
    int st = XML_StopParser(p, XML_TRUE);
    int code = (int)XML_GetErrorCode(p);
    int rs = XML_ResumeParser(p);
    snprintf(out, outsz, "stop=%d error=%d resume=%d", st, code, rs);
    XML_ParserFree(p);
    return 0;
  }
  snprintf(out, outsz, "error:unknown operation");
  return -1;
}
