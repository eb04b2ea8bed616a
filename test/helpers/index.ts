export * from './wait.js';
export * from './ports.js';
export * from './redis-server.js';
export * from './recording-server.js';
export * from './processes.js';
export * from './raw-http.js';
export * from './stack.js';
export * from './expect.js';
