import { DdwError } from '@ddw/machine';

/** A failure QEMU reports while setting a device up; the device's realize fails with it. */
export class VfioError extends DdwError {
  override name = 'VfioError';
  constructor(message: string) {
    super('VFIO', message);
  }
}
