#ifndef FERRY_CZLIB_H
#define FERRY_CZLIB_H

#include <zlib.h>
#include <stddef.h>
#include <stdint.h>

/// zlib's CRC-32 (the ISO-HDLC / PKZIP polynomial) over `length` bytes, continuing from `crc`.
/// `crc32_z` takes a `size_t` length, so buffers over 4 GiB need no chunking on the Swift side.
static inline uint32_t CZlib_crc32(uint32_t crc, const void *bytes, size_t length) {
    return (uint32_t)crc32_z((uLong)crc, (const Bytef *)bytes, (z_size_t)length);
}

/// The CRC-32 of `A || B` from `crc32(A)`, `crc32(B)` and the length of `B`.
static inline uint32_t CZlib_crc32_combine(uint32_t crcA, uint32_t crcB, int64_t lengthB) {
    return (uint32_t)crc32_combine((uLong)crcA, (uLong)crcB, (z_off_t)lengthB);
}

#endif
