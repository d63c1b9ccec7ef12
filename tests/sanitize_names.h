/*
 * tests/sanitize_names.h — in a sanitizer build (NSP_SANITIZE), the standard allocation names a
 * unit test calls mean numaspan's, as they do in a plain build. CMake force-includes it (-include)
 * into the tests that link numaspan_static, in sanitizer builds only; it is never included by hand.
 *
 * Why: those tests link the static library, whose api.o defines malloc, free and the rest. Left
 * global, the executable's definitions win over the sanitizer runtime's for the whole process, and
 * ld.so's first malloc (made while the runtime installs its interceptors, before its shadow
 * memory exists) enters numaspan's instrumented code and faults on the shadow check. So in those
 * builds the top CMakeLists.txt makes the standard names local to api.o (objcopy): the process's
 * malloc is the sanitizer's, and numaspan runs beside it, as it does in tests/sanitize.sh's
 * drivers that link the shared library. The test's own calls are sent here to numaspan by its
 * exported names; memalign, valloc, pvalloc and reallocarray have no public nsp_* name, so the
 * objcopy gives api.o's definitions the nsp__san_* names below. Check, libc and hwloc keep the
 * sanitizer's malloc, and a test's deliberate double free reaches numaspan, not the sanitizer.
 *
 * Invariant: included before anything else (so before <stdlib.h> declares the names), and it
 * declares every name it maps to, because glibc's headers then declare the mapped names again.
 */
#ifndef NSP_TESTS_SANITIZE_NAMES_H
#define NSP_TESTS_SANITIZE_NAMES_H

void *nsp_malloc(__SIZE_TYPE__ size);
void nsp_free(void *ptr);
void *nsp_calloc(__SIZE_TYPE__ n, __SIZE_TYPE__ size);
void *nsp_realloc(void *ptr, __SIZE_TYPE__ size);
void *nsp_aligned_alloc(__SIZE_TYPE__ alignment, __SIZE_TYPE__ size);
int nsp_posix_memalign(void **out, __SIZE_TYPE__ alignment, __SIZE_TYPE__ size);
__SIZE_TYPE__ nsp_malloc_usable_size(void *ptr);
void *nsp__san_memalign(__SIZE_TYPE__ align, __SIZE_TYPE__ n);
void *nsp__san_valloc(__SIZE_TYPE__ n);
void *nsp__san_pvalloc(__SIZE_TYPE__ n);
void *nsp__san_reallocarray(void *p, __SIZE_TYPE__ n, __SIZE_TYPE__ size);
/* <stdlib.h> names reallocarray as its own deallocator (an attribute, not a call) */
void *reallocarray(void *p, __SIZE_TYPE__ n, __SIZE_TYPE__ size);

#define malloc(n) nsp_malloc(n)
#define free(p) nsp_free(p)
#define calloc(n, size) nsp_calloc(n, size)
#define realloc(p, n) nsp_realloc(p, n)
#define aligned_alloc(align, n) nsp_aligned_alloc(align, n)
#define posix_memalign(out, align, n) nsp_posix_memalign(out, align, n)
#define malloc_usable_size(p) nsp_malloc_usable_size(p)
#define memalign(align, n) nsp__san_memalign(align, n)
#define valloc(n) nsp__san_valloc(n)
#define pvalloc(n) nsp__san_pvalloc(n)
#define reallocarray(p, n, size) nsp__san_reallocarray(p, n, size)

#endif
