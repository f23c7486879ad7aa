export { SpaprPciTokens, spaprPci, spaprPciLiobn as spaprLiobnFor } from '../src/index.js';
