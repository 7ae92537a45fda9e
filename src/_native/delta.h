/* dart's native delta engine: which chunks of a buffer changed since the last commit.
 *
 * Plain C, no Python: the Cython binding (_delta.pyx) acquires the buffers, releases the
 * GIL and calls these functions. Policy (which strategy, which chunk size, what to copy
 * where) stays in Python (dart.delta); every routine here has a pure-Python twin in
 * dart/delta/reference.py that the tests compare against.
 *
 * Three strategies live here:
 *   - hashing: a 64-bit fingerprint per chunk (dart_delta_hash_chunks); one read pass,
 *     8 bytes of state per chunk;
 *   - comparison against a shadow copy (dart_delta_compare_chunks); exact, but the
 *     shadow doubles the memory and the scan reads twice the bytes;
 *   - kernel dirty-page tracking (dart_delta_dirty_*): userfaultfd write protection in
 *     asynchronous mode plus the PAGEMAP_SCAN ioctl (Linux >= 6.7); no pass over the
 *     data at all, but each first write to a protected page costs a minor fault.
 *
 * Error codes: every function returning int returns 0 (or a count >= 0) on success and
 * one of the negative DART_DELTA_E* codes below on failure. Nothing is allocated or
 * changed when a function fails, unless its comment says otherwise.
 */
#ifndef DART_DELTA_H
#define DART_DELTA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DART_DELTA_EINVAL (-1) /* a bad argument: chunk_size 0, NULL data with len > 0 */
#define DART_DELTA_ENOSPC (-2) /* the output buffer is smaller than the bytes to copy */
#define DART_DELTA_ENOMEM (-3) /* malloc failed */
#define DART_DELTA_ESYS (-4)   /* a system call failed: errno is set, see the function */

/* dart_delta_hash: 64-bit fingerprint of len bytes (any alignment, len may be 0).
 *
 * Not cryptographic: built to detect accidental change at memory speed. Eight 64-bit
 * lanes; each 64-byte stripe adds, per lane, lo32(d ^ k) * hi32(d ^ k) to its own lane
 * and d itself to the neighbouring lane (so any change to a single 8-byte word always
 * changes the lane state), every 16 stripes a bijective scramble, and a full avalanche
 * at the end. Same value on every platform and code path (AVX2 or scalar); the exact
 * definition is dart.delta.reference.chunk_hash. Never fails. */
uint64_t dart_delta_hash(const void *data, size_t len);

/* dart_delta_chunk_count: ceil(nbytes / chunk_size); 0 for an empty buffer or a
 * chunk_size of 0. The last chunk may be shorter than chunk_size. */
size_t dart_delta_chunk_count(size_t nbytes, size_t chunk_size);

/* dart_delta_hash_chunks: fingerprints[i] = dart_delta_hash(chunk i) for every chunk
 * of buf (dart_delta_chunk_count(nbytes, chunk_size) entries), using up to nthreads
 * threads (<= 1: the calling thread only).
 * Errors: DART_DELTA_EINVAL (chunk_size 0, NULL pointers with nbytes > 0). If a thread
 * cannot be started the work is done on the calling thread (no error). */
int dart_delta_hash_chunks(const void *buf, size_t nbytes, size_t chunk_size,
                           uint64_t *fingerprints, int nthreads);

/* dart_delta_compare_chunks: changed[i] = 1 where chunk i of buf differs from the same
 * bytes of shadow, else 0. Returns the number of changed chunks (>= 0).
 * Errors: DART_DELTA_EINVAL (chunk_size 0, NULL pointers with nbytes > 0). */
long long dart_delta_compare_chunks(const void *buf, const void *shadow, size_t nbytes,
                                    size_t chunk_size, uint8_t *changed, int nthreads);

/* dart_delta_copy_chunks: for each index in idx[0..n), copies chunk idx[k] of src
 * (nbytes long) into out, packed one after another in the order given (if out is not
 * NULL; out_len is its size), and into the same offset of mirror (if mirror is not
 * NULL: the shadow copy of the compare strategy). Returns the bytes packed into out.
 * Errors: DART_DELTA_EINVAL (an index past the last chunk, chunk_size 0),
 * DART_DELTA_ENOSPC (out_len < the bytes to pack; checked before anything is copied). */
long long dart_delta_copy_chunks(const void *src, size_t nbytes, size_t chunk_size,
                                 const size_t *idx, size_t n, void *out, size_t out_len,
                                 void *mirror);

/* ---- kernel dirty-page tracking ------------------------------------------------- */

/* One tracked address range: userfaultfd registered in write-protect mode with
 * UFFD_FEATURE_WP_ASYNC (the kernel resolves write faults itself by lifting the
 * protection: no handler thread, no way to block the program) and, where the kernel
 * has it, UFFD_FEATURE_WP_UNPOPULATED (pages never touched are protected too).
 * PAGEMAP_SCAN with PM_SCAN_WP_MATCHING lists the pages written since the last scan and
 * protects them again in the same walk. */
