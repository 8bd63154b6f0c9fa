/* A stand-in for libnvidia-ml.so.1 with two GPUs, built by nvml_test.go to
   check the binding's calling convention, struct layouts and strings. */
#include <string.h>

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef void *nvmlDevice_t;

static int inits;
static char devs[2];

int nvmlInit_v2(void) { inits++; return 0; }
int nvmlShutdown(void) { if (inits == 0) return 1; inits--; return 0; }
int nvmlDeviceGetCount_v2(unsigned int *n) { if (!inits) return 1; *n = 2; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t *d) {
	if (!inits) return 1;
	if (i >= 2) return 2;
	*d = &devs[i];
	return 0;
}
static int idx(nvmlDevice_t d) { return (char *)d - devs; }
int nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int len) {
	const char *n = idx(d) == 0 ? "NVIDIA H100 80GB HBM3" : "NVIDIA GeForce RTX 4090";
	if (strlen(n) + 1 > len) return 7;
	strcpy(name, n);
	return 0;
}
int nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int len) {
	const char *u = idx(d) == 0 ? "GPU-11111111-2222-3333-4444-555555555555" : "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
	if (strlen(u) + 1 > len) return 7;
	strcpy(uuid, u);
	return 0;
}
int nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
	m->total = idx(d) == 0 ? 85899345920ULL : 25757220864ULL;
	m->free = 1;
	m->used = m->total - 1;
	return 0;
}
int nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
	if (idx(d) == 1) return 3; /* not supported */
	u->gpu = 97;
	u->memory = 41;
	return 0;
}
