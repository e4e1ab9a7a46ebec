// The shim is header-only; SwiftPM needs one C source file to build the target.
#include "CMallocTuning.h"
