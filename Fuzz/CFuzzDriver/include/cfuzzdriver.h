// CFuzzDriver: reaches libFuzzer's LLVMFuzzerRunDriver when scripts/fuzz linked it in.
// A weak reference, so the ordinary build links without libFuzzer (the call then returns -1).
#ifndef TAPSWITCH_CFUZZDRIVER_H
#define TAPSWITCH_CFUZZDRIVER_H
#include <stddef.h>
#include <stdint.h>

typedef int (*ts_fuzz_callback)(const uint8_t *_Nullable data, size_t size);

/// LLVMFuzzerRunDriver(argc, argv, callback), or -1 when libFuzzer is not linked in.
int ts_fuzz_run(int *_Nonnull argc, char *_Nullable *_Nullable *_Nonnull argv, ts_fuzz_callback _Nonnull callback);

#endif
