/** The version `ddw --version` prints; a test keeps it equal to package.json's. */
export const DDW_VERSION = '0.1.0';
