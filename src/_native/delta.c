/* dart's native delta engine; see delta.h for the contract of each function. */
#define _GNU_SOURCE
#include "delta.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#if defined(__linux__)
#include <fcntl.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/userfaultfd.h>
#define DART_HAVE_THREADS 1
#elif defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define DART_HAVE_THREADS 1
#endif

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <immintrin.h>
#define DART_X86_AVX2 1
#endif

/* ---- the chunk hash ----------------------------------------------------------------- */

#define STRIPE 64
#define STRIPES_PER_BLOCK 16
#define P32 0x9E3779B1ULL
#define P64 0x9E3779B185EBCA87ULL

/* splitmix64 of 0x6461727464656c74 ("dartdelt"), 32 outputs. Keys 0..22 are the
 * per-stripe keys (stripe s of a block uses keys s..s+7), 8..15 the finalisation keys,
 * 16..23 the initial lanes, 24..31 the scramble keys. */
static const uint64_t K[32] = {
    0xa567696d040eaed7ULL, 0xc2a42be83f6aa64aULL, 0x03b08ed1639fa3b2ULL, 0xd04d63f24b1b1d29ULL,
    0xb87bc7ef54177f43ULL, 0xd750df8ec5a328a3ULL, 0xac25b174ae2aaf3eULL, 0x36acb8d43a83facaULL,
    0x1b71be8e10553ea9ULL, 0x579d29642b26f5ebULL, 0x444db02c993b771fULL, 0xb0386d41605287c1ULL,
    0x45ab0018ccfbcd18ULL, 0x3d697e1f3173cf9aULL, 0xfd439da1a1a1016aULL, 0xfc3b30192b63b47fULL,
    0x3f8ff7227bc74ad0ULL, 0x277af7bb9fc2131bULL, 0x8dfbfe6251491619ULL, 0xcc9ed857b3d3291aULL,
    0x44a6f491adf28abcULL, 0xffd80664960aae14ULL, 0xd85f6b09ccd8b9b9ULL, 0x7a2c056f95025a14ULL,
    0x12505488c589bc17ULL, 0xe6507eab489d821bULL, 0x2633f5bc67fa4e37ULL, 0xd22b9e2bf84d9b1eULL,
    0xbd557f42a295c1a0ULL, 0xa4ad7566b6550d3dULL, 0x0745822ded2558e7ULL, 0x21a8f5d50bb3d40aULL,
};

static inline uint64_t rd64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint64_t fmix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static inline void stripe_scalar(uint64_t acc[8], const uint8_t *p, const uint64_t *key) {
    for (int l = 0; l < 8; l++) {
        uint64_t d = rd64(p + 8 * l);
        uint64_t dk = d ^ key[l];
        acc[l ^ 1] += d;
        acc[l] += (dk & 0xffffffffULL) * (dk >> 32);
    }
}

static inline void scramble_scalar(uint64_t acc[8]) {
    for (int l = 0; l < 8; l++) {
        uint64_t a = acc[l];
        a ^= a >> 47;
        a ^= K[24 + l];
        acc[l] = a * P32;
    }
}

/* Full stripes [0, nstripes) of p, scrambling after every 16th. */
static void stripes_scalar(uint64_t acc[8], const uint8_t *p, size_t nstripes) {
    for (size_t i = 0; i < nstripes; i++) {
        stripe_scalar(acc, p + i * STRIPE, K + (i % STRIPES_PER_BLOCK));
        if (i % STRIPES_PER_BLOCK == STRIPES_PER_BLOCK - 1) scramble_scalar(acc);
    }
}

