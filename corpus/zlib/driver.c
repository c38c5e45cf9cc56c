/* zlib driver: B inflate (a gzip member with a header extra field, read with
 * inflateGetHeader); P gzextra, the CVE-2022-37434 probe: an extra field
 * longer than the caller's buffer, fed one byte at a time. */
#include <stdio.h>
#include <string.h>
#include <zlib.h>

static int gz(unsigned char *out, size_t outsz, unsigned xlen) {
  /* header: magic, deflate, FEXTRA, mtime, xfl, os, XLEN, extra bytes */
  size_t n = 0;
  const unsigned char h[] = {0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 3};
  memcpy(out, h, sizeof h);
  n = sizeof h;
  out[n++] = xlen & 0xff;
  out[n++] = xlen >> 8;
  for (unsigned i = 0; i < xlen; i++)
    out[n++] = (unsigned char)('A' + i % 26);
  z_stream s = {0};
  static const char msg[] = "hello, hotpatch corpus";
  deflateInit2(&s, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
  s.next_in = (unsigned char *)msg;
  s.avail_in = sizeof msg;
  s.next_out = out + n;
  s.avail_out = (unsigned)(outsz - n - 8);
  deflate(&s, Z_FINISH);
  n += s.total_out;
  deflateEnd(&s);
  unsigned long crc = crc32(0, (const unsigned char *)msg, sizeof msg);
  for (int i = 0; i < 4; i++)
    out[n++] = (crc >> (8 * i)) & 0xff;
  for (int i = 0; i < 4; i++)
    out[n++] = (sizeof msg >> (8 * i)) & 0xff;
  return (int)n;
}

static int inflate_gz(unsigned xlen, unsigned extra_max, int step, char *res, size_t ressz) {
  unsigned char in[1024], outb[256], extra[512];
  int n = gz(in, sizeof in, xlen);
  memset(extra, 0x55, sizeof extra);
  gz_header h = {0};
  h.extra = extra;
  h.extra_max = extra_max;
  z_stream s = {0};
  inflateInit2(&s, 15 + 16);
  inflateGetHeader(&s, &h);
  s.next_out = outb;
  s.avail_out = sizeof outb;
  int rc = Z_OK, fed = 0;
  while (rc == Z_OK && fed < n) {
    int k = step < n - fed ? step : n - fed;
    s.next_in = in + fed;
    s.avail_in = (unsigned)k;
    rc = inflate(&s, Z_NO_FLUSH);
    fed += k - (int)s.avail_in;
  }
  int guard = 1;
  for (unsigned i = extra_max; i < sizeof extra; i++)
    if (extra[i] != 0x55)
      guard = 0;
  snprintf(res, ressz, "rc=%d out=%lu extra_len=%u guard=%s", rc, s.total_out, h.extra_len,
           guard ? "intact" : "overwritten");
  inflateEnd(&s);
  return rc;
}

int corpus_handle(const char *arg, char *out, size_t outsz) {
  if (strcmp(arg, "inflate") == 0) {
    inflate_gz(8, 64, 7, out, outsz);
    return 0;
  }
  if (strcmp(arg, "gzextra") == 0) {
    inflate_gz(64, 4, 1, out, outsz);
    return 0;
  }
  snprintf(out, outsz, "error:unknown operation");
  return -1;
}
