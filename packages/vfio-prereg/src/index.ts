export { type PreregListenerFactory, VfioPreregTokens, vfioPrereg } from './plugin.js';
export { type PreregTraces, preregListener } from './prereg.js';