#if defined(DART_X86_AVX2) && !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
__attribute__((target("avx2"))) static void stripes_avx2(uint64_t acc[8], const uint8_t *p,
                                                        size_t nstripes) {
    __m256i a0 = _mm256_loadu_si256((const __m256i *)acc);
    __m256i a1 = _mm256_loadu_si256((const __m256i *)(acc + 4));
    const __m256i prime = _mm256_set1_epi32((int)P32);
    for (size_t i = 0; i < nstripes; i++) {
        const uint8_t *s = p + i * STRIPE;
        const uint64_t *key = K + (i % STRIPES_PER_BLOCK);
        __m256i d0 = _mm256_loadu_si256((const __m256i *)s);
        __m256i d1 = _mm256_loadu_si256((const __m256i *)(s + 32));
        __m256i dk0 = _mm256_xor_si256(d0, _mm256_loadu_si256((const __m256i *)key));
        __m256i dk1 = _mm256_xor_si256(d1, _mm256_loadu_si256((const __m256i *)(key + 4)));
        /* lo32(dk) * hi32(dk) into the own lane */
        __m256i m0 = _mm256_mul_epu32(dk0, _mm256_srli_epi64(dk0, 32));
        __m256i m1 = _mm256_mul_epu32(dk1, _mm256_srli_epi64(dk1, 32));
        /* d into the neighbouring lane (l ^ 1): swap the 64-bit halves of each 128 bits */
        __m256i s0 = _mm256_shuffle_epi32(d0, _MM_SHUFFLE(1, 0, 3, 2));
        __m256i s1 = _mm256_shuffle_epi32(d1, _MM_SHUFFLE(1, 0, 3, 2));
        a0 = _mm256_add_epi64(a0, _mm256_add_epi64(m0, s0));
        a1 = _mm256_add_epi64(a1, _mm256_add_epi64(m1, s1));
        if (i % STRIPES_PER_BLOCK == STRIPES_PER_BLOCK - 1) {
            __m256i k0 = _mm256_loadu_si256((const __m256i *)(K + 24));
            __m256i k1 = _mm256_loadu_si256((const __m256i *)(K + 28));
            a0 = _mm256_xor_si256(_mm256_xor_si256(a0, _mm256_srli_epi64(a0, 47)), k0);
            a1 = _mm256_xor_si256(_mm256_xor_si256(a1, _mm256_srli_epi64(a1, 47)), k1);
            /* a * P32 mod 2^64 = lo32(a) * P32 + (hi32(a) * P32 << 32) */
            a0 = _mm256_add_epi64(_mm256_mul_epu32(a0, prime),
                                  _mm256_slli_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a0, 32), prime), 32));
            a1 = _mm256_add_epi64(_mm256_mul_epu32(a1, prime),
                                  _mm256_slli_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a1, 32), prime), 32));
        }
    }
    _mm256_storeu_si256((__m256i *)acc, a0);
    _mm256_storeu_si256((__m256i *)(acc + 4), a1);
}

typedef void (*stripes_fn)(uint64_t *, const uint8_t *, size_t);
static stripes_fn pick_stripes(void) {
    static stripes_fn fn = NULL; /* benign race: every thread computes the same value */
    if (fn == NULL) {
        __builtin_cpu_init();
        fn = __builtin_cpu_supports("avx2") ? stripes_avx2 : stripes_scalar;
    }
    return fn;
}
#else
#define pick_stripes() stripes_scalar
#endif

uint64_t dart_delta_hash(const void *data, size_t len) {
    const uint8_t *p = (const uint8_t *)data;
    uint64_t acc[8];
    for (int l = 0; l < 8; l++) acc[l] = K[16 + l];
    size_t nstripes = len / STRIPE;
    if (nstripes) pick_stripes()(acc, p, nstripes);
    size_t rest = len % STRIPE;
    if (rest) {
        uint8_t last[STRIPE] = {0};
        memcpy(last, p + nstripes * STRIPE, rest);
        stripe_scalar(acc, last, K + (nstripes % STRIPES_PER_BLOCK));
    }
    uint64_t h = (uint64_t)len * P64;
    for (int l = 0; l < 8; l++) {
        h ^= fmix64(acc[l] ^ K[8 + l]);
        h = ((h << 27) | (h >> 37)) * P64;
    }
    return fmix64(h);
}

