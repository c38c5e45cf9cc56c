/* giflib driver: B spew (a one-image GIF with a graphics control block
 * encoded to memory); P gcb-short, the CVE-2026-26740 probe: a saved image
 * whose graphics control extension is shorter than the 4 bytes written. */
#include <gif_lib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sink {
  unsigned char buf[4096];
  int n;
};

static int put(GifFileType *g, const GifByteType *b, int n) {
  struct sink *s = g->UserData;
  if (s->n + n > (int)sizeof s->buf)
    return 0;
  memcpy(s->buf + s->n, b, (size_t)n);
  s->n += n;
  return n;
}

int corpus_handle(const char *arg, char *out, size_t outsz) {
  if (strcmp(arg, "spew") == 0) {
    struct sink s = {.n = 0};
    int err = 0;
    GifFileType *g = EGifOpen(&s, put, &err);
    if (!g) {
      snprintf(out, outsz, "open error=%d", err);
      return 0;
    }
    GifColorType colors[2] = {{0, 0, 0}, {255, 255, 255}};
    g->SWidth = g->SHeight = 4;
    g->SColorMap = GifMakeMapObject(2, colors);
    SavedImage *si = GifMakeSavedImage(g, NULL);
    si->ImageDesc.Width = si->ImageDesc.Height = 4;
    si->RasterBits = calloc(16, 1);
    for (int i = 0; i < 16; i++)
      si->RasterBits[i] = (GifByteType)(i & 1);
    GraphicsControlBlock gcb = {.DisposalMode = DISPOSAL_UNSPECIFIED, .DelayTime = 10, .TransparentColor = NO_TRANSPARENT_COLOR};
    int a = EGifGCBToSavedExtension(&gcb, g, 0);
    int rc = EGifSpew(g);
    snprintf(out, outsz, "gcb=%d spew=%d bytes=%d", a, rc, s.n);
    return 0;
  }
  if (strcmp(arg, "gcb-short") == 0) {
    GifFileType g;
    SavedImage si;
    ExtensionBlock eb;
    unsigned char mem[16];
    memset(&g, 0, sizeof g);
    memset(&si, 0, sizeof si);
    memset(mem, 0xaa, sizeof mem);
    eb.Function = GRAPHICS_EXT_FUNC_CODE;
    eb.ByteCount = 1;
    eb.Bytes = mem + 4;
    si.ExtensionBlockCount = 1;
    si.ExtensionBlocks = &eb;
    g.ImageCount = 1;
    g.SavedImages = &si;
    GraphicsControlBlock gcb = {.DisposalMode = DISPOSE_BACKGROUND, .DelayTime = 0x1234, .TransparentColor = 7};
    int rc = EGifGCBToSavedExtension(&gcb, &g, 0);
    int guard = 1;
    for (int i = 5; i < 16; i++)
      if (mem[i] != 0xaa)
        guard = 0;
    snprintf(out, outsz, "rc=%d guard=%s", rc, guard ? "intact" : "overwritten");
    return 0;
  }
  snprintf(out, outsz, "error:unknown operation");
  return -1;
}
