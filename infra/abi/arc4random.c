/* Linked into the arm64 DuckDB functions by infra/abi/link.sh.
 *
 * Debian 12's GCC 12 libstdc++ was built against glibc 2.36, so its std::random_device calls
 * arc4random, which glibc added in 2.36. Lambda's provided.al2023 has glibc 2.34: a bootstrap that
 * imports arc4random@GLIBC_2.36 dies at start. With libstdc++ linked statically, this definition
 * satisfies that reference inside the binary, through getrandom (glibc 2.25). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/random.h>

uint32_t arc4random(void) {
  uint32_t value;
  size_t got = 0;
  while (got < sizeof value) {
    ssize_t n = getrandom((char *)&value + got, sizeof value - got, 0);
    if (n > 0)
      got += (size_t)n;
    else if (errno != EINTR)
      abort();
  }
  return value;
}