size_t dart_delta_chunk_count(size_t nbytes, size_t chunk_size) {
    if (chunk_size == 0) return 0;
    return nbytes / chunk_size + (nbytes % chunk_size != 0);
}

/* ---- running over chunks, on one or more threads ---------------------------------- */

typedef struct {
    const uint8_t *buf;
    const uint8_t *shadow;
    size_t nbytes, chunk_size, first, last; /* chunks [first, last) */
    uint64_t *fingerprints;
    uint8_t *changed;
    long long nchanged;
} chunk_job;

static void *hash_job(void *arg) {
    chunk_job *j = (chunk_job *)arg;
    for (size_t i = j->first; i < j->last; i++) {
        size_t off = i * j->chunk_size;
        size_t n = j->nbytes - off < j->chunk_size ? j->nbytes - off : j->chunk_size;
        j->fingerprints[i] = dart_delta_hash(j->buf + off, n);
    }
    return NULL;
}

static void *compare_job(void *arg) {
    chunk_job *j = (chunk_job *)arg;
    long long c = 0;
    for (size_t i = j->first; i < j->last; i++) {
        size_t off = i * j->chunk_size;
        size_t n = j->nbytes - off < j->chunk_size ? j->nbytes - off : j->chunk_size;
        uint8_t d = memcmp(j->buf + off, j->shadow + off, n) != 0;
        j->changed[i] = d;
        c += d;
    }
    j->nchanged = c;
    return NULL;
}

#define MAX_THREADS 64

/* Splits the chunks in contiguous runs, one per thread; the calling thread takes the
 * first run. A thread that cannot start has its run done here instead. */
static long long run_jobs(chunk_job *proto, size_t nchunks, int nthreads, void *(*fn)(void *)) {
    if (nthreads < 1) nthreads = 1;
    if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
    if ((size_t)nthreads > nchunks) nthreads = nchunks ? (int)nchunks : 1;
    chunk_job jobs[MAX_THREADS];
#ifdef DART_HAVE_THREADS
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
#endif
    for (int t = 0; t < nthreads; t++) {
        jobs[t] = *proto;
        jobs[t].first = nchunks * (size_t)t / (size_t)nthreads;
        jobs[t].last = nchunks * (size_t)(t + 1) / (size_t)nthreads;
        jobs[t].nchanged = 0;
    }
#ifdef DART_HAVE_THREADS
    for (int t = 1; t < nthreads; t++)
        started[t] = pthread_create(&tids[t], NULL, fn, &jobs[t]) == 0;
#endif
    fn(&jobs[0]);
    long long total = jobs[0].nchanged;
    for (int t = 1; t < nthreads; t++) {
#ifdef DART_HAVE_THREADS
        if (started[t])
            pthread_join(tids[t], NULL);
        else
#endif
            fn(&jobs[t]);
        total += jobs[t].nchanged;
    }
    return total;
}

int dart_delta_hash_chunks(const void *buf, size_t nbytes, size_t chunk_size,
                           uint64_t *fingerprints, int nthreads) {
    if (chunk_size == 0 || (nbytes && (buf == NULL || fingerprints == NULL)))
        return DART_DELTA_EINVAL;
    chunk_job proto = {0};
    proto.buf = (const uint8_t *)buf;
    proto.nbytes = nbytes;
    proto.chunk_size = chunk_size;
    proto.fingerprints = fingerprints;
    run_jobs(&proto, dart_delta_chunk_count(nbytes, chunk_size), nthreads, hash_job);
    return 0;
}

long long dart_delta_compare_chunks(const void *buf, const void *shadow, size_t nbytes,
                                    size_t chunk_size, uint8_t *changed, int nthreads) {
    if (chunk_size == 0 || (nbytes && (buf == NULL || shadow == NULL || changed == NULL)))
        return DART_DELTA_EINVAL;
    chunk_job proto = {0};
    proto.buf = (const uint8_t *)buf;
    proto.shadow = (const uint8_t *)shadow;
    proto.nbytes = nbytes;
    proto.chunk_size = chunk_size;
    proto.changed = changed;
    return run_jobs(&proto, dart_delta_chunk_count(nbytes, chunk_size), nthreads, compare_job);
}

