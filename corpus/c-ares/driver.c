/* c-ares driver: B pton (address parsing and a sortlist on a per-thread
 * channel kept across requests); P probes of the CVE fixes. */
#include <ares.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void init(void) { ares_library_init(ARES_LIB_INIT_ALL); }

static ares_channel channel(void) {
  static __thread ares_channel ch;
  pthread_once(&once, init);
  if (!ch) {
    struct ares_options o = {.flags = ARES_FLAG_NOCHECKRESP};
    if (ares_init_options(&ch, &o, ARES_OPT_FLAGS) != ARES_SUCCESS)
      ch = NULL;
  }
  return ch;
}

int corpus_handle(const char *arg, char *out, size_t outsz) {
  unsigned char buf[16];
  if (strcmp(arg, "pton") == 0) {
    ares_channel ch = channel();
    int a = ares_inet_pton(AF_INET6, "fe80::1:2", buf);
    int b = ares_inet_pton(AF_INET, "10.1.0.7", buf);
    int c = ch ? ares_set_sortlist(ch, "130.155.160.0/255.255.240.0 130.155.0.0") : -1;
    snprintf(out, outsz, "pton=%d pton4=%d sortlist=%d", a, b, c);
    return 0;
  }
  if (strcmp(arg, "sortlist-long") == 0) { /* CVE-2022-4904 */
    ares_channel ch = channel();
    int a = ares_set_sortlist(ch, "111.111.111.111*/16");
    int b = ares_set_sortlist(ch, "111.111.111.111/255.255.255.240*");
    snprintf(out, outsz, "rc=%d,%d", a, b);
    return 0;
  }
  if (strcmp(arg, "pton6") == 0) { /* CVE-2023-31130 */
    static const char *in[] = {"0::00:00:00/2", "::1/128", "1:2:3:4:5:6:7:8/64", "12345::1", "::ffff:1.2.3.4/96"};
    size_t n = 0;
    for (size_t i = 0; i < sizeof in / sizeof in[0] && n < outsz; i++) {
      memset(buf, 0xee, sizeof buf);
      int rc = ares_inet_pton(AF_INET6, in[i], buf);
      n += (size_t)snprintf(out + n, outsz - n, "%s%d", i ? "," : "rc=", rc);
    }
    return 0;
  }
  snprintf(out, outsz, "error:unknown operation");
  return -1;
}
