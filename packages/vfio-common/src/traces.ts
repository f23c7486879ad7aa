/** The QEMU versions whose VFIO trace events (names, arguments, formats, firing points) ddw models. */
export type VfioQemuVersion = '7.2' | '10.0';
export const VFIO_QEMU_VERSIONS: readonly VfioQemuVersion[] = ['7.2', '10.0'];

/**
 * The VFIO trace events ddw emits, as QEMU 7.2 declares them in hw/vfio/trace-events (reference
 * section 8.3; common.c and spapr.c). vfio_spapr_group_attach fires only under KVM with
 * KVM_CAP_SPAPR_TCE_VFIO. The prereg ones are emitted by @ddw/vfio-prereg but defined
 * here, with the rest, so one machine defines each once.
 */
export const VFIO_TRACE_EVENTS_7_2 = `
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
vfio_spapr_group_attach(int groupfd, int tablefd) "Attached groupfd %d to liobn fd %d"
`;

/**
 * The same events as QEMU 10.0 declares them (hw/vfio/trace-events; the listener events fire
 * from the listener, spapr.c's from the sPAPR container): one skip event for add and delete, named
 * by its first argument ("region_add" / "region_del"); the IOMMU region's name in region_add
 * [iommu]; and a region_del [iommu] line, before the notifier goes.
 */
export const VFIO_TRACE_EVENTS_10_0 = `
vfio_iommu_map_notify(const char *op, uint64_t iova_start, uint64_t iova_end) "iommu %s @ 0x%"PRIx64" - 0x%"PRIx64
vfio_listener_region_skip(const char *name, uint64_t start, uint64_t end) "SKIPPING %s 0x%"PRIx64" - 0x%"PRIx64
vfio_spapr_group_attach(int groupfd, int tablefd) "Attached groupfd %d to liobn fd %d"
vfio_listener_region_add_iommu(const char* name, uint64_t start, uint64_t end) "region_add [iommu] %s 0x%"PRIx64" - 0x%"PRIx64
vfio_listener_region_del_iommu(const char *name) "region_del [iommu] %s"
vfio_listener_region_del(uint64_t start, uint64_t end) "region_del 0x%"PRIx64" - 0x%"PRIx64
vfio_spapr_create_window(int ps, unsigned int levels, uint64_t ws, uint64_t off) "pageshift=0x%x levels=%u winsize=0x%"PRIx64" offset=0x%"PRIx64
vfio_spapr_remove_window(uint64_t off) "offset=0x%"PRIx64
vfio_prereg_listener_region_add_skip(uint64_t start, uint64_t end) "0x%"PRIx64" - 0x%"PRIx64
vfio_prereg_listener_region_del_skip(uint64_t start, uint64_t end) "0x%"PRIx64" - 0x%"PRIx64
vfio_prereg_register(uint64_t va, uint64_t size, int ret) "va=0x%"PRIx64" size=0x%"PRIx64" ret=%d"
vfio_prereg_unregister(uint64_t va, uint64_t size, int ret) "va=0x%"PRIx64" size=0x%"PRIx64" ret=%d"
`;

/** QEMU 7.2's declarations (the default). */
export const VFIO_TRACE_EVENTS = VFIO_TRACE_EVENTS_7_2;

/** The trace-events text of `version`. */
export function vfioTraceEvents(version: VfioQemuVersion = '7.2'): string {
  return version === '10.0' ? VFIO_TRACE_EVENTS_10_0 : VFIO_TRACE_EVENTS_7_2;
}

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