long long dart_delta_copy_chunks(const void *src, size_t nbytes, size_t chunk_size,
                                 const size_t *idx, size_t n, void *out, size_t out_len,
                                 void *mirror) {
    if (chunk_size == 0 || (n && (src == NULL || idx == NULL))) return DART_DELTA_EINVAL;
    size_t nchunks = dart_delta_chunk_count(nbytes, chunk_size);
    size_t need = 0;
    for (size_t k = 0; k < n; k++) {
        if (idx[k] >= nchunks) return DART_DELTA_EINVAL;
        size_t off = idx[k] * chunk_size;
        need += nbytes - off < chunk_size ? nbytes - off : chunk_size;
    }
    if (out != NULL && need > out_len) return DART_DELTA_ENOSPC;
    const uint8_t *s = (const uint8_t *)src;
    uint8_t *o = (uint8_t *)out;
    uint8_t *m = (uint8_t *)mirror;
    size_t pos = 0;
    for (size_t k = 0; k < n; k++) {
        size_t off = idx[k] * chunk_size;
        size_t len = nbytes - off < chunk_size ? nbytes - off : chunk_size;
        if (o != NULL) memcpy(o + pos, s + off, len);
        /* the second copy reads the chunk from cache when it fits there */
        if (m != NULL) memcpy(m + off, o != NULL ? o + pos : s + off, len);
        pos += len;
    }
    return out != NULL ? (long long)pos : 0;
}

/* ---- kernel dirty-page tracking ----------------------------------------------------- */

#if defined(__linux__)

