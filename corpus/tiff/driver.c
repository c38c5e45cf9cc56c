/* libtiff driver: B rgba (open a small striped RGB image and read it whole
 * with TIFFReadRGBAImage); P probes of the CVE fixes. The images are written
 * by libtiff itself into a private temporary directory at first use. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>
#include <unistd.h>

static char strip_path[256], tile_path[256];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static int write_image(const char *path, int tiled) {
  const uint32_t w = tiled ? 32 : 16, h = tiled ? 32 : 16;
  TIFF *t = TIFFOpen(path, "w");
  if (!t)
    return -1;
  TIFFSetField(t, TIFFTAG_IMAGEWIDTH, w);
  TIFFSetField(t, TIFFTAG_IMAGELENGTH, h);
  TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
  TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 3);
  TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
  TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
  unsigned char px[16 * 16 * 3];
  for (size_t i = 0; i < sizeof px; i++)
    px[i] = (unsigned char)(i * 7);
  if (tiled) {
    TIFFSetField(t, TIFFTAG_TILEWIDTH, 16);
    TIFFSetField(t, TIFFTAG_TILELENGTH, 16);
    for (uint32_t y = 0; y < h; y += 16)
      for (uint32_t x = 0; x < w; x += 16)
        TIFFWriteTile(t, px, x, y, 0, 0);
  } else {
    TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, 4);
    for (uint32_t y = 0; y < h; y++)
      TIFFWriteScanline(t, px + y * w * 3, y, 0);
  }
  TIFFClose(t);
  return 0;
}

static void init(void) {
  char dir[] = "/tmp/corpus-tiff-XXXXXX";
  if (!mkdtemp(dir))
    return;
  snprintf(strip_path, sizeof strip_path, "%s/strip.tif", dir);
  snprintf(tile_path, sizeof tile_path, "%s/tile.tif", dir);
  TIFFSetWarningHandler(NULL);
  TIFFSetErrorHandler(NULL);
  write_image(strip_path, 0);
  write_image(tile_path, 1);
}

int corpus_handle(const char *arg, char *out, size_t outsz) {
  pthread_once(&once, init);
  if (strcmp(arg, "rgba") == 0) {
    TIFF *t = TIFFOpen(strip_path, "r");
    if (!t) {
      snprintf(out, outsz, "open failed");
      return 0;
    }
    uint32_t raster[16 * 16];
    int rc = TIFFReadRGBAImage(t, 16, 16, raster, 0);
    uint32_t sum = 0;
    for (int i = 0; i < 256; i++)
      sum = sum * 31 + raster[i];
    TIFFClose(t);
    snprintf(out, outsz, "rc=%d sum=%08x", rc, sum);
    return 0;
  }
  if (strcmp(arg, "close-null") == 0) { /* CVE-2023-3316 */
    TIFFClose(NULL);
    snprintf(out, outsz, "returned");
    return 0;
  }
  if (strcmp(arg, "tile-outside") == 0) { /* CVE-2023-52356 */
    TIFF *t = TIFFOpen(tile_path, "r");
    uint32_t *raster = malloc(16 * 16 * 4);
    int rc = TIFFReadRGBATile(t, 0, 48, raster);
    TIFFClose(t);
    free(raster);
    snprintf(out, outsz, "rc=%d", rc);
    return 0;
  }
  if (strcmp(arg, "raster-short") == 0) { /* CVE-2025-9900 */
    TIFF *t = TIFFOpen(strip_path, "r");
    uint32_t mem[16 * 16 + 16 * 16]; /* a guard of one image before the raster */
    memset(mem, 0xaa, sizeof mem);
    uint32_t *raster = mem + 16 * 16;
    int rc = TIFFReadRGBAImage(t, 16, 8, raster, 0);
    TIFFClose(t);
    int guard = 1;
    for (int i = 0; i < 16 * 16; i++)
      if (mem[i] != 0xaaaaaaaa)
        guard = 0;
    snprintf(out, outsz, "rc=%d guard=%s", rc, guard ? "intact" : "overwritten");
    return 0;
  }
  snprintf(out, outsz, "error:unknown operation");
  return -1;
}