typedef struct dart_delta_dirty {
    int uffd;             /* -1 when closed */
    int pagemap_fd;       /* /proc/self/pagemap */
    uintptr_t start;      /* page-aligned range actually registered */
    uintptr_t end;
    size_t page_size;
    uint64_t features;    /* UFFD features granted */
    /* written ranges found by the last dart_delta_dirty_scan, page aligned, absolute */
    uint64_t *ranges;     /* 2 * nranges entries: start, end */
    size_t nranges;
    size_t ranges_cap;
    /* scratch of dart_delta_dirty_restore's re-protect walk, same layout */
    uint64_t *walked;
    size_t nwalked;
    size_t walked_cap;
    const char *failed;   /* after DART_DELTA_ESYS: the call that failed (static text) */
} dart_delta_dirty;

/* dart_delta_dirty_probe: can this process track dirty pages? Creates a userfaultfd,
 * asks for WP_ASYNC, registers one scratch page, writes it and scans it.
 * Returns 0 if all of that works; DART_DELTA_ESYS otherwise with errno set and *failed
 * naming the step the kernel refused (e.g. "userfaultfd", "UFFDIO_API(WP_ASYNC)",
 * "PAGEMAP_SCAN"). Leaves nothing behind. */
int dart_delta_dirty_probe(const char **failed);

/* dart_delta_dirty_open: start tracking the pages holding [addr, addr + len) (rounded
 * out to whole pages, so bytes sharing those pages are tracked too: harmless, a write
 * next to the buffer marks its page as written). Every page is protected on return.
 * Errors: DART_DELTA_EINVAL (len 0), DART_DELTA_ESYS (errno set, t->failed says which
 * call: EINVAL from UFFDIO_REGISTER for memory that is not anonymous or shmem, EBUSY
 * when another userfaultfd already tracks those pages). On error t is closed. */
int dart_delta_dirty_open(dart_delta_dirty *t, const void *addr, size_t len);

/* dart_delta_dirty_scan: fill t->ranges with the page ranges written since open or
 * the previous scan, and protect them again. Returns the number of ranges.
 * Errors: DART_DELTA_ENOMEM, DART_DELTA_ESYS (errno; EPERM if part of the range lost
 * its write protection registration, e.g. it was unmapped and mapped again). */
long long dart_delta_dirty_scan(dart_delta_dirty *t);

/* dart_delta_dirty_save: copy the pages written since the last scan from the tracked
 * buffer at [addr, addr + nbytes) into the same offsets of shadow (nbytes long), after
 * protecting them again in the scan (dart_delta_dirty_scan). A write racing with the copy
 * faults and is reported by the next scan. Returns the bytes copied; t->ranges holds the
 * written ranges. Errors: as dart_delta_dirty_scan; DART_DELTA_EINVAL (NULL shadow with
 * nbytes > 0). */
long long dart_delta_dirty_save(dart_delta_dirty *t, void *addr, size_t nbytes,
                                void *shadow);

/* dart_delta_dirty_restore: the rollback. Lists the pages written since the last scan
 * WITHOUT protecting them, copies them back from shadow into the buffer (no fault: they
 * are writable), then protects them again in one walk. Returns the bytes copied;
 * t->ranges holds the restored ranges.
 *
 * Races (another thread writing the buffer meanwhile): a page first written between the
 * listing and the re-protect walk shows up in that walk and is unprotected again, so the
 * next scan reports it. A write to a page of the list that lands after the page's copy
 * and before the walk protects it looks like the restore's own write to the kernel: after
 * the walk the restored bytes are compared with the shadow, and pages that differ are
 * unprotected again (only with compare != 0: the compare reads the restored bytes twice
 * more, about doubling the cost; a caller that knows no other thread runs passes 0), so
 * the next scan reports them too. (Which value such a write leaves is up to timing: it
 * races with the restore of its own bytes.)
 * Errors: as dart_delta_dirty_scan; DART_DELTA_EINVAL (NULL shadow with nbytes > 0). On an
 * error after the copy began, the buffer holds some restored pages and the tracker must be
 * closed (the failing call is named in t->failed). */
long long dart_delta_dirty_restore(dart_delta_dirty *t, void *addr, size_t nbytes,
                                   const void *shadow, int compare);

/* dart_delta_dirty_mark_chunks: changed[i] = 1 for every chunk of the buffer at
 * [addr, addr + nbytes) that overlaps a range of the last scan, else 0. Returns the
 * number of chunks marked. Errors: DART_DELTA_EINVAL (chunk_size 0). */
long long dart_delta_dirty_mark_chunks(const dart_delta_dirty *t, const void *addr,
                                       size_t nbytes, size_t chunk_size, uint8_t *changed);

/* dart_delta_dirty_close: unregister the range and close the descriptors; pages keep
 * working as ordinary memory. Safe to call twice. */
void dart_delta_dirty_close(dart_delta_dirty *t);

#ifdef __cplusplus
}
#endif
#endif /* DART_DELTA_H */