/* Linux 6.7 uapi, not yet in older distribution headers (Debian 12 ships 6.1). */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef PAGEMAP_SCAN
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
struct page_region {
    uint64_t start;
    uint64_t end;
    uint64_t categories;
};
struct pm_scan_arg {
    uint64_t size;
    uint64_t flags;
    uint64_t start;
    uint64_t end;
    uint64_t walk_end;
    uint64_t vec;
    uint64_t vec_len;
    uint64_t max_pages;
    uint64_t category_inverted;
    uint64_t category_mask;
    uint64_t category_anyof_mask;
    uint64_t return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

#define SCAN_VEC 512

static int fail(dart_delta_dirty *t, const char *what) {
    int e = errno;
    t->failed = what;
    dart_delta_dirty_close(t);
    t->failed = what;
    errno = e;
    return DART_DELTA_ESYS;
}

int dart_delta_dirty_open(dart_delta_dirty *t, const void *addr, size_t len) {
    memset(t, 0, sizeof *t);
    t->uffd = -1;
    t->pagemap_fd = -1;
    if (len == 0 || addr == NULL) return DART_DELTA_EINVAL;
    t->page_size = (size_t)sysconf(_SC_PAGESIZE);
    t->start = (uintptr_t)addr & ~(uintptr_t)(t->page_size - 1);
    t->end = ((uintptr_t)addr + len + t->page_size - 1) & ~(uintptr_t)(t->page_size - 1);

    /* User-mode-only faults are all we need, and are allowed unprivileged. */
    t->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (t->uffd < 0 && errno == EINVAL)
        t->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (t->uffd < 0) return fail(t, "userfaultfd");

    /* WP_ASYNC or nothing: without it a write to a protected page would wait for a
     * handler thread, and a program must never block on dart. */
    struct uffdio_api api = {.api = UFFD_API,
                             .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED};
    if (ioctl(t->uffd, UFFDIO_API, &api) < 0) return fail(t, "UFFDIO_API(WP_ASYNC|WP_UNPOPULATED)");
    if (!(api.features & UFFD_FEATURE_WP_ASYNC)) {
        errno = ENOTSUP;
        return fail(t, "UFFDIO_API(WP_ASYNC)");
    }
    t->features = api.features;

    struct uffdio_register reg = {
        .range = {.start = t->start, .len = t->end - t->start},
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    if (ioctl(t->uffd, UFFDIO_REGISTER, &reg) < 0) return fail(t, "UFFDIO_REGISTER(MODE_WP)");

    t->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (t->pagemap_fd < 0) return fail(t, "open(/proc/self/pagemap)");

    struct uffdio_writeprotect wp = {
        .range = {.start = t->start, .len = t->end - t->start},
        .mode = UFFDIO_WRITEPROTECT_MODE_WP,
    };
    if (ioctl(t->uffd, UFFDIO_WRITEPROTECT, &wp) < 0) return fail(t, "UFFDIO_WRITEPROTECT");
    return 0;
}

/* Appends [s, e) to a range list (2 entries per range), merging it into the last range
 * when it continues it. */
static int push_range(uint64_t **ranges, size_t *n, size_t *cap, uint64_t s, uint64_t e) {
    if (*n && (*ranges)[2 * *n - 1] == s) { /* continues the last one */
        (*ranges)[2 * *n - 1] = e;
        return 0;
    }
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        uint64_t *r = (uint64_t *)realloc(*ranges, 2 * c * sizeof(uint64_t));
        if (r == NULL) return DART_DELTA_ENOMEM;
        *ranges = r;
        *cap = c;
    }
    (*ranges)[2 * *n] = s;
    (*ranges)[2 * *n + 1] = e;
    (*n)++;
    return 0;
}

/* One PAGEMAP_SCAN walk of the tracked range listing the written pages into a range
 * list; with PM_SCAN_WP_MATCHING the walk also protects them again. Fails (EPERM) rather
 * than report nonsense if a page is not under async write protection. */
static long long walk_written(dart_delta_dirty *t, uint64_t flags, uint64_t **ranges, size_t *n,
                              size_t *cap) {
    if (t->uffd < 0) return DART_DELTA_EINVAL;
    struct page_region vec[SCAN_VEC];
    struct pm_scan_arg arg;
    memset(&arg, 0, sizeof arg);
    arg.size = sizeof arg;
    arg.flags = flags | PM_SCAN_CHECK_WPASYNC;
    arg.start = t->start;
    arg.end = t->end;
    arg.vec = (uint64_t)(uintptr_t)vec;
    arg.vec_len = SCAN_VEC;
    arg.category_mask = PAGE_IS_WRITTEN;
    arg.return_mask = PAGE_IS_WRITTEN;
    *n = 0;
    for (;;) {
        int got = ioctl(t->pagemap_fd, PAGEMAP_SCAN, &arg);
        if (got < 0) {
            t->failed = "PAGEMAP_SCAN";
            return DART_DELTA_ESYS;
        }
        for (int k = 0; k < got; k++)
            if (push_range(ranges, n, cap, vec[k].start, vec[k].end) < 0) return DART_DELTA_ENOMEM;
        if (arg.walk_end >= t->end || arg.walk_end <= arg.start) break;
        arg.start = arg.walk_end;
    }
    return (long long)*n;
}

long long dart_delta_dirty_scan(dart_delta_dirty *t) {
    return walk_written(t, PM_SCAN_WP_MATCHING, &t->ranges, &t->nranges, &t->ranges_cap);
}

/* Copies the bytes of every range of t->ranges inside [addr, addr + nbytes) from src to
 * dst, at the same offsets from each; returns the bytes copied. */
static long long copy_ranges(const dart_delta_dirty *t, uintptr_t addr, size_t nbytes,
                             uint8_t *dst, const uint8_t *src) {
    uint64_t a = (uint64_t)addr, b = a + nbytes;
    long long copied = 0;
    for (size_t k = 0; k < t->nranges; k++) {
        uint64_t s = t->ranges[2 * k], e = t->ranges[2 * k + 1];
        if (s < a) s = a;
        if (e > b) e = b;
        if (s >= e) continue;
        memcpy(dst + (s - a), src + (s - a), (size_t)(e - s));
        copied += (long long)(e - s);
    }
    return copied;
}

long long dart_delta_dirty_save(dart_delta_dirty *t, void *addr, size_t nbytes,
                                void *shadow) {
    if (nbytes && (addr == NULL || shadow == NULL)) return DART_DELTA_EINVAL;
    long long rc = dart_delta_dirty_scan(t);
    if (rc < 0) return rc;
    return copy_ranges(t, (uintptr_t)addr, nbytes, (uint8_t *)shadow, (const uint8_t *)addr);
}

long long dart_delta_dirty_restore(dart_delta_dirty *t, void *addr, size_t nbytes,
                                   const void *shadow, int compare) {
    if (nbytes && (addr == NULL || shadow == NULL)) return DART_DELTA_EINVAL;
    /* list without protecting: the copy below then writes pages that take no fault */
    long long rc = walk_written(t, 0, &t->ranges, &t->nranges, &t->ranges_cap);
    if (rc < 0) return rc;
    long long copied = copy_ranges(t, (uintptr_t)addr, nbytes, (uint8_t *)addr,
                                   (const uint8_t *)shadow);
    /* protect what was restored (it equals the shadow now), in one walk */
    rc = walk_written(t, PM_SCAN_WP_MATCHING, &t->walked, &t->nwalked, &t->walked_cap);
    if (rc < 0) return rc;
    /* pages this walk found that the listing did not were first written meanwhile (by
     * another thread): unprotect them, so that the next scan reports them */
    size_t k = 0;
    for (size_t w = 0; w < t->nwalked; w++) {
        uint64_t at = t->walked[2 * w], e = t->walked[2 * w + 1];
        while (at < e) {
            while (k < t->nranges && t->ranges[2 * k + 1] <= at) k++;
            uint64_t next = k < t->nranges ? t->ranges[2 * k] : e;
            if (next <= at) { /* inside a listed range: skip to its end */
                at = t->ranges[2 * k + 1] < e ? t->ranges[2 * k + 1] : e;
                continue;
            }
            uint64_t gap_end = next < e ? next : e;
            struct uffdio_writeprotect wp = {.range = {.start = at, .len = gap_end - at}, .mode = 0};
            if (ioctl(t->uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
                t->failed = "UFFDIO_WRITEPROTECT(unprotect)";
                return DART_DELTA_ESYS;
            }
            at = gap_end;
        }
    }
    /* a page of the list that another thread wrote after its copy was writable until the
     * walk, and the walk took that write for the restore's own: compare the restored
     * bytes with the shadow (hot in cache now) and unprotect the pages that differ */
    uint64_t a = (uint64_t)(uintptr_t)addr, b = a + nbytes;
    const uint8_t *sh = (const uint8_t *)shadow;
    for (size_t r = 0; compare && r < t->nranges; r++) {
        uint64_t s = t->ranges[2 * r] > a ? t->ranges[2 * r] : a;
        uint64_t e = t->ranges[2 * r + 1] < b ? t->ranges[2 * r + 1] : b;
        if (s >= e || memcmp((const void *)(uintptr_t)s, sh + (s - a), (size_t)(e - s)) == 0) continue;
        for (uint64_t p = s; p < e;) {
            uint64_t page = p & ~(uint64_t)(t->page_size - 1), next = page + t->page_size;
            uint64_t n = (next < e ? next : e) - p;
            if (memcmp((const void *)(uintptr_t)p, sh + (p - a), (size_t)n) != 0) {
                struct uffdio_writeprotect wp = {.range = {.start = page, .len = t->page_size}, .mode = 0};
                if (ioctl(t->uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
                    t->failed = "UFFDIO_WRITEPROTECT(unprotect)";
                    return DART_DELTA_ESYS;
                }
            }
            p += n;
        }
    }
    return copied;
}

int dart_delta_dirty_probe(const char **failed) {
    dart_delta_dirty t;
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    *failed = NULL;
    uint8_t *m = (uint8_t *)mmap(NULL, 2 * ps, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        *failed = "mmap";
        return DART_DELTA_ESYS;
    }
    int rc = dart_delta_dirty_open(&t, m, 2 * ps);
    if (rc == 0) {
        ((volatile uint8_t *)m)[ps + 1] = 1;
        long long n = dart_delta_dirty_scan(&t);
        if (n < 0) {
            rc = DART_DELTA_ESYS;
            *failed = t.failed;
        } else if (n != 1 || t.ranges[0] != (uint64_t)(uintptr_t)(m + ps) ||
                   t.ranges[1] != (uint64_t)(uintptr_t)(m + 2 * ps)) {
            rc = DART_DELTA_ESYS;
            errno = EIO;
            *failed = "PAGEMAP_SCAN (a written page was not reported)";
        }
        int e = errno;
        dart_delta_dirty_close(&t);
        errno = e;
    } else {
        *failed = t.failed ? t.failed : "dart_delta_dirty_open";
    }
    int e = errno;
    munmap(m, 2 * ps);
    errno = e;
    return rc;
}

void dart_delta_dirty_close(dart_delta_dirty *t) {
    if (t->uffd >= 0) {
        /* unregistering lifts the protection; the pages stay ordinary memory */
        struct uffdio_range r = {.start = t->start, .len = t->end - t->start};
        ioctl(t->uffd, UFFDIO_UNREGISTER, &r); /* fails harmlessly if already unmapped */
        close(t->uffd);
        t->uffd = -1;
    }
    if (t->pagemap_fd >= 0) {
        close(t->pagemap_fd);
        t->pagemap_fd = -1;
    }
    free(t->ranges);
    t->ranges = NULL;
    t->nranges = t->ranges_cap = 0;
    free(t->walked);
    t->walked = NULL;
    t->nwalked = t->walked_cap = 0;
}

#else /* not Linux */

int dart_delta_dirty_probe(const char **failed) {
    *failed = "userfaultfd (not Linux)";
    errno = ENOSYS;
    return DART_DELTA_ESYS;
}
int dart_delta_dirty_open(dart_delta_dirty *t, const void *addr, size_t len) {
    (void)addr;
    (void)len;
    memset(t, 0, sizeof *t);
    t->uffd = t->pagemap_fd = -1;
    t->failed = "userfaultfd (not Linux)";
    errno = ENOSYS;
    return DART_DELTA_ESYS;
}
long long dart_delta_dirty_scan(dart_delta_dirty *t) {
    (void)t;
    return DART_DELTA_EINVAL;
}
long long dart_delta_dirty_save(dart_delta_dirty *t, void *addr, size_t nbytes,
                                void *shadow) {
    (void)t;
    (void)addr;
    (void)nbytes;
    (void)shadow;
    return DART_DELTA_EINVAL;
}
long long dart_delta_dirty_restore(dart_delta_dirty *t, void *addr, size_t nbytes,
                                   const void *shadow, int compare) {
    (void)compare;
    (void)t;
    (void)addr;
    (void)nbytes;
    (void)shadow;
    return DART_DELTA_EINVAL;
}
void dart_delta_dirty_close(dart_delta_dirty *t) { (void)t; }

#endif

long long dart_delta_dirty_mark_chunks(const dart_delta_dirty *t, const void *addr,
                                       size_t nbytes, size_t chunk_size, uint8_t *changed) {
    if (chunk_size == 0) return DART_DELTA_EINVAL;
    size_t nchunks = dart_delta_chunk_count(nbytes, chunk_size);
    if (nchunks) memset(changed, 0, nchunks);
    uint64_t a = (uint64_t)(uintptr_t)addr, b = a + nbytes;
    long long count = 0;
    for (size_t k = 0; k < t->nranges; k++) {
        uint64_t s = t->ranges[2 * k], e = t->ranges[2 * k + 1];
        if (s < a) s = a;
        if (e > b) e = b;
        if (s >= e) continue;
        for (size_t i = (size_t)(s - a) / chunk_size; i <= (size_t)(e - 1 - a) / chunk_size; i++) {
            count += !changed[i];
            changed[i] = 1;
        }
    }
    return count;
}
