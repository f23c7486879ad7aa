/**
 * The VFIO trace events ddw reproduces, as QEMU 7.2 declares them in hw/vfio/trace-events
 * (reference section 8.3). The prereg ones are emitted by @ddw/vfio-prereg but defined here, with
 * the rest, so one machine defines each once.
 */
export const VFIO_TRACE_EVENTS = `
vfio_iommu_map_notify(const char *op, uint64_t iova_start, uint64_t iova_end) "iommu %s @ 0x%"PRIx64" - 0x%"PRIx64
vfio_listener_region_add_skip(uint64_t start, uint64_t end) "SKIPPING region_add 0x%"PRIx64" - 0x%"PRIx64
vfio_listener_region_add_iommu(uint64_t start, uint64_t end) "region_add [iommu] 0x%"PRIx64" - 0x%"PRIx64
vfio_listener_region_del_skip(uint64_t start, uint64_t end) "SKIPPING region_del 0x%"PRIx64" - 0x%"PRIx64
vfio_listener_region_del(uint64_t start, uint64_t end) "region_del 0x%"PRIx64" - 0x%"PRIx64
vfio_spapr_create_window(int ps, unsigned int levels, uint64_t ws, uint64_t off) "pageshift=0x%x levels=%u winsize=0x%"PRIx64" offset=0x%"PRIx64
vfio_spapr_remove_window(uint64_t off) "offset=0x%"PRIx64
vfio_prereg_listener_region_add_skip(uint64_t start, uint64_t end) "0x%"PRIx64" - 0x%"PRIx64
vfio_prereg_listener_region_del_skip(uint64_t start, uint64_t end) "0x%"PRIx64" - 0x%"PRIx64
vfio_prereg_register(uint64_t va, uint64_t size, int ret) "va=0x%"PRIx64" size=0x%"PRIx64" ret=%d"
vfio_prereg_unregister(uint64_t va, uint64_t size, int ret) "va=0x%"PRIx64" size=0x%"PRIx64" ret=%d"
`;

/** strerror() of the errno values the host IOMMU returns, for QEMU's messages. */
const STRERROR: Readonly<Record<number, string>> = {
  0: 'Success',
  1: 'Operation not permitted',
  2: 'No such file or directory',
  6: 'No such device or address',
  12: 'Cannot allocate memory',
  14: 'Bad address',
  16: 'Device or resource busy',
  19: 'No such device',
  22: 'Invalid argument',
  25: 'Inappropriate ioctl for device',
  28: 'No space left on device',
};

export function strerror(errno: number): string {
  return STRERROR[Math.abs(errno)] ?? `Unknown error ${Math.abs(errno)}`;
}
