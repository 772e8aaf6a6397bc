/* The ABI native_abi.py checks at load: a version and the size of each entry-point struct. */
#include "hoconv_native.h"

long hc_abi_version(void) { return HC_ABI_VERSION; }

long hc_struct_size(long which) {
  switch (which) {
    case 0: return sizeof(DwSep);
    case 1: return sizeof(DwWgrad);
    case 2: return sizeof(Fwd);
    case 3: return sizeof(FwdCall);
    case 4: return sizeof(Bwd);
    case 5: return sizeof(BwdCall);
    default: return -1;
  }
}
