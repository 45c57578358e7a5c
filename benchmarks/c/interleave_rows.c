/*
 * Layout experiment (not part of the package): one Adam update of 29,000 random rows of a
 * 1,000,000 x 64 float32 table, with m and v in separate arrays or interleaved per row
 * ([m | v], 512 contiguous bytes, the package's layout). Uses the package's row loop. From this
 * directory:
 *
 *   gcc -O3 -fno-math-errno -ffp-contract=off -std=gnu11 -I../../sparseopt/_kernels \
 *       interleave_rows.c -o /tmp/interleave_rows -lm && /tmp/interleave_rows
 *
 * Between updates a 1 GB buffer is written line by line, which evicts the rows. memset would
 * not do: glibc's memset of a large buffer uses non-temporal stores that bypass the caches, so
 * the rows would stay cached and the figure would be a warm one. The figures and what they
 * mean are in benchmarks/README.md.
 */
#include "_rowops.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
int main(){
  const long n=1000000, d=64, R=29000; 
  float *p=aligned_alloc(64,n*d*4), *m=aligned_alloc(64,n*d*4), *v=aligned_alloc(64,n*d*4), *mv=aligned_alloc(64,n*2*d*4), *g=aligned_alloc(64,R*d*4);
  for(long i=0;i<n*d;i++){p[i]=1;m[i]=0.1f;v[i]=0.01f;} for(long i=0;i<n*2*d;i++) mv[i]=0.05f; for(long i=0;i<R*d;i++) g[i]=0.5f;
  long *rows=malloc(R*8); srand(1); for(long j=0;j<R;j++) rows[j]=((long)rand()*7919L)%n;
  const long JUNK=1L<<30; char *junk=malloc(JUNK);
#define EVICT(v) for(long q=0;q<JUNK;q+=64) junk[q]=(char)(v)
  double tA=0,tB=0;
  for(int rep=0;rep<15;rep++){
    EVICT(rep);
    double t0=now();
    for(long j=0;j<R;j++){ if(j+16<R){long ra=rows[j+16]; so_prefetch_write_l2(p+ra*d,256); so_prefetch_write_l2(m+ra*d,256); so_prefetch_write_l2(v+ra*d,256);}
      long r=rows[j]; so_adam_row_f(d,p+r*d,m+r*d,v+r*d,NULL,g+j*d,.9f,.1f,.999f,.001f,1e-3f,1.f,1e-8f,1.f);}
    tA+=now()-t0;
    EVICT(rep+1);
    t0=now();
    for(long j=0;j<R;j++){ if(j+16<R){long ra=rows[j+16]; so_prefetch_write_l2(p+ra*d,256); so_prefetch_write_l2(mv+ra*2*d,512);}
      long r=rows[j]; so_adam_row_f(d,p+r*d,mv+r*2*d,mv+r*2*d+d,NULL,g+j*d,.9f,.1f,.999f,.001f,1e-3f,1.f,1e-8f,1.f);}
    tB+=now()-t0;
  }
  printf("separate m,v: %.2f ms   interleaved mv: %.2f ms\n", tA/15*1e3, tB/15*1e3);
}
