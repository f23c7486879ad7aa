export { buildDemoMachine, demoBus } from './demo.js';
export { createProgram } from './program.js';
