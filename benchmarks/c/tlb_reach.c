/*
 * Address-translation cost of random rows in a large table (not part of the package).
 * Touches the same 4,096 random cache lines again and again (they stay in cache), spread over
 * a region of SPAN MB, with or without transparent huge pages; prints the best time per access.
 * If the lines are cached, the difference between a small and a large region is the cost of
 * TLB misses (page walks; two-dimensional ones in a virtual machine). A 10M x 16 float32 table
 * with Adam's state spans about 2 GB, and each updated row touches three or four such random
 * addresses. From this directory:
 *
 *   gcc -O2 tlb_reach.c -o /tmp/tlb_reach && for s in 8 64 512 2048; do /tmp/tlb_reach $s 1; done
 *
 * The figures and what they mean are in benchmarks/README.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s SPAN_MB HUGE(0|1)\n", argv[0]);
        return 2;
    }
    long span = atol(argv[1]) << 20, lines = 4096, j, i;
    int huge = atoi(argv[2]), rep;
    char *a = aligned_alloc(1 << 21, span);
    if (a == NULL) return 1;
    if (huge) madvise(a, span, MADV_HUGEPAGE);
    for (i = 0; i < span; i += 4096) a[i] = 1;
    long *off = malloc(lines * sizeof(long));
    srand(2);
    for (j = 0; j < lines; j++) off[j] = ((((long)rand() << 20) ^ rand()) % (span / 64)) * 64;
    volatile long sink = 0;
    double best = 1e9;
    for (rep = 0; rep < 200; rep++) {
        double t0 = now();
        long acc = 0;
        for (j = 0; j < lines; j++) {
            acc += a[off[j]];
            a[off[j]]++;
        }
        sink += acc;
        double t = now() - t0;
        if (t < best) best = t;
    }
    printf("span %ld MB, huge pages %d: %.1f ns per access (best of 200, %ld cached lines)\n",
           span >> 20, huge, best / lines * 1e9, lines);
    return 0;
}
